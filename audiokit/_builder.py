"""Generic model building and weight loading, shared by every family.

Loading is strict: a checkpoint must provide exactly the model's tensors, except the classifier when the caller asked
for a different class count (then it is re-initialised, and that is logged). Everything else that differs is an
error that names the keys, and so is a tensor holding NaN or inf.

A saved directory (``local-dir:``) is untrusted input: its config decides what gets built. The config is validated
field by field, the model is then built once without storage (meta tensors) and compared with the shapes in the
weights file's header, and only a model that fits is built for real, so a few bytes of JSON cannot ask for
gigabytes.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import os
import re
import typing
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from . import __version__
from ._fileio import atomic_write
from ._pretrained import PretrainedCfg
from ._registry import get_pretrained_cfg, model_entrypoint, resolve_model_name
from .layers import OUTPUT_ACTIVATIONS, HeadConfig
from .models._base import AudioClassifier

_logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
LOCAL_DIR_PREFIX = "local-dir:"


class CheckpointMismatchError(ValueError):
    """A checkpoint whose tensors do not fit the model; the message names the differing keys."""


def _describe(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return f"{shown}, ... ({len(keys)} in all)" if len(keys) > limit else shown


def unwrap_state_dict(checkpoint: Any, source: str) -> dict[str, torch.Tensor]:
    """The flat ``{name: tensor}`` mapping inside a loaded checkpoint (``{'model': ...}``, ``{'state_dict': ...}``),
    without the ``module.`` prefix that ``nn.DataParallel`` adds to every key."""
    obj = checkpoint
    for wrapper in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, Mapping) and wrapper in obj and isinstance(obj[wrapper], Mapping):
            obj = obj[wrapper]
            break
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointMismatchError(f"{source}: expected a state dict (a mapping of tensor names to tensors)")
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointMismatchError(f"{source}: the checkpoint holds no tensors")
    if all(k.startswith("module.") for k in tensors):  # saved from nn.DataParallel / DistributedDataParallel
        tensors = {k[len("module.") :]: v for k, v in tensors.items()}
    return tensors


def _fit(
    model: AudioClassifier, checkpoint: Any, source: str, allow_new_classifier: bool
) -> tuple[dict[str, torch.Tensor], set[str]]:
    """The checkpoint's tensors in the model's names, checked name by name and shape by shape against the model
    (either may hold meta tensors: only shapes are compared), and the classifier's key names."""
    state = model.checkpoint_filter_fn(unwrap_state_dict(checkpoint, source))
    expected = model.state_dict()
    head = model.pretrained_cfg.classifier
    head_keys = {k for k in expected if k.startswith(head + ".")} | {f"{head}.weight", f"{head}.bias"}

    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [k for k in state if k in expected and state[k].shape != expected[k].shape]
    if allow_new_classifier:
        dropped = sorted(k for k in state if k in head_keys and (k in mismatched or k not in expected))
        if dropped:
            _logger.info("%s: classifier tensors %s re-initialised for %d classes", source, dropped, model.num_classes)
        for k in dropped:
            del state[k]
        missing = [k for k in missing if k not in head_keys]
        unexpected = [k for k in unexpected if k not in head_keys]
        mismatched = [k for k in mismatched if k not in head_keys]
    problems = []
    if missing:
        problems.append(f"missing {_describe(missing)}")
    if unexpected:
        problems.append(f"unexpected {_describe(unexpected)}")
    if mismatched:
        shapes = [f"{k} {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}" for k in mismatched]
        problems.append(f"shape mismatch {_describe(shapes)}")
    if problems:
        raise CheckpointMismatchError(
            f"{source} does not fit {model.pretrained_cfg.architecture}: "
            + "; ".join(problems)
            + ". Is it a checkpoint for another model? (num_classes=N re-initialises only the classifier)"
        )
    return state, head_keys


def _all_finite(tensor: torch.Tensor) -> bool:
    # In slices, so that checking a large embedding does not allocate a boolean copy of it.
    flat = tensor.detach().reshape(-1)
    return all(bool(torch.isfinite(part).all()) for part in flat.split(1 << 22))


