"""Configuration carried by pretrained weights: the input contract (frontend, sample rate) and the output contract
(labels, task), so that preprocessing is never passed separately from the weights."""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any, Literal

Task = Literal["multilabel", "multiclass"]
TASKS: tuple[str, ...] = ("multilabel", "multiclass")

# Bounds on what a configuration may ask for. A config.json is a few hundred bytes that decides how much memory the
# model's construction takes (the DFT and mel matrices are computed from these numbers, the classifier is sized by
# num_classes), so every size is capped well above anything a published audio model uses and far below what would
# exhaust a machine: the largest frontend allowed takes a few hundred MB while it is built.
SAMPLE_RATE_RANGE = (1000, 768_000)
MAX_N_FFT = 1 << 16  # 2.0 s windows at 32 kHz; mel matrix (32769, n_mels)
MAX_DFT_CONV_N_FFT = 4096  # dft_conv builds (n_fft/2+1, n_fft) complex128 kernels in numpy: 134 MB at 4096
MAX_N_MELS = 1024
MAX_FRAMES = 1 << 16
MAX_NUM_CLASSES = 100_000  # label sets in use have at most a few tens of thousands of classes
MAX_CLIP_SECONDS = 86_400.0


def _check_int(name: str, value: Any, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name} must be an integer in {low}..{high}, got {value!r}")


def _check_real(name: str, value: Any, what: str = "a finite number") -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return float(value)


def _check_choice(name: str, value: Any, allowed: tuple[Any, ...]) -> None:
    # Compared by type as well: JSON true must not pass for 1, nor 1 for True.
    if not any(type(value) is type(a) and value == a for a in allowed):
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")


def _check_mapping(name: str, value: Any) -> None:
    if not isinstance(value, Mapping):
        raise ValueError(f"{name} must be a JSON object (a mapping), got {type(value).__name__}")


