"""Fine-tuning configuration: nested dataclasses read from YAML, validated with errors that name the bad key.

The same dotted names work in YAML, in ``--set key=value`` overrides and in Python (``cfg.train.lr``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import numbers
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml


class ConfigError(ValueError):
    """A configuration problem; the message names the key and the allowed values."""


@dataclass(frozen=True)
class Domain:
    """The values a numeric key accepts (every item, for a list), attached to its type with ``Annotated``."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False  # low itself excluded
    high_open: bool = False

    def __contains__(self, value: float) -> bool:  # written so that nan is in no domain
        above = self.low is None or (value > self.low if self.low_open else value >= self.low)
        below = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return above and below

    def __str__(self) -> str:
        low, high = _number(self.low), _number(self.high)
        if self.high is None:
            return "any finite number" if self.low is None else f"{'>' if self.low_open else '>='} {low}"
        if self.low is None:
            return f"{'<' if self.high_open else '<='} {high}"
        return f"in {'(' if self.low_open else '['}{low}, {high}{')' if self.high_open else ']'}"


def _number(x: float | None) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


Positive = Annotated[float, Domain(0, low_open=True)]
NonNegative = Annotated[float, Domain(0)]
Fraction = Annotated[float, Domain(0, 1)]
FractionBelowOne = Annotated[float, Domain(0, 1, high_open=True)]
OpenFraction = Annotated[float, Domain(0, 1, low_open=True, high_open=True)]
Factor = Annotated[float, Domain(0, 1, low_open=True)]  # a multiplier that may shrink, never grow or reach 0
Count = Annotated[int, Domain(1)]
Size = Annotated[int, Domain(0)]
Fold = Annotated[int, Domain(1, 5)]
Decibels = Annotated[float, Domain(-100, 100)]  # past +-100 dB is a typo; far past it float32 audio overflows to inf


@dataclass
class ModelConfig:
    name: str = "efficientat_mn10.audioset"
    pretrained: bool = True
    checkpoint_path: str | None = None  # a local weights file (original layout or ours); no download (alias checkpoint)
    kwargs: dict[str, Any] = field(default_factory=dict)  # architecture arguments, e.g. {drop_rate: 0.0}


@dataclass
class HeadSection:
    """The new classifier: hidden widths, their activation (``"gelu"``, ``"leaky_relu:0.1"``, ...), dropout, norm,
    and the output activation (None: sigmoid for multi-label data, softmax otherwise). Empty ``hidden`` and no
    ``output`` keep the plain Linear layer of the pretrained architecture."""

    hidden: list[Count] = field(default_factory=list)
    activation: str = "relu"
    dropout: FractionBelowOne = 0.0
    norm: Literal["none", "batch", "layer"] = "none"
    output: str | None = None


@dataclass
class DataConfig:
    kind: Literal["esc50", "folder", "manifest"] = "esc50"
    root: str | None = None  # ESC-50 root (audio/, meta/esc50.csv), class-per-folder root, or manifest directory
    manifest: str | None = None  # CSV with path,label[,split]; labels separated by ';' for multi-label
    folds: list[Fold] = field(default_factory=lambda: [1, 2, 3, 4, 5])  # ESC-50 test folds to run
    clip_seconds: Positive = 5.0  # every clip is zero-padded or cropped to this length
    val_fraction: OpenFraction = 0.2  # folder/manifest without a split column: share held out, stratified, seeded
    cache_dir: str | None = None  # decoded-audio cache; default <root>/.audiokit_cache
    num_workers: Size = 2


@dataclass
class OptimizerConfig:
    name: Literal["adamw", "adam", "sgd", "rmsprop", "adagrad"] = "adam"
    lr: Positive = 1e-4
    weight_decay: NonNegative = 0.0
    betas: list[FractionBelowOne] = field(default_factory=lambda: [0.9, 0.999])
    momentum: FractionBelowOne = 0.9  # sgd, rmsprop
    amsgrad: bool = False
    layer_decay: Factor | None = None  # layer-wise lr decay: lr * decay**(depth from the head)
    head_lr: Positive | None = None  # a separate learning rate for the new classifier


@dataclass
class ScheduleConfig:
    name: Literal["constant", "cosine", "linear", "step", "warmup_rampdown"] = "cosine"
    warmup_epochs: NonNegative = 0.0  # linear warm-up from 0 (exponential for warmup_rampdown, as EfficientAT)
    min_lr_ratio: Fraction = 0.0  # floor of cosine / linear / ramp-down, as a fraction of lr
    step_epochs: Count = 10  # step: multiply by gamma every step_epochs
    gamma: Factor = 0.5
    rampdown_start: NonNegative = 0.0  # warmup_rampdown: epoch where the linear ramp-down starts
    rampdown_epochs: NonNegative = 1.0  # warmup_rampdown: its length