def _check_finite(state: Mapping[str, torch.Tensor], source: str) -> None:
    bad = [
        k
        for k, v in state.items()
        if (v.is_floating_point() or v.is_complex()) and v.device.type != "meta" and not _all_finite(v)
    ]
    if bad:
        raise CheckpointMismatchError(
            f"{source}: {len(bad)} tensor(s) hold NaN or inf: {_describe(bad, limit=5)}; the weights are damaged "
            "(or come from a diverged training run) and would give NaN scores"
        )


def load_weights(
    model: AudioClassifier,
    checkpoint: Any,
    *,
    source: str,
    allow_new_classifier: bool = False,
) -> None:
    """Load ``checkpoint`` (any object read by ``load_state_dict_file``) into ``model`` strictly.

    ``allow_new_classifier`` permits the final layer's tensors to be absent or of another shape: they keep their fresh
    initialisation (fine-tuning a pretrained backbone on a new class count). Floating-point tensors must be finite.
    """
    state, head_keys = _fit(model, checkpoint, source, allow_new_classifier)
    _check_finite(state, source)
    incompatible = model.load_state_dict(state, strict=False)
    leftover = [k for k in incompatible.missing_keys if k not in head_keys] + list(incompatible.unexpected_keys)
    assert not leftover, leftover  # guarded by the checks above


# -- architecture arguments and storage-free builds --------------------------------------------------------------------
def _keyword_arguments(fn: Callable[..., Any]) -> tuple[set[str], bool]:
    """Arguments of ``fn`` a caller may give by name (those with defaults: the required ones are supplied by the
    subclass or entrypoint that calls it), and whether it passes ``**kwargs`` on."""
    params = inspect.signature(fn).parameters.values()
    named = {
        p.name
        for p in params
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.default is not inspect.Parameter.empty
    }
    return named, any(p.kind is p.VAR_KEYWORD for p in params)


def architecture_arguments(architecture: str) -> set[str] | None:
    """The keyword arguments an architecture's builder accepts, or None where that cannot be read off the code.

    Entrypoints pass ``**kwargs`` to the class named by their return annotation, whose constructors may pass them
    on to their base classes' (PANNs: ``Cnn14`` -> ``_CnnStack`` -> ``PannsClassifier``), so the chain is followed.
    """
    entrypoint = model_entrypoint(architecture)
    names, forwards = _keyword_arguments(entrypoint)
    if not forwards:
        return names
    try:
        cls = typing.get_type_hints(entrypoint).get("return")
    except Exception:  # an annotation that does not resolve: nothing to go by
        return None
    if not (isinstance(cls, type) and issubclass(cls, AudioClassifier)):
        return None
    for klass in cls.__mro__:
        if "__init__" in vars(klass):
            more, forwards = _keyword_arguments(vars(klass)["__init__"])
            names |= more
            if not forwards:
                return names
    return None


# Integer architecture arguments are widths, depths, kernel sizes and counts; the largest any family uses is a few
# thousand. Some are allocated for real even in a storage-free build (transformers makes ``masked_spec_embed`` with
# the legacy ``torch.Tensor(hidden_size)``, which no device context reaches), so they are bounded before building.
MAX_INT_ARGUMENT = 1 << 16
# Sizing a registered architecture takes at most ~5000 tensor operations (DyMN); a blueprint that needs this many is
# refused (num_layers=10**6 would otherwise build a million Python modules).
MAX_BLUEPRINT_OPERATIONS = 100_000


def _check_arguments(architecture: str, kwargs: Mapping[str, Any]) -> None:
    accepted = architecture_arguments(architecture)
    if accepted is not None:
        unknown = sorted(set(kwargs) - accepted)
        if unknown:
            raise ValueError(
                f"{architecture} takes no argument(s) {', '.join(unknown)}; it takes {', '.join(sorted(accepted))}"
            )
    for name, value in kwargs.items():
        values = value if isinstance(value, (list, tuple)) else [value]
        if any(isinstance(v, int) and not isinstance(v, bool) and abs(v) > MAX_INT_ARGUMENT for v in values):
            raise ValueError(f"{architecture} argument {name}={value!r} exceeds {MAX_INT_ARGUMENT}")


