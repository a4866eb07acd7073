"""The log-mel frontend against independent computations: librosa (float64) and the Kaldi mel formula."""

from __future__ import annotations

import librosa
import numpy as np
import pytest
import torch
import torchaudio
from scipy.signal import get_window

from audiokit import FrontendCfg, LogMelFrontend
from audiokit.audio.frontend import mel_filterbank

PANNS = FrontendCfg(
    sample_rate=32000, n_fft=1024, hop_length=320, n_mels=64, f_min=50, f_max=14000, window="hann",
    stft="dft_conv", mel_scale="slaney", mel_norm="slaney", log="db", amin=1e-10, stored_in_checkpoint=True,
)  # fmt: skip
EFFICIENTAT = FrontendCfg(
    sample_rate=32000, n_fft=1024, win_length=800, window="hann_symmetric", hop_length=320, n_mels=128,
    f_min=0, f_max=15000, mel_scale="kaldi", preemphasis=0.97, log="ln", log_offset=1e-5, mean=-4.5, std=5.0,
)  # fmt: skip


def _noise(seconds: float, rate: int, seed: int = 0) -> np.ndarray:
    return (0.3 * np.random.default_rng(seed).standard_normal(int(seconds * rate))).astype(np.float32)


def _kaldi_mel_numpy(n_mels: int, n_fft: int, rate: int, f_min: float, f_max: float) -> np.ndarray:
    """Kaldi triangles from the formula: mel = 1127 ln(1 + f/700), equal spacing in mel, weights in mel domain."""

    def mel(f):
        return 1127.0 * np.log1p(np.asarray(f, dtype=np.float64) / 700.0)

    edges = np.linspace(mel(f_min), mel(f_max), n_mels + 2)
    bins = mel(np.arange(n_fft // 2) * rate / n_fft)
    left, centre, right = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (bins - left) / (centre - left)
    down = (right - bins) / (right - centre)
    banks = np.maximum(0.0, np.minimum(up, down))
    return np.pad(banks, ((0, 0), (0, 1)))  # Nyquist bin gets no weight


def test_slaney_filterbank_matches_librosa():
    ours = mel_filterbank(PANNS).numpy()
    ref = librosa.filters.mel(sr=32000, n_fft=1024, n_mels=64, fmin=50, fmax=14000, htk=False, norm="slaney").T
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-7)


def test_kaldi_filterbank_matches_the_formula_and_torchaudio():
    ours = mel_filterbank(EFFICIENTAT).numpy()  # (513, 128)
    formula = _kaldi_mel_numpy(128, 1024, 32000, 0.0, 15000.0).T
    np.testing.assert_allclose(ours, formula, atol=3e-5)  # torchaudio builds them in float32, the formula in float64
    from torchaudio.compliance import kaldi

    banks, _ = kaldi.get_mel_banks(128, 1024, 32000.0, 0.0, 15000.0, 100.0, -500.0, 1.0)
    np.testing.assert_array_equal(ours[:-1], banks.T.numpy())
    assert not ours[-1].any()


@pytest.mark.parametrize("stft", ["dft_conv", "fft"])
def test_panns_logmel_matches_librosa(stft):
    cfg = FrontendCfg(**{**PANNS.to_dict(), "stft": stft})
    x = _noise(2.0, 32000)
    ours = LogMelFrontend(cfg)(torch.from_numpy(x)[None])[0, 0].numpy()
    spec = np.abs(librosa.stft(x.astype(np.float64), n_fft=1024, hop_length=320, window="hann", center=True,
                               pad_mode="reflect")) ** 2  # fmt: skip
    melw = librosa.filters.mel(sr=32000, n_fft=1024, n_mels=64, fmin=50, fmax=14000)
    ref = 10 * np.log10(np.maximum(melw @ spec, 1e-10))
    assert ours.shape == ref.shape == (64, 1 + len(x) // 320)
    np.testing.assert_allclose(ours, ref, atol=1e-4)


def test_panns_dft_matrices_use_a_periodic_hann():
    frontend = LogMelFrontend(PANNS)
    window = get_window("hann", 1024, fftbins=True)
    n = np.arange(1024)
    expected_real = (np.cos(2 * np.pi * 3 * n / 1024) * window).astype(np.float32)
    np.testing.assert_allclose(frontend.dft_real[3, 0].numpy(), expected_real, atol=1e-7)
    assert frontend.dft_real[0, 0, 1].item() == pytest.approx(9.4123587e-06, rel=1e-6)  # PANNs' w[1]


def test_efficientat_frontend_matches_an_independent_pipeline():
    x = _noise(3.0, 32000, seed=1)
    ours = LogMelFrontend(EFFICIENTAT)(torch.from_numpy(x)[None])[0, 0].numpy()
    y = x[1:].astype(np.float64) - 0.97 * x[:-1].astype(np.float64)  # valid pre-emphasis drops a sample
    window = np.pad(get_window("hann", 800, fftbins=False), (112, 112))  # symmetric Hann centred in 1024
    spec = np.abs(librosa.stft(y, n_fft=1024, hop_length=320, window=window, center=True, pad_mode="reflect")) ** 2
    mel = _kaldi_mel_numpy(128, 1024, 32000, 0.0, 15000.0) @ spec
    ref = (np.log(mel + 1e-5) + 4.5) / 5.0
    assert ours.shape == ref.shape == (128, 1 + (len(x) - 1) // 320)
    np.testing.assert_allclose(ours, ref, atol=1e-4)


def test_htk_frontend_matches_torchaudio_melspectrogram():
    cfg = FrontendCfg(sample_rate=16000, n_fft=512, win_length=480, hop_length=160, n_mels=40, mel_scale="htk",
                      log="ln", log_offset=1e-6)  # fmt: skip
    x = torch.from_numpy(_noise(1.0, 16000, seed=2))[None]
    ours = LogMelFrontend(cfg)(x)[:, 0]
    reference = torchaudio.transforms.MelSpectrogram(16000, n_fft=512, win_length=480, hop_length=160, n_mels=40)
    np.testing.assert_allclose(ours.numpy(), torch.log(reference(x) + 1e-6).numpy(), atol=1e-4)
    assert ours.shape[-1] == 101


@pytest.mark.parametrize(("cfg", "seconds", "frames"), [(PANNS, 10.0, 1001), (EFFICIENTAT, 10.0, 1000)])
def test_frame_counts_follow_upstream(cfg, seconds, frames):
    out = LogMelFrontend(cfg)(torch.zeros(1, int(seconds * cfg.sample_rate)))
    assert out.shape == (1, 1, cfg.n_mels, frames) and cfg.num_frames(int(seconds * cfg.sample_rate)) == frames


def test_stored_matrices_are_loaded_from_a_state_dict():
    frontend = LogMelFrontend(PANNS)
    assert set(frontend.state_dict()) == {"dft_real", "dft_imag", "mel_fb"}
    scaled = {k: v * 2 for k, v in frontend.state_dict().items()}
    frontend.load_state_dict(scaled)
    torch.testing.assert_close(frontend.mel_fb, scaled["mel_fb"])
    assert LogMelFrontend(EFFICIENTAT).state_dict() == {}  # recomputed, never stored


def test_frontend_stays_float32_under_autocast():
    x = torch.from_numpy(_noise(1.0, 32000))[None]
    frontend = LogMelFrontend(EFFICIENTAT)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = frontend(x)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, frontend(x))


def test_short_or_misshapen_input_is_a_clear_error():
    frontend = LogMelFrontend(PANNS)
    with pytest.raises(ValueError, match="at least 513"):
        frontend(torch.zeros(1, 100))
    with pytest.raises(ValueError, match=r"\(batch, samples\)"):
        frontend(torch.zeros(100000))


def test_bad_config_values_are_refused():
    with pytest.raises(ValueError, match="unknown frontend field"):
        FrontendCfg.from_dict({"n_ffts": 512})
    with pytest.raises(ValueError, match="exceeds n_fft"):
        LogMelFrontend(FrontendCfg(n_fft=512, win_length=1024))
