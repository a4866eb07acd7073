"""The HEAR 2021 API (Turian et al., "HEAR: Holistic Evaluation of Audio Representations", NeurIPS 2021 competition)
over every audiokit model, so that ``hear-eval-kit`` and ``hearvalidator`` can run them as a module::

    hear-validator audiokit.hear                       # the default model, downloaded weights
    python -m heareval.embeddings.runner audiokit.hear --model <checkpoint> \\
        --model-options '{"model_name": "panns_cnn14.audioset"}'

The API is three functions and two attributes:

- ``load_model(model_file_path="", **options)`` -> a ``torch.nn.Module`` with ``sample_rate`` (the rate HEAR feeds:
  one of 16 000, 22 050, 44 100, 48 000), ``scene_embedding_size`` and ``timestamp_embedding_size``;
- ``get_scene_embeddings(audio, model)``: ``(n_sounds, n_samples)`` -> ``(n_sounds, scene_embedding_size)``;
- ``get_timestamp_embeddings(audio, model)`` -> ``(n_sounds, n_timestamps, timestamp_embedding_size)`` and the
  timestamps ``(n_sounds, n_timestamps)`` in **milliseconds**, uniformly spaced.

Where the model's own rate is not one HEAR allows (32 kHz for PANNs, EfficientAT, PaSST, HTS-AT), ``sample_rate`` is
the next allowed rate above it and the audio is resampled inside, on its device, with the kaiser_best windowed-sinc
filter (``--preprocess-on device``'s; nothing above the model's Nyquist is lost).

Scene embeddings are ``model.embed`` of the whole sound; a model with a fixed input (AST, PaSST, HTS-AT, SSAST) gets
the mean over windows of that input, ``scene_hop`` seconds apart (hear21passt, upstream's own HEAR package, does
the same for PaSST). Timestamp embeddings are the model's own frames where it has them (``embed_frames``: wav2vec2
every 20 ms, PaSST every 0.1 s, EfficientAT and PANNs every 0.32 s, ...), timestamped at the centre of each frame's
hop interval. Given ``hop`` (seconds), or for a model without frames, each timestamp is instead a ``window``-second
excerpt centred on every multiple of ``hop`` (50 ms without frames: HEAR's recommendation), which is finer than a
CNN's frames and costs a forward per timestamp.
"""

from __future__ import annotations

import math
import os
from typing import Any

import torch
from torch import nn

from .models import AudioClassifier

__all__ = ["HearModel", "get_scene_embeddings", "get_timestamp_embeddings", "load_model"]

HEAR_SAMPLE_RATES = (16000, 22050, 44100, 48000)
DEFAULT_MODEL = "efficientat_mn10.audioset"
DEFAULT_EXCERPT_HOP = 0.05  # seconds: HEAR's recommended timestamp spacing


def hear_sample_rate(model_rate: int) -> int:
    """The rate HEAR feeds a model of ``model_rate``: the model's own if HEAR allows it, else the next above."""
    above = [r for r in HEAR_SAMPLE_RATES if r >= model_rate]
    return model_rate if model_rate in HEAR_SAMPLE_RATES else (above[0] if above else HEAR_SAMPLE_RATES[-1])