# In-place operations that only change values, which meta tensors do not have, so they are skipped on meta tensors:
# several (normal_, erfinv_, clamp_) run as Python decompositions whose first use imports torch._dynamo (a second).
_VALUE_ONLY_INPLACE = frozenset(
    {
        "normal_", "uniform_", "erfinv_", "clamp_", "clamp_min_", "clamp_max_", "clip_", "mul_", "add_", "sub_",
        "div_", "fill_", "zero_", "copy_", "bernoulli_", "exponential_", "random_", "log_normal_", "cauchy_",
        "geometric_",
    }
)  # fmt: skip


class _StoragelessBuild(TorchFunctionMode):
    """Used inside ``torch.device("meta")`` (the frontend builds its matrices on the host all the same, in its own
    ``torch.device("cpu")``: they need values, and FrontendCfg's validation bounds their size). Weight initialisation
    of meta tensors is skipped, and a build that takes more than MAX_BLUEPRINT_OPERATIONS tensor operations is
    stopped."""

    def __init__(self) -> None:
        super().__init__()
        self.operations = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if getattr(func, "__name__", "") == "_set_grad_enabled":
            # torch.no_grad's __exit__ restores the grad mode through here: refusing it would leave autograd off for
            # the whole process.
            return func(*args, **kwargs)
        self.operations += 1
        if self.operations > MAX_BLUEPRINT_OPERATIONS:
            raise ValueError(
                f"the model described takes over {MAX_BLUEPRINT_OPERATIONS} tensor operations to build, far more "
                "than any audiokit architecture"
            )
        target = args[0] if args else kwargs.get("tensor", kwargs.get("self"))  # nn.init takes tensor=
        if (
            isinstance(target, torch.Tensor)
            and target.device.type == "meta"
            and (
                getattr(func, "__module__", None) == "torch.nn.init"
                or getattr(func, "__name__", "") in _VALUE_ONLY_INPLACE
            )
        ):
            return target
        return func(*args, **kwargs)


@contextlib.contextmanager
def _without_storage() -> Iterator[None]:
    """Tensors created in this context are meta tensors (shape and dtype only), apart from the frontend's."""
    grad_enabled = torch.is_grad_enabled()
    try:
        with torch.device("meta"), _StoragelessBuild():
            yield
    finally:
        torch.set_grad_enabled(grad_enabled)  # whatever a build interrupted half-way had switched


def build_model(pretrained_cfg: PretrainedCfg, **kwargs: Any) -> AudioClassifier:
    """Instantiate the architecture named in ``pretrained_cfg`` with random weights.

    Arguments the architecture does not take are refused by name (ValueError) before anything is built.
    """
    architecture = pretrained_cfg.architecture
    _check_arguments(architecture, kwargs)
    try:
        model = model_entrypoint(architecture)(pretrained_cfg=pretrained_cfg, **kwargs)
    except TypeError as err:
        # An argument the entrypoint fixes itself (bcresnet_1's tau, efficientat_mn10's width_mult): the signatures
        # read by _check_arguments cannot show it.
        fixed = re.search(r"got multiple values for (?:keyword )?argument '(\w+)'", str(err))
        if fixed and fixed[1] in kwargs:
            raise ValueError(f"{architecture} sets {fixed[1]} itself; it cannot be given") from err
        raise
    model.model_kwargs = dict(kwargs)
    return model


