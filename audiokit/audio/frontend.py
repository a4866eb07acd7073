"""One configurable log-mel frontend: an ``nn.Module`` that runs on the model's device, configured by ``FrontendCfg``.

Each family's upstream settings are expressed as a ``FrontendCfg`` bound to its weights (see the model files); this
module implements the union of the operations they need, in the order and precision the originals use.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._pretrained import FrontendCfg


def mel_filterbank(cfg: FrontendCfg) -> torch.Tensor:
    """Mel weights of shape ``(n_freqs, n_mels)`` in float32 for the cfg's scale and normalisation."""
    f_max = cfg.f_max if cfg.f_max is not None else cfg.sample_rate / 2
    if cfg.mel_scale == "kaldi":
        from torchaudio.compliance import kaldi

        if cfg.mel_norm is not None:
            raise ValueError("Kaldi mel banks are unnormalised; set mel_norm=None")
        # Kaldi triangles over the n_fft // 2 bins below Nyquist; the Nyquist bin gets weight zero.
        banks, _ = kaldi.get_mel_banks(
            cfg.n_mels, cfg.n_fft, float(cfg.sample_rate), cfg.f_min, f_max, 100.0, -500.0, 1.0
        )
        banks = F.pad(banks, (0, 1))
        return banks.T.contiguous().float()
    import torchaudio.functional as AF

    return AF.melscale_fbanks(
        cfg.n_freqs,
        float(cfg.f_min),
        float(f_max),
        cfg.n_mels,
        cfg.sample_rate,
        norm=cfg.mel_norm,
        mel_scale=cfg.mel_scale,
    ).float()


