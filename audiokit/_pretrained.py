"""Configuration carried by pretrained weights: the input contract (frontend, sample rate) and the output contract
(labels, task), so that preprocessing is never passed separately from the weights."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any, Literal

Task = Literal["multilabel", "multiclass"]
TASKS: tuple[str, ...] = ("multilabel", "multiclass")


@dataclass(frozen=True)
class FrontendCfg:
    """Every number that turns a waveform into the model's input features.

    ``kind`` selects the pipeline: ``"logmel"`` (STFT -> power -> mel -> log -> affine normalisation),
    ``"kaldi_fbank"`` (Kaldi-compatible log filterbanks computed by ``torchaudio.compliance.kaldi.fbank`` one clip at
    a time, padded with zeros in the log domain or truncated to ``max_frames``, then the affine normalisation; AST) or
    ``"waveform"`` (identity, for models that take raw samples). The field names are the project-wide vocabulary
    (dataclass, YAML and CLI alike).
    """

    kind: Literal["logmel", "kaldi_fbank", "waveform"] = "logmel"
    sample_rate: int = 32000
    n_fft: int = 1024
    win_length: int | None = None  # None: n_fft
    hop_length: int = 320
    n_mels: int = 64
    f_min: float = 0.0
    f_max: float | None = None  # None: sample_rate / 2
    window: Literal["hann", "hann_symmetric"] = "hann"  # "hann" is the periodic window (torch/librosa default)
    center: bool = True
    pad_mode: str = "reflect"
    preemphasis: float = 0.0  # y[n] = x[n+1] - a * x[n]; drops one sample (EfficientAT)
    stft: Literal["fft", "dft_conv"] = "fft"  # dft_conv: float32 DFT matrices applied as Conv1d (PANNs/torchlibrosa)
    mel_scale: Literal["slaney", "htk", "kaldi"] = "slaney"
    mel_norm: Literal["slaney"] | None = None
    log: Literal["db", "ln"] = "ln"  # db: 10*log10(max(x, amin)); ln: log(x + log_offset)
    log_offset: float = 0.0
    amin: float = 1e-10
    mean: float = 0.0  # output = (log_mel - mean) / std
    std: float = 1.0
    # True where the original checkpoints store the DFT and mel matrices (PANNs): they become persistent buffers
    # so the exact float32 tensors the model was trained with are loaded rather than recomputed.
    stored_in_checkpoint: bool = False
    # Fixed output length in frames: shorter spectrograms are zero-padded at the end (in the log domain, before the
    # normalisation), longer ones truncated. None keeps every frame. Only "kaldi_fbank" uses it (AST: 1024 or 128).
    max_frames: int | None = None

    @property
    def n_freqs(self) -> int:
        return self.n_fft // 2 + 1

    @property
    def min_samples(self) -> int:
        """Fewest samples the frontend accepts (reflect padding needs more than n_fft // 2)."""
        if self.kind == "waveform":
            return 1
        if self.kind == "kaldi_fbank":
            return self.win_length or self.n_fft  # Kaldi frames are never padded (snip_edges)
        extra = 1 if self.preemphasis else 0
        return (self.n_fft // 2 + 1 + extra) if self.center else (self.n_fft + extra)

    @property
    def max_samples(self) -> int | None:
        """Samples beyond which a fixed-length frontend ignores input (``max_frames``); None when unbounded."""
        if self.max_frames is None:
            return None
        if self.kind == "kaldi_fbank":
            return (self.win_length or self.n_fft) + (self.max_frames - 1) * self.hop_length
        return self.max_frames * self.hop_length

    def num_frames(self, num_samples: int) -> int:
        if self.kind == "kaldi_fbank":
            frames = 1 + (num_samples - (self.win_length or self.n_fft)) // self.hop_length
            return frames if self.max_frames is None else self.max_frames
        n = num_samples - (1 if self.preemphasis else 0)
        if self.center:
            return 1 + n // self.hop_length
        return 1 + (n - self.n_fft) // self.hop_length

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FrontendCfg:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown frontend field(s) {unknown}; allowed: {sorted(known)}")
        return cls(**data)


@dataclass(frozen=True)
class PretrainedCfg:
    """What a set of weights needs and promises (timm's ``PretrainedCfg``, torchvision's ``Weights.meta``)."""

    architecture: str
    tag: str
    frontend: FrontendCfg
    num_classes: int
    task: Task = "multilabel"
    label_set: str | None = None  # name of a label file shipped in audiokit/labels (e.g. "audioset")
    label_names: tuple[str, ...] | None = None  # explicit names; wins over label_set
    url: str | None = None
    sha256: str | None = None
    filename: str | None = None  # cache file name (defaults to the URL's basename)
    hf_hub_id: str | None = None
    clip_seconds: float | None = None  # length the weights were trained on (tagging windows default to it)
    classifier: str = "classifier"  # dotted path of the final Linear layer (replaced by reset_classifier)
    license: str | None = None
    paper: str | None = None
    source: str | None = None  # where the weights and their facts come from
    metrics: dict[str, float] = field(default_factory=dict)  # published results, e.g. {"audioset_map": 0.471}
    num_params: int | None = None  # published parameter count, checked by the tests
    model_kwargs: dict[str, Any] = field(default_factory=dict)  # architecture arguments these weights need
    notes: str | None = None

    @property
    def name(self) -> str:
        return f"{self.architecture}.{self.tag}"

    @property
    def sample_rate(self) -> int:
        return self.frontend.sample_rate

    @property
    def has_weights(self) -> bool:
        """Whether ``pretrained=True`` can fetch the weights (from ``url``); otherwise ``checkpoint_path=`` is the way
        in. ``hf_hub_id`` is where the weights live on the Hugging Face hub: metadata, not fetched by audiokit."""
        return bool(self.url)

    def get_label_names(self) -> tuple[str, ...] | None:
        if self.label_names is not None:
            return tuple(self.label_names)
        if self.label_set is not None:
            return load_label_set(self.label_set)
        return None

    def replace(self, **changes: Any) -> PretrainedCfg:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["frontend"] = self.frontend.to_dict()
        names = self.get_label_names()
        data["label_names"] = list(names) if names is not None else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PretrainedCfg:
        data = dict(data)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown pretrained_cfg field(s) {unknown}; allowed: {sorted(known)}")
        data["frontend"] = FrontendCfg.from_dict(data["frontend"])
        if data.get("label_names") is not None:
            data["label_names"] = tuple(data["label_names"])
        if data.get("task", "multilabel") not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {data['task']!r}")
        return cls(**data)


@cache
def load_label_set(name: str) -> tuple[str, ...]:
    """Read a label list shipped with the package (``audiokit/labels/<name>.tsv``: index, id, display name)."""
    try:
        text = resources.files("audiokit.labels").joinpath(f"{name}.tsv").read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"no label set named {name!r} ships with audiokit") from None
    names: list[str] = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        index, _mid, display = line.split("\t")
        if int(index) != len(names):
            raise ValueError(f"label set {name!r} is out of order at index {index}")
        names.append(display)
    return tuple(names)
