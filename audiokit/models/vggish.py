"""VGGish (Hershey et al., ICASSP 2017): a VGG-like audio embedder, in the layout of the PyTorch port
harritaylor/torchvggish (weights converted from Google's TensorFlow release).

The model cuts a 16 kHz clip into non-overlapping 0.96 s *examples* (96 frames of a 64-band log-mel spectrogram,
10 ms hop; an incomplete last example is dropped, as upstream does) and maps each to a 128-d embedding:
``features`` (six 3x3 conv + ReLU layers, 64-128-256-256-512-512, with four 2x2 max-pools) -> (512, 6, 4) ->
transposed to TensorFlow's (6, 4, 512) order before flattening -> ``embeddings`` (Linear 12288-4096-4096-128, each
followed by a ReLU, so the raw embedding is non-negative).

The audiokit contract on top of that:

- ``forward_features``: ``(B, T)`` -> per-example embeddings ``(B, examples, 128)``;
- ``embed`` / ``forward_pre_logits``: the **mean of the examples' embeddings** ``(B, 128)`` (upstream returns the
  per-example rows only; the mean is audiokit's clip embedding);
- ``embed_frames``: the per-example embeddings ``(B, examples, 128)``; example ``i`` starts at
  ``i * frame_hop_seconds`` = ``0.96 i`` s (``example_starts`` gives the times);
- ``classifier``: ``nn.Identity`` for the released weights (``num_classes=0``: a pure embedder); ``reset_classifier(n)``
  puts a trainable Linear (or MLP head) on the 128-d clip embedding, for ``audiokit finetune``.

Input shorter than one example (15,600 samples, 0.975 s) is zero-padded to one example with a warning (upstream
raises). Every clip of a batch has the same length, so the example count and the output shapes are uniform.
Files at other rates are resampled by audiokit's loader (soxr), not by resampy's ``kaiser_best`` filter as upstream's
``vggish_input`` does, so their embeddings differ slightly from upstream's; 16 kHz input is processed identically.

Optional postprocessing (``postprocess=True, pca_params_path=...``): the released PCA file (a dict of float64 numpy
arrays written by ``torch.save``) is read with ``torch.load(weights_only=True)`` allowing only the numpy globals those
arrays need; each example's embedding is then PCA-projected and whitened, clamped to [-2, 2] and quantised to the
integers 0..255 (in float32), as in the AudioSet release embeddings. Shapes stay ``(B, examples, 128)`` (upstream
squeezes a one-example clip to ``(128,)``).
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from .._pretrained import FrontendCfg, PretrainedCfg
from .._registry import register_model, register_pretrained_cfgs
from ._base import AudioClassifier

__all__ = ["VGGish", "checkpoint_filter_fn", "load_pca_params", "pca_postprocess", "vggish_frontend"]

SAMPLE_RATE = 16000
WIN_LENGTH = 400  # 25 ms
HOP_LENGTH = 160  # 10 ms
EXAMPLE_FRAMES = 96  # 0.96 s per example, examples do not overlap
EMBEDDING_SIZE = 128
FEATURE_CHANNELS = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M")
FLAT_FEATURES = 512 * 6 * 4  # (C, H, W) after four pools of a 96 x 64 example
PCA_KEYS = ("pca_eigen_vectors", "pca_means")
QUANT_MIN, QUANT_MAX = -2.0, 2.0

_RELEASE = "https://github.com/harritaylor/torchvggish/releases/download/v0.1/"
WEIGHTS_URL = _RELEASE + "vggish-10086976.pth"
PCA_URL = _RELEASE + "vggish_pca_params-970ea276.pth"


# ---------------------------------------------------------------------------------------------------------------------
# Postprocessing
# ---------------------------------------------------------------------------------------------------------------------
def _numpy_safe_globals() -> list[Any]:
    """Exactly what unpickling float numpy arrays needs: ``_reconstruct`` (under numpy 1.x's ``numpy.core`` and numpy
    2's ``numpy._core`` names), ``ndarray``, ``dtype`` and the float32/float64 dtype classes."""
    import numpy as np

    try:
        from numpy._core.multiarray import _reconstruct  # numpy >= 2
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]
    return [
        (_reconstruct, "numpy.core.multiarray._reconstruct"),
        (_reconstruct, "numpy._core.multiarray._reconstruct"),
        (np.ndarray, "numpy.ndarray"),
        (np.dtype, "numpy.dtype"),
        type(np.dtype(np.float64)),
        type(np.dtype(np.float32)),
    ]