def analysis_window(cfg: FrontendCfg, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The window of length ``win_length`` zero-padded centrally to ``n_fft`` (as torch.stft and librosa do)."""
    win_length = cfg.win_length or cfg.n_fft
    window = torch.hann_window(win_length, periodic=cfg.window == "hann", dtype=torch.float64)
    left = (cfg.n_fft - win_length) // 2
    return F.pad(window, (left, cfg.n_fft - win_length - left)).to(dtype)


def dft_matrices(cfg: FrontendCfg) -> tuple[torch.Tensor, torch.Tensor]:
    """Windowed real and imaginary DFT kernels ``(n_freqs, 1, n_fft)``, built in float64 and rounded once to float32.

    This is how the PANNs reference computes its STFT (a frozen Conv1d); doing the same keeps us within float32
    round-off of the checkpoint's own stored matrices.
    """
    n = np.arange(cfg.n_fft)
    k = np.arange(cfg.n_freqs)[:, None]
    basis = np.exp(-2j * np.pi * k * n / cfg.n_fft) * analysis_window(cfg, torch.float64).numpy()
    real = torch.from_numpy(basis.real.astype(np.float32))[:, None, :]
    imag = torch.from_numpy(basis.imag.astype(np.float32))[:, None, :]
    return real, imag


def _check_kaldi_cfg(cfg: FrontendCfg) -> None:
    """The Kaldi pipeline has fixed framing; refuse settings it cannot honour rather than ignore them."""
    win_length = cfg.win_length or cfg.n_fft
    problems = []
    if cfg.center:
        problems.append("center must be False (Kaldi frames are not padded)")
    if cfg.window != "hann_symmetric":
        problems.append("window must be 'hann_symmetric' (Kaldi 'hanning')")
    if cfg.mel_scale != "kaldi" or cfg.mel_norm is not None:
        problems.append("mel_scale must be 'kaldi' with mel_norm None")
    if cfg.log != "ln" or cfg.stft != "fft":
        problems.append("log must be 'ln' and stft 'fft'")
    if cfg.n_fft != 1 << (win_length - 1).bit_length():
        problems.append(f"n_fft must be the power of two at or above win_length {win_length}")
    if cfg.max_frames is not None and cfg.max_frames < 1:
        problems.append("max_frames must be positive")
    if problems:
        raise ValueError("invalid kaldi_fbank frontend: " + "; ".join(problems))


def htk_mel_domain_filterbank(cfg: FrontendCfg) -> torch.Tensor:
    """VGGish's mel weights ``(n_freqs, n_mels)`` in float64.

    The ``n_mels + 2`` band edges are equally spaced on the HTK scale ``1127 ln(1 + f / 700)`` between ``f_min`` and
    ``f_max``; each band is a triangle evaluated in the mel domain (not in Hz, as torchaudio's HTK banks are) at the
    bins' frequencies ``linspace(0, sample_rate / 2, n_freqs)``, without area normalisation, and the DC bin gets
    weight zero in every band.
    """
    f_max = cfg.f_max if cfg.f_max is not None else cfg.sample_rate / 2
    bins_mel = 1127.0 * np.log1p(np.linspace(0.0, cfg.sample_rate / 2, cfg.n_freqs) / 700.0)
    edges = 1127.0 * np.log1p(np.array([cfg.f_min, f_max], dtype=np.float64) / 700.0)
    points = np.linspace(edges[0], edges[1], cfg.n_mels + 2)
    low, centre, high = points[:-2], points[1:-1], points[2:]
    rising = (bins_mel[:, None] - low) / (centre - low)
    falling = (high - bins_mel[:, None]) / (high - centre)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights[0, :] = 0.0
    return torch.from_numpy(weights)


def _check_vggish_cfg(cfg: FrontendCfg) -> None:
    """VGGish's pipeline is fixed apart from its sizes; refuse settings it does not honour rather than ignore them."""
    problems = []
    if cfg.center:
        problems.append("center must be False (VGGish frames are not padded)")
    if cfg.window != "hann":
        problems.append("window must be 'hann' (periodic)")
    if cfg.mel_scale != "htk" or cfg.mel_norm is not None:
        problems.append("mel_scale must be 'htk' with mel_norm None")
    if cfg.log != "ln" or cfg.stft != "fft":
        problems.append("log must be 'ln' and stft 'fft'")
    if cfg.preemphasis or cfg.stored_in_checkpoint or cfg.max_frames is not None:
        problems.append("preemphasis, stored_in_checkpoint and max_frames are not part of it")
    if cfg.mean != 0.0 or cfg.std != 1.0:
        problems.append("mean must be 0 and std 1 (no normalisation)")
    if problems:
        raise ValueError("invalid vggish frontend: " + "; ".join(problems))


def kaldi_fbank(waveform: torch.Tensor, cfg: FrontendCfg) -> torch.Tensor:
    """``(B, T)`` float32 waveform -> normalised Kaldi log filterbanks ``(B, n_mels, frames)``.

    ``torchaudio.compliance.kaldi.fbank`` handles one signal at a time, so the batch is processed clip by clip
    (every clip of a batch has the same length, hence the same frame count). Each frame: DC removal, pre-emphasis,
    symmetric Hann window, zero-padded FFT, power, Kaldi mel triangles, ``log(max(x, float32 eps))``. The result is
    padded with zeros (log domain) or cut to ``max_frames`` and then normalised as ``(x - mean) / std``.
    """
    from torchaudio.compliance import kaldi

    win_length = cfg.win_length or cfg.n_fft
    to_ms = 1000.0 / cfg.sample_rate
    feats = []
    for clip in waveform:
        fb = kaldi.fbank(
            clip[None],
            num_mel_bins=cfg.n_mels,
            sample_frequency=float(cfg.sample_rate),
            frame_length=win_length * to_ms,
            frame_shift=cfg.hop_length * to_ms,
            window_type="hanning",
            preemphasis_coefficient=cfg.preemphasis,
            low_freq=cfg.f_min,
            high_freq=cfg.f_max if cfg.f_max is not None else 0.0,
            dither=0.0,
            htk_compat=True,
            use_energy=False,
            remove_dc_offset=True,
            round_to_power_of_two=True,
            snip_edges=True,
        )  # (frames, n_mels)
        if cfg.max_frames is not None:
            fb = fb[: cfg.max_frames]
            fb = F.pad(fb, (0, 0, 0, cfg.max_frames - fb.shape[0]))
        feats.append(fb.T)
    out = torch.stack(feats)
    if cfg.mean != 0.0 or cfg.std != 1.0:
        out = (out - cfg.mean) / cfg.std
    return out


def floor_below_peak(logmel_db: torch.Tensor, top_db: float) -> torch.Tensor:
    """``(B, n_mels, frames)`` decibels floored at each clip's own maximum minus ``top_db``.

    This is torchaudio's ``AmplitudeToDB(top_db=...)`` applied to one clip at a time. Applied to a 3-D batch, torchaudio
    packs the batch as channels of a single spectrogram (``amplitude_to_DB`` reshapes to ``(-1, shape[-3], F, T)``
    and takes the maximum over the last three dimensions), so there one floor serves the whole batch and a clip's
    features depend on the loudest clip it is batched with. Per clip, the result never depends on the batch and
    equals torchaudio's at batch size 1.
    """
    peak = logmel_db.amax(dim=(-2, -1), keepdim=True)
    return torch.maximum(logmel_db, peak - top_db)


class LogMelFrontend(nn.Module):
    """Waveform ``(B, T)`` -> normalised log-mel ``(B, 1, n_mels, frames)``.

    For ``kind="waveform"`` it returns the waveform unchanged. Computes in float32 (outside autocast), as the
    originals do, since the log of a half-precision power spectrum loses the quiet bands; ``kind="vggish"`` computes
    in float64, as its numpy original does, and returns float32.
    """

    def __init__(self, cfg: FrontendCfg):
        super().__init__()
        self.cfg = cfg
        if cfg.kind == "waveform":
            return
        if cfg.kind == "kaldi_fbank":
            _check_kaldi_cfg(cfg)
            return
        if cfg.kind == "vggish":
            _check_vggish_cfg(cfg)
            with torch.device("cpu"):
                window = torch.hann_window(cfg.win_length or cfg.n_fft, periodic=True, dtype=torch.float64)
                self.register_buffer("window", window, persistent=False)
                self.register_buffer("mel_fb", htk_mel_domain_filterbank(cfg), persistent=False)
            return
        if cfg.kind != "logmel":
            raise ValueError(
                f"unknown frontend kind {cfg.kind!r}; allowed: 'logmel', 'kaldi_fbank', 'vggish', 'waveform'"
            )
        if cfg.log not in ("db", "ln"):
            raise ValueError(f"unknown log {cfg.log!r}; allowed: 'db', 'ln'")
        if cfg.stft not in ("fft", "dft_conv"):
            raise ValueError(f"unknown stft {cfg.stft!r}; allowed: 'fft', 'dft_conv'")
        if (cfg.win_length or cfg.n_fft) > cfg.n_fft:
            raise ValueError(f"win_length {cfg.win_length} exceeds n_fft {cfg.n_fft}")
        persistent = cfg.stored_in_checkpoint
        # On the host whatever device the model is being built on: the matrices come from numpy and torchaudio, which
        # need values (a model sized on the meta device, as local-dir loading does first, still has a real frontend;
        # FrontendCfg's bounds keep it small).
        with torch.device("cpu"):
            if cfg.stft == "dft_conv":
                real, imag = dft_matrices(cfg)
                self.register_buffer("dft_real", real, persistent=persistent)
                self.register_buffer("dft_imag", imag, persistent=persistent)
            else:
                win_length = cfg.win_length or cfg.n_fft
                window = torch.hann_window(win_length, periodic=cfg.window == "hann")
                self.register_buffer("window", window, persistent=False)
            self.register_buffer("mel_fb", mel_filterbank(cfg), persistent=persistent)

    @property
    def sample_rate(self) -> int:
        return self.cfg.sample_rate

    def power_spectrogram(self, waveform: torch.Tensor) -> torch.Tensor:
        """``(B, T)`` -> power spectrogram ``(B, n_freqs, frames)``."""
        cfg = self.cfg
        x = waveform
        if cfg.preemphasis:
            x = x[:, 1:] - cfg.preemphasis * x[:, :-1]
        if cfg.stft == "dft_conv":
            x = x[:, None, :]
            if cfg.center:
                x = F.pad(x, (cfg.n_fft // 2, cfg.n_fft // 2), mode=cfg.pad_mode)
            real = F.conv1d(x, self.dft_real, stride=cfg.hop_length)
            imag = F.conv1d(x, self.dft_imag, stride=cfg.hop_length)
            return real**2 + imag**2
        spec = torch.stft(
            x,
            n_fft=cfg.n_fft,
            hop_length=cfg.hop_length,
            win_length=cfg.win_length or cfg.n_fft,
            window=self.window,
            center=cfg.center,
            pad_mode=cfg.pad_mode,
            normalized=False,
            return_complex=True,
        )
        parts = torch.view_as_real(spec)
        return parts[..., 0] ** 2 + parts[..., 1] ** 2

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        if cfg.kind == "waveform":
            return waveform
        if waveform.dim() != 2:
            raise ValueError(f"expected a waveform batch of shape (batch, samples), got {tuple(waveform.shape)}")
        if waveform.shape[-1] < cfg.min_samples:
            raise ValueError(
                f"waveform has {waveform.shape[-1]} samples; this frontend needs at least {cfg.min_samples} "
                f"({cfg.min_samples / cfg.sample_rate:.3f} s at {cfg.sample_rate} Hz)"
            )
        if cfg.kind == "kaldi_fbank":
            with torch.autocast(device_type=waveform.device.type, enabled=False):
                return kaldi_fbank(waveform.float(), cfg)[:, None]
        if cfg.kind == "vggish":
            with torch.autocast(device_type=waveform.device.type, enabled=False):
                return self.vggish_logmel(waveform)[:, None]
        with torch.autocast(device_type=waveform.device.type, enabled=False):
            power = self.power_spectrogram(waveform.float())
            mel = torch.matmul(power.transpose(1, 2), self.mel_fb).transpose(1, 2)  # (B, n_mels, frames)
            if cfg.log == "db":
                logmel = 10.0 * torch.log10(torch.clamp(mel, min=cfg.amin))
                if cfg.top_db is not None:
                    logmel = floor_below_peak(logmel, cfg.top_db)
            else:
                logmel = torch.log(mel + cfg.log_offset)
            if cfg.mean != 0.0 or cfg.std != 1.0:
                logmel = (logmel - cfg.mean) / cfg.std
        return logmel[:, None]

    def vggish_logmel(self, waveform: torch.Tensor) -> torch.Tensor:
        """``(B, T)`` -> VGGish log-mel ``(B, n_mels, frames)`` in float32, computed in float64 as the original's numpy
        code is (float32 maths moves quiet bands by up to ~1e-4: the log's slope there is ``1 / log_offset``).

        Frames of ``win_length`` every ``hop_length`` samples, incomplete ones dropped; periodic Hann; ``|rfft|`` of
        ``n_fft`` points (the frame zero-padded at its end); mel weights; ``log(mel + log_offset)``. Devices without
        float64 (MPS) compute in float32.
        """
        cfg = self.cfg
        dtype = torch.float32 if waveform.device.type == "mps" else torch.float64
        frames = waveform.to(dtype).unfold(-1, cfg.win_length or cfg.n_fft, cfg.hop_length)  # (B, frames, win)
        spectrum = torch.fft.rfft(frames * self.window.to(dtype), n=cfg.n_fft).abs()  # (B, frames, n_freqs)
        mel = torch.matmul(spectrum, self.mel_fb.to(dtype))
        return torch.log(mel + cfg.log_offset).transpose(1, 2).float()

    def extra_repr(self) -> str:
        c = self.cfg
        if c.kind == "waveform":
            return "waveform"
        if c.kind == "vggish":
            return (
                f"vggish, sr={c.sample_rate}, win={c.win_length or c.n_fft}, hop={c.hop_length}, n_fft={c.n_fft}, "
                f"mels={c.n_mels} ({math.floor(c.f_min)}-{math.floor(c.f_max or c.sample_rate / 2)} Hz), float64"
            )
        if c.kind == "kaldi_fbank":
            return (
                f"kaldi_fbank, sr={c.sample_rate}, win={c.win_length or c.n_fft}, hop={c.hop_length}, mels={c.n_mels}, "
                f"max_frames={c.max_frames}"
            )
        f_max = c.f_max if c.f_max is not None else c.sample_rate / 2
        return (
            f"sr={c.sample_rate}, n_fft={c.n_fft}, win={c.win_length or c.n_fft} ({c.window}), hop={c.hop_length}, "
            f"mels={c.n_mels} ({c.mel_scale}, {math.floor(c.f_min)}-{math.floor(f_max)} Hz), log={c.log}"
            + (f", top_db={c.top_db:g}" if c.top_db is not None else "")
        )