def create_model(
    model_name: str,
    pretrained: bool = False,
    checkpoint_path: str | os.PathLike[str] | None = None,
    num_classes: int | None = None,
    label_names: list[str] | tuple[str, ...] | None = None,
    progress: bool = True,
    **kwargs: Any,
) -> AudioClassifier:
    """Build a registered model, optionally with weights.

    Args:
        model_name: ``architecture.tag`` (``efficientat_mn10.audioset``), an architecture (its default tag), or
            ``local-dir:<path>`` for a directory written by ``save_pretrained``.
        pretrained: download (or take from the cache) the weights named by the pretrained config.
        checkpoint_path: a local checkpoint file in the original upstream layout or ours (``.safetensors``);
            implies ``pretrained``.
        num_classes: a new class count; the classifier is re-initialised (0 gives a pure embedder).
        label_names: names for a new classifier's outputs.
        kwargs: architecture arguments (e.g. ``drop_rate``), passed to the family's builder.
    """
    if model_name.startswith(LOCAL_DIR_PREFIX):
        if checkpoint_path is not None or pretrained:
            _logger.debug("local-dir: models carry their own weights; pretrained/checkpoint_path ignored")
        model = load_pretrained_dir(model_name[len(LOCAL_DIR_PREFIX) :], **kwargs)
        if num_classes is not None and num_classes != model.num_classes:
            model.reset_classifier(num_classes, label_names)
        return model

    cfg = get_pretrained_cfg(resolve_model_name(model_name))
    new_head = num_classes is not None and num_classes != cfg.num_classes
    if new_head:
        cfg = cfg.replace(num_classes=num_classes, label_set=None, label_names=None)
    if label_names is not None:
        if len(label_names) != cfg.num_classes:
            raise ValueError(f"{len(label_names)} label names given for {cfg.num_classes} classes")
        cfg = cfg.replace(label_names=tuple(label_names), label_set=None)
    model = build_model(cfg, **{**cfg.model_kwargs, **kwargs})

    if checkpoint_path is not None:
        from ._hub import load_state_dict_file, resolve_checkpoint_path

        path = resolve_checkpoint_path(checkpoint_path)
        load_weights(model, load_state_dict_file(path), source=str(path), allow_new_classifier=new_head)
    elif pretrained:
        from ._hub import WeightsUnavailableError, load_state_dict_file, resolve_weights

        if not cfg.url:
            raise WeightsUnavailableError(
                f"{cfg.name} has no downloadable weights ({cfg.notes or 'none are published'}); "
                "pass checkpoint_path= (Python) or --checkpoint FILE (CLI) with a file in the original layout"
            )
        path = resolve_weights(cfg.url, sha256=cfg.sha256, filename=cfg.filename, progress=progress)
        load_weights(model, load_state_dict_file(path), source=str(path), allow_new_classifier=new_head)
    return model


# -- save_pretrained / local-dir: -------------------------------------------------------------------------------------
def save_pretrained_dir(model: AudioClassifier, directory: Path) -> Path:
    """``config.json`` (architecture, arguments, pretrained cfg with labels and frontend) + ``model.safetensors``."""
    from safetensors.torch import save

    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    config = {
        "audiokit_version": __version__,
        "architecture": model.pretrained_cfg.architecture,
        "model_kwargs": model.model_kwargs,
        "output_activation": model.output_activation,
        "head": model.head_cfg.to_dict() if model.head_cfg is not None else None,
        "pretrained_cfg": model.pretrained_cfg.to_dict(),
    }
    # Weights first, config last: a directory with a config.json is complete.
    atomic_write(directory / WEIGHTS_NAME, save(state, metadata={"format": "pt"}))
    atomic_write(directory / CONFIG_NAME, (json.dumps(config, indent=2) + "\n").encode())
    return directory


def _config_error(path: Path, problem: str) -> ValueError:
    return ValueError(f"{path}: invalid audiokit config: {problem}")


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())