class HearModel(nn.Module):
    """An audiokit model behind the HEAR attributes; ``model`` is the ``AudioClassifier`` (moved with ``.to``).

    Args:
        model: the audiokit model (its weights and preprocessing are used as they are).
        layer: embedding layer passed to ``embed``/``embed_frames`` (models that offer layers, e.g. wav2vec2).
        hop: seconds between excerpt timestamps: None uses the model's own frames where it has them (else 0.05 s);
            a number asks for excerpts every ``hop`` whatever the model.
        window: seconds of audio embedded per timestamp for those models (centred on it, zero-padded at the edges).
        scene_hop: seconds between the windows averaged into a scene embedding for fixed-input models
            (default: half their input).
        batch_size: excerpts embedded per forward.
    """

    def __init__(
        self,
        model: AudioClassifier,
        *,
        layer: int | None = None,
        hop: float | None = None,
        window: float = 1.0,
        scene_hop: float | None = None,
        batch_size: int = 16,
    ):
        super().__init__()
        for name, value in (("hop", hop), ("window", window), ("scene_hop", scene_hop)):
            if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if model.num_features <= 0:
            raise ValueError(f"{model.pretrained_cfg.name} has no embedding to offer")
        self.model = model.eval()
        self.layer = layer
        self.hop = float(hop) if hop is not None else DEFAULT_EXCERPT_HOP
        self.window = float(window)
        self.batch_size = batch_size
        self.model_sample_rate = model.sample_rate
        self.sample_rate = hear_sample_rate(model.sample_rate)
        limit = model.max_samples
        self.scene_window = limit
        self.scene_hop = round((scene_hop or limit / 2 / model.sample_rate) * model.sample_rate) if limit else None
        self.native_frames = model.has_frame_embeddings and hop is None
        probe = torch.zeros(1, max(model.min_samples, round(0.5 * model.sample_rate)), device=self._probe_device())
        self.scene_embedding_size = int(self._embed(probe).shape[-1])
        self.timestamp_embedding_size = (
            int(self._embed_frames(probe).shape[-1]) if self.native_frames else self.scene_embedding_size
        )

    # -- model calls ---------------------------------------------------------------------------------------------------
    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.embed(x) if self.layer is None else self.model.embed(x, layer=self.layer)  # type: ignore[call-arg]

    def _embed_frames(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.embed_frames(x, layer=self.layer).embeddings

    def _in_batches(self, fn: Any, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([fn(x[i : i + self.batch_size].contiguous()) for i in range(0, x.shape[0], self.batch_size)])

    def to_model_rate(self, audio: torch.Tensor) -> torch.Tensor:
        """``(n, samples)`` at ``sample_rate`` -> float32 at the model's own rate, on the audio's device."""
        if not isinstance(audio, torch.Tensor) or audio.dim() != 2 or not audio.is_floating_point():
            shape = tuple(audio.shape) if isinstance(audio, torch.Tensor) else type(audio).__name__
            raise ValueError(f"HEAR audio must be a float tensor (n_sounds, n_samples), got {shape}")
        if audio.shape[1] == 0:
            raise ValueError("HEAR audio has no samples")
        if not bool(torch.isfinite(audio).all()):
            raise ValueError("HEAR audio contains NaN or infinite samples")
        audio = audio.float()
        if self.sample_rate == self.model_sample_rate:
            return audio
        from .audio.io import _torch_resampler

        return _torch_resampler(self.sample_rate, self.model_sample_rate, str(audio.device))(audio)

    def _device_of(self, audio: torch.Tensor) -> torch.Tensor:
        return audio.to(self._probe_device())

    def _probe_device(self) -> torch.device:
        reference = next(self.model.parameters(), None)
        return reference.device if reference is not None else torch.device("cpu")

    def _windowed_frames(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Frames of a sound longer than a fixed-input model's input: full windows (the sound zero-padded at its end)
        starting on multiples of the frame spacing, so every window's frames fall on one uniform grid; each grid
        point takes its frame from the window in which it lies nearest the centre."""
        n, length = x.shape
        rate = self.model_sample_rate
        width = int(self.scene_window)  # type: ignore[arg-type]
        first = self._in_batches(self._embed_frames, x[:, :width]).float()  # the first window, x being longer
        centres_in_window = self.model.frame_centres(width, first.shape[1])
        step = float(centres_in_window[1] - centres_in_window[0])
        step_samples = round(step * rate)
        if abs(step_samples - step * rate) > 1e-6 * rate:
            raise ValueError(
                f"{self.model.pretrained_cfg.name}'s frame spacing {step:g} s is not a whole number of samples"
            )
        hop = max(step_samples, (width // 2) // step_samples * step_samples)
        count = int(torch.ceil((length / rate - centres_in_window[0]) / step).item())
        grid = centres_in_window[0] + torch.arange(count, dtype=torch.float64) * step
        # Windows until one reaches the last grid point (a window's last frame may end before the window does).
        starts = [0]
        while starts[-1] / rate + float(centres_in_window[-1]) < float(grid[-1]) - step / 2:
            starts.append(starts[-1] + hop)
        padded = torch.nn.functional.pad(x, (0, max(0, starts[-1] + width - length)))
        frames = first.new_zeros(n, count, first.shape[-1])
        best = torch.full((count,), float("inf"), dtype=torch.float64)
        distance = (centres_in_window - width / rate / 2).abs()
        for start in starts:
            window = first if start == 0 else self._in_batches(self._embed_frames, padded[:, start : start + width])
            index = start // step_samples + torch.arange(window.shape[1])
            take = (index < count) & (distance < best[index.clamp(max=count - 1)])
            frames[:, index[take].to(frames.device)] = window[:, take.to(window.device)]
            best[index[take]] = distance[take]
        return frames, grid

    # -- the two embeddings --------------------------------------------------------------------------------------------
    @torch.no_grad()
    def scene_embeddings(self, audio: torch.Tensor) -> torch.Tensor:
        x = self.to_model_rate(self._device_of(audio))
        n, length = x.shape
        if self.scene_window is None or length <= self.scene_window:
            return self._in_batches(self._embed, x).float()
        step = self.scene_hop or self.scene_window
        starts = list(range(0, length - self.scene_window + 1, step))
        if starts[-1] + self.scene_window < length:  # the end of the sound gets a window too
            starts.append(length - self.scene_window)
        windows = torch.stack([x[:, s : s + self.scene_window] for s in starts], dim=1)  # (n, w, samples)
        out = self._in_batches(self._embed, windows.flatten(0, 1))
        return out.reshape(n, len(starts), -1).mean(dim=1).float()

    @torch.no_grad()
    def timestamp_embeddings(self, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.to_model_rate(self._device_of(audio))
        n, length = x.shape
        rate = self.model_sample_rate
        if self.native_frames and self.scene_window is not None and length > self.scene_window:
            frames, centres = self._windowed_frames(x)
        elif self.native_frames:
            frames = self._in_batches(self._embed_frames, x).float()
            centres = self.model.frame_centres(length, frames.shape[1])
        else:
            # Excerpts start every ``stride`` samples of the padded sound, so excerpt k is centred on sample
            # k * stride of the original: unfold gives them as a view, and only a batch at a time is copied.
            stride = max(1, round(self.hop * rate))
            width = max(round(self.window * rate), self.model.min_samples)
            half = width // 2
            padded = torch.nn.functional.pad(x, (half, width - half))
            count = (length - 1) // stride + 1
            excerpts = padded.unfold(-1, width, stride)[:, :count]  # (n, count, width), a view
            frames = torch.stack([self._in_batches(self._embed, excerpts[i]) for i in range(n)]).float()
            centres = torch.arange(count, dtype=torch.float64) * (stride / rate)
        times = (centres * 1000.0).to(torch.float32).to(frames.device).expand(n, -1).contiguous()
        return frames, times


# -- the module-level API hear-eval-kit calls ---------------------------------------------------------------------
def load_model(
    model_file_path: str | os.PathLike[str] = "",
    *,
    model_name: str | None = None,
    checkpoint_path: str | os.PathLike[str] | None = None,
    layer: int | None = None,
    hop: float | None = None,
    window: float = 1.0,
    scene_hop: float | None = None,
    batch_size: int = 16,
) -> HearModel:
    """HEAR's entry point. ``model_file_path`` (what ``hear-validator -m`` and hear-eval-kit pass) is the weights
    file, as is ``checkpoint_path``; without either, the registered weights of ``model_name`` are downloaded (or
    read from the cache). ``model_name`` defaults to ``efficientat_mn10.audioset``."""
    from ._builder import create_model

    if model_file_path and checkpoint_path and os.fspath(model_file_path) != os.fspath(checkpoint_path):
        raise ValueError(f"two weight files given: {model_file_path!s} and checkpoint_path {checkpoint_path!s}")
    weights = checkpoint_path or model_file_path or None
    name = model_name or DEFAULT_MODEL
    net = create_model(name, pretrained=weights is None, checkpoint_path=weights)
    return HearModel(net, layer=layer, hop=hop, window=window, scene_hop=scene_hop, batch_size=batch_size)


def _check_model(model: Any) -> HearModel:
    if not isinstance(model, HearModel):
        raise TypeError(f"expected the model audiokit.hear.load_model returns, got {type(model).__name__}")
    return model


def get_scene_embeddings(audio: torch.Tensor, model: HearModel) -> torch.Tensor:
    """``(n_sounds, n_samples)`` at ``model.sample_rate`` -> ``(n_sounds, model.scene_embedding_size)`` float32."""
    return _check_model(model).scene_embeddings(audio)


def get_timestamp_embeddings(audio: torch.Tensor, model: HearModel) -> tuple[torch.Tensor, torch.Tensor]:
    """``(n_sounds, n_samples)`` -> embeddings ``(n_sounds, n_timestamps, model.timestamp_embedding_size)`` and
    timestamps ``(n_sounds, n_timestamps)`` in milliseconds, float32, uniformly spaced."""
    return _check_model(model).timestamp_embeddings(audio)