@dataclass(frozen=True)
class FrontendCfg:
    """Every number that turns a waveform into the model's input features.

    ``kind`` selects the pipeline: ``"logmel"`` (STFT -> power -> mel -> log -> affine normalisation),
    ``"kaldi_fbank"`` (Kaldi-compatible log filterbanks computed by ``torchaudio.compliance.kaldi.fbank`` one clip at
    a time, padded with zeros in the log domain or truncated to ``max_frames``, then the affine normalisation; AST),
    ``"vggish"`` (VGGish's own pipeline, in float64: unpadded frames of ``win_length`` with a periodic Hann window,
    the magnitude of an ``n_fft``-point real FFT, triangles laid out in the HTK mel domain between ``f_min`` and
    ``f_max`` with the DC bin zeroed, ``log(x + log_offset)``) or ``"waveform"`` (identity, for models that take raw
    samples). The field names are the project-wide vocabulary
    (dataclass, YAML and CLI alike).
    """

    kind: Literal["logmel", "kaldi_fbank", "vggish", "waveform"] = "logmel"
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
    # "db" only: each clip's log-mel is floored at its own maximum minus top_db decibels (torchaudio's AmplitudeToDB
    # top_db, taken per clip; SAT: 120). None: no floor.
    top_db: float | None = None
    mean: float = 0.0  # output = (log_mel - mean) / std
    std: float = 1.0
    # True where the original checkpoints store the DFT and mel matrices (PANNs): they become persistent buffers
    # so the exact float32 tensors the model was trained with are loaded rather than recomputed.
    stored_in_checkpoint: bool = False
    # Fixed output length in frames: shorter spectrograms are zero-padded at the end (in the log domain, before the
    # normalisation), longer ones truncated. None keeps every frame. Only "kaldi_fbank" uses it (AST: 1024 or 128).
    max_frames: int | None = None

    def __post_init__(self) -> None:
        # Every field is checked here rather than where it is used: the frontend's matrices are built from these
        # numbers when a model is constructed, before any weights are compared, so a size has to be sane first.
        _check_choice("frontend.kind", self.kind, ("logmel", "kaldi_fbank", "vggish", "waveform"))
        _check_int("frontend.sample_rate", self.sample_rate, *SAMPLE_RATE_RANGE)
        _check_choice("frontend.stft", self.stft, ("fft", "dft_conv"))
        max_n_fft = MAX_DFT_CONV_N_FFT if self.stft == "dft_conv" else MAX_N_FFT
        _check_int("frontend.n_fft", self.n_fft, 1, max_n_fft)
        if self.win_length is not None:
            _check_int("frontend.win_length", self.win_length, 1, MAX_N_FFT)
            if self.win_length > self.n_fft:
                raise ValueError(f"frontend.win_length {self.win_length} exceeds n_fft {self.n_fft}")
        window = self.win_length or self.n_fft
        # A hop longer than the window would skip samples between frames.
        _check_int("frontend.hop_length", self.hop_length, 1, window)
        _check_int("frontend.n_mels", self.n_mels, 1, MAX_N_MELS)
        nyquist = self.sample_rate / 2
        f_min = _check_real("frontend.f_min", self.f_min, "a finite number >= 0")
        if f_min < 0:
            raise ValueError(f"frontend.f_min must be a finite number >= 0, got {self.f_min!r}")
        if self.f_max is not None:
            f_max = _check_real("frontend.f_max", self.f_max, f"a finite number up to {nyquist:g} (sample_rate / 2)")
            if f_max > nyquist:
                raise ValueError(f"frontend.f_max {self.f_max!r} exceeds sample_rate / 2 = {nyquist:g}")
        if f_min >= (self.f_max if self.f_max is not None else nyquist):
            raise ValueError(f"frontend.f_min {self.f_min!r} must be below f_max {self.f_max or nyquist!r}")
        _check_choice("frontend.window", self.window, ("hann", "hann_symmetric"))
        _check_choice("frontend.center", self.center, (True, False))
        _check_choice("frontend.pad_mode", self.pad_mode, ("reflect", "constant", "replicate", "circular"))
        if not 0.0 <= _check_real("frontend.preemphasis", self.preemphasis, "a number in [0, 1)") < 1.0:
            raise ValueError(f"frontend.preemphasis must be a number in [0, 1), got {self.preemphasis!r}")
        _check_choice("frontend.mel_scale", self.mel_scale, ("slaney", "htk", "kaldi"))
        _check_choice("frontend.mel_norm", self.mel_norm, ("slaney", None))
        _check_choice("frontend.log", self.log, ("db", "ln"))
        if _check_real("frontend.log_offset", self.log_offset, "a finite number >= 0") < 0:
            raise ValueError(f"frontend.log_offset must be a finite number >= 0, got {self.log_offset!r}")
        if _check_real("frontend.amin", self.amin, "a finite number > 0") <= 0:
            raise ValueError(f"frontend.amin must be a finite number > 0, got {self.amin!r}")
        if self.top_db is not None:
            if _check_real("frontend.top_db", self.top_db, "a finite number of decibels > 0") <= 0:
                raise ValueError(f"frontend.top_db must be a finite number of decibels > 0, got {self.top_db!r}")
            if self.log != "db" or self.kind != "logmel":
                raise ValueError("frontend.top_db floors a decibel spectrogram: it needs kind 'logmel' and log 'db'")
        _check_real("frontend.mean", self.mean)
        # std 0 would divide every feature by zero and turn every score into NaN.
        if _check_real("frontend.std", self.std, "a finite number > 0") <= 0:
            raise ValueError(f"frontend.std must be a finite number > 0, got {self.std!r}")
        _check_choice("frontend.stored_in_checkpoint", self.stored_in_checkpoint, (True, False))
        if self.max_frames is not None:
            _check_int("frontend.max_frames", self.max_frames, 1, MAX_FRAMES)

    @property
    def n_freqs(self) -> int:
        return self.n_fft // 2 + 1

    @property
    def min_samples(self) -> int:
        """Fewest samples the frontend accepts (reflect padding needs more than n_fft // 2)."""
        if self.kind == "waveform":
            return 1
        if self.kind in ("kaldi_fbank", "vggish"):
            return self.win_length or self.n_fft  # Kaldi and VGGish frames are never padded
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
        if self.kind == "vggish":
            return 1 + (num_samples - (self.win_length or self.n_fft)) // self.hop_length
        n = num_samples - (1 if self.preemphasis else 0)
        if self.center:
            return 1 + n // self.hop_length
        return 1 + (n - self.n_fft) // self.hop_length

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FrontendCfg:
        _check_mapping("frontend", data)
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
    sha256: str | None = None  # the file's SHA-256, as its publisher lists it
    md5: str | None = None  # where the publisher lists only an MD5 (Zenodo records)
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

    def __post_init__(self) -> None:
        for name in ("architecture", "tag", "classifier"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ValueError(f"{name} must be a non-empty string, got {value!r}")
        if not isinstance(self.frontend, FrontendCfg):
            raise ValueError(f"frontend must be a FrontendCfg, got {type(self.frontend).__name__}")
        # The classifier's weight is (num_classes, num_features): bounded before anything is built from it.
        _check_int("num_classes", self.num_classes, 0, MAX_NUM_CLASSES)
        _check_choice("task", self.task, TASKS)
        if self.label_set is not None and not (isinstance(self.label_set, str) and self.label_set.isidentifier()):
            raise ValueError(
                f"label_set must be the name of a label file shipped with audiokit, got {self.label_set!r}"
            )
        if self.label_names is not None and not all(isinstance(n, str) for n in self.label_names):
            raise ValueError("label_names must be a list of strings")
        if self.clip_seconds is not None:
            seconds = _check_real("clip_seconds", self.clip_seconds, "a finite number of seconds > 0")
            # Tagging windows are clip_seconds long: one that rounds to no samples could never advance.
            if not 1.0 / self.sample_rate <= seconds <= MAX_CLIP_SECONDS:
                raise ValueError(
                    f"clip_seconds must be between one sample (1/{self.sample_rate} s) and {MAX_CLIP_SECONDS:g} s, "
                    f"got {self.clip_seconds!r}"
                )
        for name, length in (("sha256", 64), ("md5", 32)):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, str) and re.fullmatch(f"[0-9a-f]{{{length}}}", value)):
                raise ValueError(f"{name} must be {length} lowercase hexadecimal characters, got {value!r}")
        _check_mapping("model_kwargs", self.model_kwargs)
        if not all(isinstance(k, str) for k in self.model_kwargs):
            raise ValueError(f"model_kwargs keys must be strings, got {list(self.model_kwargs)!r}")
        _check_mapping("metrics", self.metrics)
        if self.num_params is not None:
            _check_int("num_params", self.num_params, 0, 1 << 50)

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

    @property
    def checksum_kind(self) -> str | None:
        """How a download of ``url`` is verified: ``"sha256"`` or ``"md5"`` (published digests), ``"pinned"`` (none
        is published: the SHA-256 of the first download is pinned in the cache and later uses are checked against
        it), or None (nothing to download)."""
        if not self.url:
            return None
        return "sha256" if self.sha256 else "md5" if self.md5 else "pinned"

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
        _check_mapping("pretrained_cfg", data)
        data = dict(data)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown pretrained_cfg field(s) {unknown}; allowed: {sorted(known)}")
        if "frontend" not in data:
            raise ValueError("pretrained_cfg has no frontend")
        data["frontend"] = FrontendCfg.from_dict(data["frontend"])
        names = data.get("label_names")
        if names is not None:
            if not isinstance(names, (list, tuple)):
                raise ValueError(f"label_names must be a list of strings, got {type(names).__name__}")
            data["label_names"] = tuple(names)
        missing = sorted(f.name for f in dataclasses.fields(cls) if f.name not in data and _required(f))
        if missing:
            raise ValueError(f"pretrained_cfg lacks field(s) {missing}")
        return cls(**data)


def _required(f: dataclasses.Field[Any]) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


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