def load_pca_params(path: str | os.PathLike[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """The released PCA file -> ``(eigen_vectors (128, 128), means (128,))`` in float32.

    The file holds numpy arrays, which ``torch.load(weights_only=True)`` refuses; only the numpy globals they need are
    allowed (``_numpy_safe_globals``), anything else in the file is still refused. Tensors are accepted as well.
    """
    from .._hub import CheckpointLoadError, load_state_dict_file

    with torch.serialization.safe_globals(_numpy_safe_globals()):
        data = load_state_dict_file(path)
    if not isinstance(data, dict) or set(data) != set(PCA_KEYS):
        found = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise CheckpointLoadError(f"{path}: expected a VGGish PCA file with keys {list(PCA_KEYS)}, got {found}")
    vectors = torch.as_tensor(data["pca_eigen_vectors"], dtype=torch.float32)
    means = torch.as_tensor(data["pca_means"], dtype=torch.float32).reshape(-1)
    if vectors.shape != (EMBEDDING_SIZE, EMBEDDING_SIZE) or means.shape != (EMBEDDING_SIZE,):
        raise CheckpointLoadError(
            f"{path}: pca_eigen_vectors {tuple(vectors.shape)} and pca_means {tuple(means.shape)} should be "
            f"({EMBEDDING_SIZE}, {EMBEDDING_SIZE}) and ({EMBEDDING_SIZE},)"
        )
    if not (torch.isfinite(vectors).all() and torch.isfinite(means).all()):
        raise CheckpointLoadError(f"{path}: the PCA parameters hold NaN or inf")
    return vectors, means


def pca_postprocess(embeddings: torch.Tensor, vectors: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
    """``(..., 128)`` raw embeddings -> PCA (``vectors @ (e - means)``), clamped to [-2, 2], quantised to 0..255.

    Float32 throughout, as upstream; the values are integers held in a float tensor. The shape is kept.
    """
    projected = (embeddings.float() - means) @ vectors.T
    clipped = projected.clamp(QUANT_MIN, QUANT_MAX)
    return torch.round((clipped - QUANT_MIN) * (255.0 / (QUANT_MAX - QUANT_MIN)))


# ---------------------------------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------------------------------
def _make_features() -> nn.Sequential:
    layers: list[nn.Module] = []
    channels = 1
    for spec in FEATURE_CHANNELS:
        if spec == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(channels, int(spec), kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            channels = int(spec)
    return nn.Sequential(*layers)


class VGGish(AudioClassifier):
    """VGGish: ``features`` (conv keys ``features.{0,3,6,8,11,13}``) -> NHWC flatten -> ``embeddings`` (Linear keys
    ``embeddings.{0,2,4}``) per 0.96 s example; the clip embedding is the examples' mean; ``classifier`` on top.

    Args:
        postprocess: apply the released PCA + 8-bit quantisation to every example's embedding (needs
            ``pca_params_path``); the clip embedding is then the mean of the quantised rows.
        pca_params_path: the released ``vggish_pca_params-970ea276.pth`` (or a file of the same layout). Its
            tensors are not part of the state dict (the weights file loads strictly without them); a model saved with
            ``save_pretrained`` records the path and reads it again when reloaded.
    """

    def __init__(
        self,
        pretrained_cfg: PretrainedCfg,
        postprocess: bool = False,
        pca_params_path: str | os.PathLike[str] | None = None,
    ):
        super().__init__(pretrained_cfg)
        fe = pretrained_cfg.frontend
        if fe.kind != "vggish" or fe.n_mels != 64 or fe.sample_rate != SAMPLE_RATE:
            raise ValueError(f"VGGish needs its own 64-band 16 kHz 'vggish' frontend, got {fe}")
        if postprocess and pca_params_path is None:
            raise ValueError(f"postprocess=True needs pca_params_path= (the released PCA file, {PCA_URL})")
        if pca_params_path is not None and not postprocess:
            raise ValueError("pca_params_path is only used with postprocess=True")
        self.features = _make_features()
        self.embeddings = nn.Sequential(
            nn.Linear(FLAT_FEATURES, 4096),
            nn.ReLU(inplace=True),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Linear(4096, EMBEDDING_SIZE),
            nn.ReLU(inplace=True),
        )
        self.num_features = EMBEDDING_SIZE
        n = pretrained_cfg.num_classes
        self.classifier: nn.Module = nn.Linear(EMBEDDING_SIZE, n) if n > 0 else nn.Identity()
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
        self.postprocess = postprocess
        if postprocess:
            assert pca_params_path is not None
            # On the host whatever device the model is being built on (the builder sizes saved models on the meta
            # device first): the parameters are values read from a file.
            with torch.device("cpu"):
                vectors, means = load_pca_params(pca_params_path)
            self.register_buffer("pca_eigen_vectors", vectors, persistent=False)
            self.register_buffer("pca_means", means, persistent=False)

    @property
    def model_kwargs(self) -> dict[str, Any]:
        return self._model_kwargs

    @model_kwargs.setter
    def model_kwargs(self, value: dict[str, Any]) -> None:
        # The builder records the arguments for save_pretrained's JSON config: a pathlib path is kept as a string.
        self._model_kwargs = {k: os.fspath(v) if isinstance(v, os.PathLike) else v for k, v in value.items()}

    # -- geometry ------------------------------------------------------------------------------------------------------
    @property
    def min_samples(self) -> int:
        """One example: 400 + 95 * 160 = 15,600 samples; shorter input is zero-padded to it (with a warning)."""
        return WIN_LENGTH + (EXAMPLE_FRAMES - 1) * HOP_LENGTH

    @property
    def frame_hop_seconds(self) -> float:
        """Seconds between the starts of consecutive examples (0.96)."""
        return EXAMPLE_FRAMES * HOP_LENGTH / SAMPLE_RATE

    def num_examples(self, num_samples: int) -> int:
        """Examples in a clip of ``num_samples`` (after the zero-padding of input shorter than ``min_samples``)."""
        frames = self.frontend_cfg.num_frames(max(num_samples, self.min_samples))
        return frames // EXAMPLE_FRAMES

    def example_starts(self, num_samples: int) -> torch.Tensor:
        """Start time in seconds of each example of a clip of ``num_samples`` (the rows of ``embed_frames``)."""
        return torch.arange(self.num_examples(num_samples), dtype=torch.float64) * self.frame_hop_seconds

    # -- forward -------------------------------------------------------------------------------------------------------
    def examples(self, waveform: torch.Tensor) -> torch.Tensor:
        """``(B, T >= min_samples)`` -> log-mel examples ``(B, examples, 1, 96, 64)`` (time by mel, as upstream)."""
        logmel = self.frontend(waveform)[:, 0]  # (B, 64, frames)
        count = logmel.shape[-1] // EXAMPLE_FRAMES  # incomplete last example dropped
        cut = logmel[..., : count * EXAMPLE_FRAMES]
        b, mels, _ = cut.shape
        return cut.reshape(b, mels, count, EXAMPLE_FRAMES).permute(0, 2, 3, 1)[:, :, None]

    def embed_examples(self, examples: torch.Tensor) -> torch.Tensor:
        """Log-mel examples ``(N, 1, 96, 64)`` -> raw embeddings ``(N, 128)`` (before any postprocessing)."""
        x = self.features(examples)  # (N, 512, 6, 4)
        x = x.permute(0, 2, 3, 1).flatten(1)  # TensorFlow's (H, W, C) order, as the dense weights expect
        return self.embeddings(x)

    def forward_features(self, waveform: torch.Tensor) -> torch.Tensor:
        """``(B, T)`` waveform -> per-example embeddings ``(B, examples, 128)`` (PCA-quantised with ``postprocess``)."""
        ex = self.examples(waveform)
        b, count = ex.shape[:2]
        out = self.embed_examples(ex.flatten(0, 1))
        if self.postprocess:
            out = pca_postprocess(out, self.pca_eigen_vectors, self.pca_means)
        return out.reshape(b, count, EMBEDDING_SIZE)

    def forward_pre_logits(self, features: torch.Tensor) -> torch.Tensor:
        """Per-example embeddings -> clip embedding ``(B, 128)``: their mean."""
        return features.mean(dim=1)

    # -- embedding points ----------------------------------------------------------------------------------------------
    def embedding_blocks(self) -> dict[int, int]:
        """1..6: the six conv layers (with their ReLU, before the max-pool after some of them), upstream's conv1,
        conv2, conv3_1, conv3_2, conv4_1, conv4_2; each averaged over time and frequency in every example, then over
        the examples. VGGish has no stem, so there is no block 0."""
        convs = [m.out_channels for m in self.features if isinstance(m, nn.Conv2d)]
        return {i + 1: width for i, width in enumerate(convs)}

    def embedding_points(self) -> dict[str, int]:
        """``raw``: the examples' mean of the 128-d embedding before any postprocessing; ``postprocessed`` (only with
        ``postprocess=True``): the mean of the PCA-whitened, quantised rows; ``pooled``: the examples' mean of what
        ``forward_features`` gives (one of those two), which is also ``pre_logits``."""
        points = {"raw": EMBEDDING_SIZE}
        if self.postprocess:
            points["postprocessed"] = EMBEDDING_SIZE
        points["pooled"] = EMBEDDING_SIZE
        return points

    def forward_embedding(self, waveform: torch.Tensor, layer: int | str) -> torch.Tensor:
        if layer in ("pooled", "postprocessed"):
            return self.forward_pre_logits(self.forward_features(waveform))
        ex = self.examples(waveform)
        b, count = ex.shape[:2]
        if layer == "raw":
            return self.embed_examples(ex.flatten(0, 1)).reshape(b, count, EMBEDDING_SIZE).mean(dim=1)
        x = ex.flatten(0, 1)
        seen = 0
        for module in self.features:
            x = module(x)
            seen += isinstance(module, nn.Conv2d)
            if seen == layer and isinstance(module, nn.ReLU):
                break
        return x.mean(dim=(2, 3)).reshape(b, count, -1).mean(dim=1)

    @torch.no_grad()
    def forward_frame_embeddings(self, waveform: torch.Tensor, layer: int | None = None) -> torch.Tensor:
        """Per-example embeddings ``(B, examples, 128)``, one every ``frame_hop_seconds`` (0.96 s), not pooled;
        ``example_starts(T)`` gives their start times. ``layer`` is not supported (one embedding layer)."""
        if layer is not None:
            raise ValueError("VGGish has no per-layer embeddings (layer must be None)")
        return self.forward_features(self.prepare_waveform(waveform))

    def checkpoint_filter_fn(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return checkpoint_filter_fn(state_dict)


# ---------------------------------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------------------------------
def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The torchvggish release (a flat dict of 18 tensors, ``features.*`` and ``embeddings.*``) already has this
    model's names; ours (``save_pretrained``) too. Passed through for the strict loader to check."""
    return dict(state_dict)


# ---------------------------------------------------------------------------------------------------------------------
# Pretrained configurations
# ---------------------------------------------------------------------------------------------------------------------
def vggish_frontend() -> FrontendCfg:
    """VGGish's input (``vggish_params.py`` / ``mel_features.py``): 16 kHz, frames of 400 samples every 160 without
    padding, periodic Hann, ``|rfft(frame, 512)|`` (magnitude), 64 HTK-mel triangles 125-7500 Hz laid out in the mel
    domain with the DC bin zeroed, ``ln(mel + 0.01)``; computed in float64 like the numpy original."""
    return FrontendCfg(
        kind="vggish",
        sample_rate=SAMPLE_RATE,
        n_fft=512,
        win_length=WIN_LENGTH,
        hop_length=HOP_LENGTH,
        n_mels=64,
        f_min=125.0,
        f_max=7500.0,
        window="hann",
        center=False,
        stft="fft",
        mel_scale="htk",
        mel_norm=None,
        log="ln",
        log_offset=0.01,
    )


_NUM_PARAMS = 72_141_184

default_cfgs: list[PretrainedCfg] = [
    PretrainedCfg(
        architecture="vggish",
        tag="audioset",
        frontend=vggish_frontend(),
        num_classes=0,
        task="multilabel",
        label_names=(),
        # Not downloaded automatically: tests/test_registry.py requires published metrics of every downloadable
        # entry and none are published for this release (an embedder). WEIGHTS_URL is the file.
        url=None,
        sha256=None,
        filename="vggish-10086976.pth",
        clip_seconds=0.96,
        classifier="classifier",
        license="Apache-2.0",
        paper=(
            "S. Hershey et al. CNN Architectures for Large-Scale Audio Classification. ICASSP 2017. arXiv:1609.09430"
        ),
        source=(
            "https://github.com/harritaylor/torchvggish (Apache-2.0), release v0.1: "
            f"{WEIGHTS_URL} (weights) and {PCA_URL} (PCA parameters); converted from Google's TensorFlow release "
            "(tensorflow/models research/audioset/vggish). No published metric: an embedder has no classification "
            "result of its own."
        ),
        metrics={},
        num_params=_NUM_PARAMS,
        notes=(
            "Pure embedder (num_classes 0): 128-d per 0.96 s example; embed() is the mean over a clip's examples, "
            "embed_frames() the per-example rows. Weights: download "
            f"{WEIGHTS_URL} and pass checkpoint_path= (Python) or --checkpoint-path FILE (CLI); only the 8-hex prefix "
            "10086976 of its sha256 is known (torch.hub's file-name convention; upstream verifies nothing), so no "
            "hash is checked. PCA postprocessing (AudioSet-release style, 8-bit): postprocess=True, "
            f"pca_params_path= the file at {PCA_URL} (sha256 prefix 970ea276)."
        ),
    ),
]
register_pretrained_cfgs(default_cfgs)


# ---------------------------------------------------------------------------------------------------------------------
# Builders
# ---------------------------------------------------------------------------------------------------------------------
@register_model
def vggish(pretrained_cfg: PretrainedCfg, **kwargs: Any) -> VGGish:
    """VGGish: 6 conv layers (64-512) + 3 dense layers (12288-4096-4096-128), 72.1 M parameters, 128-d embeddings of
    0.96 s examples at 16 kHz."""
    return VGGish(pretrained_cfg, **kwargs)