@dataclass
class AugmentConfig:
    mixup_alpha: NonNegative = 0.0  # 0 disables; lambda ~ Beta(alpha, alpha), lambda = max(lambda, 1 - lambda)
    mixup_on: Literal["waveform", "spectrogram"] = "spectrogram"
    roll_samples: Size = 0  # random circular shift of the waveform in [-roll, roll]
    gain_db: list[Decibels] = field(default_factory=lambda: [0.0, 0.0])  # uniform gain range in dB
    freq_masks: Size = 0  # SpecAugment: number of frequency masks
    freq_mask_width: Size = 0
    time_masks: Size = 0
    time_mask_width: Size = 0


@dataclass
class TrainConfig:
    epochs: Count = 10
    batch_size: Count = 32  # global batch (split across processes under torchrun)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    amp: Literal["none", "bf16", "fp16"] = "none"  # autocast on CUDA; ignored (fp32) on CPU
    grad_clip: Positive | None = None  # max global gradient norm
    freeze_backbone: bool = False  # train only the classifier
    class_weights: bool = False  # weight the loss by inverse class frequency (single-label)
    label_smoothing: FractionBelowOne = 0.0
    early_stopping_patience: Count | None = None  # epochs without a better validation metric
    seed: Annotated[int, Domain(0, 2**32 - 1)] = 0  # seed * 100_003 + epoch seeds a torch.Generator (< 2**64)
    deterministic: bool = False  # torch.use_deterministic_algorithms
    checkpoint_every_steps: Count | None = None  # also save a resumable state mid-epoch
    device: str = "auto"
    max_steps_per_epoch: Count | None = None  # cap (for smoke tests and quick looks)


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
        try:
            text = path.read_bytes().decode("utf-8")
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found") from None
        except IsADirectoryError:
            raise ConfigError(f"{path}: is a directory, not a config file") from None
        except OSError as err:
            raise ConfigError(f"{path}: cannot read the config file ({err.strerror or err})") from None
        except UnicodeDecodeError as err:
            raise ConfigError(
                f"{path}: not UTF-8 text (byte {err.object[err.start]:#04x} at offset {err.start})"
            ) from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: invalid YAML ({_yaml_problem(err)})") from None
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(data).__name__}")
        for item in overrides or []:
            apply_override(data, item)
        try:
            return cls.from_dict(data)
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> RunConfig:
        """Every number in its key's domain, and the checks that need more than one field; run before any work."""
        d, t = self.data, self.train
        if d.kind in ("esc50", "folder") and not d.root:
            raise ConfigError(f"data.root is required for data.kind={d.kind!r}")
        if d.kind == "manifest" and not d.manifest:
            raise ConfigError("data.manifest is required for data.kind='manifest'")
        bad_folds = [f for f in d.folds if f not in (1, 2, 3, 4, 5)]
        if d.kind == "esc50" and (bad_folds or not d.folds):
            raise ConfigError(f"data.folds must be ESC-50 folds 1-5, got {d.folds}")
        check_values(self)
        if len(t.augment.gain_db) != 2 or t.augment.gain_db[0] > t.augment.gain_db[1]:
            raise ConfigError(f"train.augment.gain_db must be [low, high], got {t.augment.gain_db}")
        if len(t.optimizer.betas) != 2:
            raise ConfigError(f"train.optimizer.betas must have two values, got {t.optimizer.betas}")
        _check_run_name(self.run_name)
        _check_model_name(self.model.name)
        _check_device(t.device)
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
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"--set {item!r}: the value is not valid YAML ({_yaml_problem(err)})") from None
    parts = key.strip().split(".")
    canonical = _canonical_key(".".join(parts))
    aliases = [alias for alias, target in KEY_ALIASES.items() if target == canonical]
    parts = canonical.split(".")
    node = data
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {item!r}: {part!r} is not a section")
        node = child
    for alias in aliases:  # an override under either spelling replaces the file's value under either spelling
        node.pop(alias.split(".")[-1], None)
    node[parts[-1]] = value


def check_values(section: Any, prefix: str = "") -> None:
    """Every number in ``section`` (a config dataclass, walked with its sub-sections) is finite and lies in the
    domain its key's type declares; numbers under untyped keys (``model.kwargs``) must be finite too."""
    hints = typing.get_type_hints(type(section), include_extras=True)
    for f in dataclasses.fields(section):
        key, value = f"{prefix}{f.name}", getattr(section, f.name)
        if dataclasses.is_dataclass(value):
            check_values(value, key + ".")
            continue
        domain, optional = _declared_domain(hints[f.name])
        if domain is None or value is None:
            _check_finite(value, key, set())
        elif isinstance(value, list):
            for i, item in enumerate(value):
                _check_in_domain(item, f"{key}[{i}]", domain, optional)
        else:
            _check_in_domain(value, key, domain, optional)