def _read_config(path: Path) -> tuple[dict[str, Any], PretrainedCfg, HeadConfig | None]:
    """``config.json`` parsed and validated field by field: (the raw mapping, its pretrained cfg, its head)."""
    from ._hub import CheckpointLoadError

    try:
        raw = path.read_bytes()
    except PermissionError:
        raise CheckpointLoadError(f"Cannot load {path}: permission denied") from None
    except OSError as err:
        raise CheckpointLoadError(f"Cannot load {path}: {err.strerror or err}") from None
    try:
        config = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise _config_error(path, f"not UTF-8 text ({err.reason} at byte {err.start})") from None
    except json.JSONDecodeError as err:
        raise _config_error(path, f"not JSON ({err.msg} at line {err.lineno} column {err.colno})") from None
    except RecursionError:
        raise _config_error(path, "not JSON (nested too deeply)") from None
    if not isinstance(config, dict):
        raise _config_error(path, f"expected a JSON object, got {type(config).__name__}")
    for key in ("architecture", "pretrained_cfg"):
        if key not in config:
            raise _config_error(path, f"no {key!r}")
    try:
        cfg = PretrainedCfg.from_dict(config["pretrained_cfg"])
    except (TypeError, ValueError) as err:
        raise _config_error(path, f"pretrained_cfg: {_one_line(err)}") from None
    architecture = config["architecture"]
    if not isinstance(architecture, str):
        raise _config_error(path, f"architecture must be a string, got {architecture!r}")
    resolve_model_name(architecture)  # clear error for an architecture this version does not know
    if cfg.architecture != architecture:
        raise _config_error(path, f"pretrained_cfg.architecture {cfg.architecture!r} is not {architecture!r}")
    classifier = get_pretrained_cfg(architecture).classifier
    if cfg.classifier != classifier:
        raise _config_error(path, f"pretrained_cfg.classifier {cfg.classifier!r}: {architecture}'s is {classifier!r}")
    if not isinstance(config.get("model_kwargs", {}), dict):
        raise _config_error(path, "model_kwargs must be a JSON object")
    head = None
    if config.get("head"):
        if not isinstance(config["head"], dict):
            raise _config_error(path, "head must be a JSON object")
        try:
            head = HeadConfig.from_dict(config["head"])
        except (TypeError, ValueError) as err:
            raise _config_error(path, f"head: {_one_line(err)}") from None
    activation = config.get("output_activation")
    if activation is not None and activation not in OUTPUT_ACTIVATIONS:
        raise _config_error(path, f"output_activation must be one of {OUTPUT_ACTIVATIONS}, got {activation!r}")
    return config, cfg, head


def _assemble(cfg: PretrainedCfg, kwargs: dict[str, Any], head: HeadConfig | None) -> AudioClassifier:
    model = build_model(cfg, **kwargs)
    if head is not None:
        model.reset_classifier(cfg.num_classes, cfg.get_label_names(), head=head)
    return model


def load_pretrained_dir(directory: str | os.PathLike[str], **kwargs: Any) -> AudioClassifier:
    """Rebuild a model written by ``save_pretrained`` exactly (architecture, labels, frontend, weights).

    The directory is not trusted: its config must pass validation, and the model it describes must fit the tensor
    shapes in the weights file's header, before the model is built and the weights are read.
    """
    from ._hub import load_state_dict_file, read_safetensors_shapes

    directory = Path(directory).expanduser()
    config_path = directory / CONFIG_NAME
    if not config_path.is_file():
        raise FileNotFoundError(f"{directory}: not a saved audiokit model (no {CONFIG_NAME})")
    config, cfg, head = _read_config(config_path)
    model_kwargs = {**config.get("model_kwargs", {}), **kwargs}
    weights = directory / WEIGHTS_NAME
    try:
        with _without_storage():
            blueprint = _assemble(cfg, model_kwargs, head)
    except MemoryError:
        raise
    except Exception as err:  # whatever the config made the constructors trip over
        raise ValueError(
            f"{config_path}: cannot build {cfg.architecture} from this config ({type(err).__name__}: {_one_line(err)})"
        ) from err
    header = {name: torch.empty(shape, device="meta") for name, shape in read_safetensors_shapes(weights).items()}
    _fit(blueprint, header, str(weights), allow_new_classifier=False)
    del blueprint, header

    model = _assemble(cfg, model_kwargs, head)
    if config.get("output_activation") is not None:
        model.output_activation = config["output_activation"]
    load_weights(model, load_state_dict_file(weights), source=str(weights))
    return model
