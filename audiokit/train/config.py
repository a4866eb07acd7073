"""Fine-tuning configuration: nested dataclasses read from YAML, validated with errors that name the bad key.

The same dotted names work in YAML, in ``--set key=value`` overrides and in Python (``cfg.train.lr``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml


class ConfigError(ValueError):
    """A configuration problem; the message names the key and the allowed values."""


@dataclass
class ModelConfig:
    name: str = "efficientat_mn10.audioset"
    pretrained: bool = True
    checkpoint: str | None = None  # a local weights file (original layout or ours); no download
    kwargs: dict[str, Any] = field(default_factory=dict)  # architecture arguments, e.g. {drop_rate: 0.0}


@dataclass
class HeadSection:
    """The new classifier: hidden widths, their activation (``"gelu"``, ``"leaky_relu:0.1"``, ...), dropout, norm,
    and the output activation (None: sigmoid for multi-label data, softmax otherwise). Empty ``hidden`` and no
    ``output`` keep the plain Linear layer of the pretrained architecture."""

    hidden: list[int] = field(default_factory=list)
    activation: str = "relu"
    dropout: float = 0.0
    norm: Literal["none", "batch", "layer"] = "none"
    output: str | None = None


@dataclass
class DataConfig:
    kind: Literal["esc50", "folder", "manifest"] = "esc50"
    root: str | None = None  # ESC-50 root (audio/, meta/esc50.csv), class-per-folder root, or manifest directory
    manifest: str | None = None  # CSV with path,label[,split]; labels separated by ';' for multi-label
    folds: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 5])  # ESC-50 test folds to run
    clip_seconds: float = 5.0  # every clip is zero-padded or cropped to this length
    val_fraction: float = 0.2  # folder/manifest without a split column: share held out, stratified, seeded
    cache_dir: str | None = None  # decoded-audio cache; default <root>/.audiokit_cache
    num_workers: int = 2


@dataclass
class OptimizerConfig:
    name: Literal["adamw", "adam", "sgd", "rmsprop", "adagrad"] = "adam"
    lr: float = 1e-4
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    momentum: float = 0.9  # sgd, rmsprop
    amsgrad: bool = False
    layer_decay: float | None = None  # layer-wise lr decay: lr * decay**(depth from the head)
    head_lr: float | None = None  # a separate learning rate for the new classifier


@dataclass
class ScheduleConfig:
    name: Literal["constant", "cosine", "linear", "step", "warmup_rampdown"] = "cosine"
    warmup_epochs: float = 0.0  # linear warm-up from 0 (exponential for warmup_rampdown, as EfficientAT)
    min_lr_ratio: float = 0.0  # floor of cosine / linear / ramp-down, as a fraction of lr
    step_epochs: int = 10  # step: multiply by gamma every step_epochs
    gamma: float = 0.5
    rampdown_start: float = 0.0  # warmup_rampdown: epoch where the linear ramp-down starts
    rampdown_epochs: float = 1.0  # warmup_rampdown: its length


@dataclass
class AugmentConfig:
    mixup_alpha: float = 0.0  # 0 disables; lambda ~ Beta(alpha, alpha), lambda = max(lambda, 1 - lambda)
    mixup_on: Literal["waveform", "spectrogram"] = "spectrogram"
    roll_samples: int = 0  # random circular shift of the waveform in [-roll, roll]
    gain_db: list[float] = field(default_factory=lambda: [0.0, 0.0])  # uniform gain range in dB
    freq_masks: int = 0  # SpecAugment: number of frequency masks
    freq_mask_width: int = 0
    time_masks: int = 0
    time_mask_width: int = 0


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 32  # global batch (split across processes under torchrun)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    amp: Literal["none", "bf16", "fp16"] = "none"  # autocast on CUDA; ignored (fp32) on CPU
    grad_clip: float | None = None  # max global gradient norm
    freeze_backbone: bool = False  # train only the classifier
    class_weights: bool = False  # weight the loss by inverse class frequency (single-label)
    label_smoothing: float = 0.0
    early_stopping_patience: int | None = None  # epochs without a better validation metric
    seed: int = 0
    deterministic: bool = False  # torch.use_deterministic_algorithms
    checkpoint_every_steps: int | None = None  # also save a resumable state mid-epoch
    device: str = "auto"
    max_steps_per_epoch: int | None = None  # cap (for smoke tests and quick looks)


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    head: HeadSection = field(default_factory=HeadSection)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    output_dir: str = "runs"
    run_name: str | None = None  # default: <config name>_<timestamp>

    # -- construction ------------------------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        return _build(cls, data, "")

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: list[str] | None = None) -> RunConfig:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: invalid YAML ({err})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections")
        for item in overrides or []:
            apply_override(data, item)
        try:
            return cls.from_dict(data)
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> RunConfig:
        """Checks that need more than one field; run before any training starts."""
        d, t = self.data, self.train
        if d.kind in ("esc50", "folder") and not d.root:
            raise ConfigError(f"data.root is required for data.kind={d.kind!r}")
        if d.kind == "manifest" and not d.manifest:
            raise ConfigError("data.manifest is required for data.kind='manifest'")
        bad_folds = [f for f in d.folds if f not in (1, 2, 3, 4, 5)]
        if d.kind == "esc50" and (bad_folds or not d.folds):
            raise ConfigError(f"data.folds must be ESC-50 folds 1-5, got {d.folds}")
        if d.clip_seconds <= 0:
            raise ConfigError(f"data.clip_seconds must be positive, got {d.clip_seconds}")
        if not 0 < d.val_fraction < 1:
            raise ConfigError(f"data.val_fraction must be in (0, 1), got {d.val_fraction}")
        if t.epochs < 1 or t.batch_size < 1:
            raise ConfigError("train.epochs and train.batch_size must be at least 1")
        if t.optimizer.lr <= 0:
            raise ConfigError(f"train.optimizer.lr must be positive, got {t.optimizer.lr}")
        if len(t.augment.gain_db) != 2 or t.augment.gain_db[0] > t.augment.gain_db[1]:
            raise ConfigError(f"train.augment.gain_db must be [low, high], got {t.augment.gain_db}")
        if len(t.optimizer.betas) != 2:
            raise ConfigError(f"train.optimizer.betas must have two values, got {t.optimizer.betas}")
        try:
            self.head_config()
        except ValueError as err:
            raise ConfigError(f"head: {err}") from None
        return self

    def head_config(self):  # -> audiokit.layers.HeadConfig | None
        """The ``HeadConfig`` for ``reset_classifier``, or None for the plain Linear layer."""
        from ..layers import HeadConfig

        h = self.head
        if not h.hidden and h.output is None:
            return None
        return HeadConfig(hidden=list(h.hidden), activation=h.activation, dropout=h.dropout, norm=h.norm,
                          output=h.output)  # fmt: skip


def apply_override(data: dict[str, Any], item: str) -> None:
    """``"train.optimizer.lr=3e-4"`` into a nested dict; the value is parsed as YAML (numbers, lists, null)."""
    key, sep, raw = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set expects key=value, got {item!r}")
    value = yaml.safe_load(raw) if raw.strip() else ""
    parts = key.strip().split(".")
    node = data
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {item!r}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _build(cls: type, data: Any, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a mapping, got {data!r}")
    hints = _field_types(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ConfigError(
            f"unknown key '{prefix}{unknown[0]}'; allowed in {prefix.rstrip('.') or 'the top level'}: {names}"
        )
    kwargs = {}
    for name in names:
        if name in data:
            kwargs[name] = _coerce(hints[name], data[name], f"{prefix}{name}")
    return cls(**kwargs)


def _coerce(kind: Any, value: Any, key: str) -> Any:
    origin = get_origin(kind)
    if dataclasses.is_dataclass(kind):
        return _build(kind, value if value is not None else {}, key + ".")
    if origin in (Union, types.UnionType):
        options = get_args(kind)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(option, value, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if errors else f"{key}: invalid value {value!r}")
    if origin is Literal:
        allowed = get_args(kind)
        if value not in allowed:
            raise ConfigError(f"{key}={value!r} is not allowed; choose one of {list(allowed)}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        (item,) = get_args(kind)
        return [_coerce(item, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping, got {value!r}")
        return dict(value)
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        return value
    if kind is float:
        if isinstance(value, str):  # PyYAML (YAML 1.1) reads "3e-4" as a string: accept what float() accepts
            with contextlib.suppress(ValueError):
                value = float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        return float(value)
    if kind is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, got {value!r}")
        return value
    if kind is Any:
        return value
    raise ConfigError(f"{key}: unsupported type {kind}")