def _declared_domain(kind: Any) -> tuple[Domain | None, bool]:
    """The Domain annotated on a field's type (under ``| None`` and ``list[...]``) and whether None is allowed."""
    optional = False
    if get_origin(kind) in (Union, types.UnionType):
        options = [k for k in get_args(kind) if k is not type(None)]
        optional = len(options) < len(get_args(kind))
        if len(options) != 1:
            return None, optional
        kind = options[0]
    if get_origin(kind) is list:
        (kind,) = get_args(kind)
    if get_origin(kind) is Annotated:
        return next((m for m in kind.__metadata__ if isinstance(m, Domain)), None), optional
    return None, optional


def _check_in_domain(value: Any, key: str, domain: Domain, optional: bool) -> None:
    allowed = f"it must be {domain}" + (" (or null)" if optional else "")
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"{key}={value!r} is not a number; {allowed}")
    if _non_finite(value):
        raise ConfigError(f"{key}={value!r} is not a finite number; {allowed}")
    if value not in domain:
        raise ConfigError(f"{key}={value!r} is out of range; {allowed}")


def _non_finite(value: Any) -> bool:
    # Integers are always finite (and math.isfinite overflows on one past 1e308); numpy floats count as numbers.
    return isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral) and not math.isfinite(value)


def _check_finite(value: Any, key: str, seen: set[int]) -> None:
    if _non_finite(value):
        raise ConfigError(f"{key}={value!r} is not a finite number")
    if isinstance(value, (dict, list, tuple)):
        if id(value) in seen:  # YAML aliases may share (or nest) a node: visit each once
            return
        seen.add(id(value))
        if isinstance(value, dict):
            for k, v in value.items():
                _check_finite(v, f"{key}.{k}", seen)
        else:
            for i, v in enumerate(value):
                _check_finite(v, f"{key}[{i}]", seen)


def _check_run_name(name: str | None) -> None:
    # The run directory is output_dir/run_name: a path in the name would put it (and its writes) elsewhere.
    if name and (name in (".", "..") or any(c in name for c in ("/", "\\", "\0"))):
        raise ConfigError(
            f"run_name={name!r} must be a plain directory name inside output_dir (no path separator, not '.' or '..')"
        )


def _check_model_name(name: str) -> None:
    from .._builder import is_directory_name
    from .._registry import UnknownModelError, resolve_model_name

    if is_directory_name(name):  # local-dir:/hf-hub:, checked when the model is built, before the run starts
        return
    try:
        resolve_model_name(name)
    except UnknownModelError as err:
        raise ConfigError(f"model.name: {err.args[0]}") from None


def _check_device(device: str) -> None:
    import torch

    if device == "auto":
        return
    try:
        torch.device(device)
    except (RuntimeError, ValueError):
        raise ConfigError(f"train.device={device!r} is not a device; use auto, cpu, cuda or cuda:N") from None


def check_output_directory(path: str | Path, what: str) -> None:
    """Raise a ConfigError naming ``path`` unless it is, or can be created as, a writable directory."""
    from .._fileio import OutputPathError
    from .._fileio import check_output_directory as check

    try:
        check(path, what=what)
    except OutputPathError as err:
        raise ConfigError(str(err)) from None


def _yaml_problem(err: yaml.YAMLError) -> str:
    """PyYAML's multi-line message as one line: where, and what."""
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or " ".join(str(err).split())
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark is not None else problem


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


#: Other spellings a key is accepted under (the names before options had one spelling across Python, CLI and YAML).
KEY_ALIASES: dict[str, str] = {"model.checkpoint": "model.checkpoint_path"}


def _canonical_key(dotted: str) -> str:
    return KEY_ALIASES.get(dotted, dotted)


def _build(cls: type, data: Any, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a mapping, got {data!r}")
    data = _resolve_aliases(data, prefix)
    hints = _field_types(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names), key=str)  # YAML keys may be numbers or null as well as strings
    if unknown:
        raise ConfigError(
            f"unknown key '{prefix}{unknown[0]}'; allowed in {prefix.rstrip('.') or 'the top level'}: {names}"
        )
    kwargs = {}
    for name in names:
        if name in data:
            kwargs[name] = _coerce(hints[name], data[name], f"{prefix}{name}")
    return cls(**kwargs)


def _resolve_aliases(data: dict[Any, Any], prefix: str) -> dict[Any, Any]:
    """``data`` with keys given under an alias renamed to their one spelling; both spellings at once is an error."""
    resolved = dict(data)
    for key in data:
        canonical = _canonical_key(f"{prefix}{key}") if isinstance(key, str) else None
        if canonical is None or canonical == f"{prefix}{key}":
            continue
        name = canonical[len(prefix) :]
        if name in data:
            raise ConfigError(f"'{prefix}{key}' and '{canonical}' are the same setting; give only '{canonical}'")
        resolved[name] = resolved.pop(key)
    return resolved


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
        try:
            return float(value)
        except OverflowError:
            raise ConfigError(f"{key}={str(value)[:12]}... ({len(str(value))} digits) is too large a number") from None
    if kind is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, got {value!r}")
        return value
    if kind is Any:
        return value
    raise ConfigError(f"{key}: unsupported type {kind}")
