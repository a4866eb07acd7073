"""Generic model building, shared by every family: names, saved directories and transformers directories in,
one ``AudioClassifier`` out (the strict weight fitting it uses is ``_weights``).

A saved directory (``local-dir:``) is untrusted input: its config decides what gets built. The config is validated
field by field, the model is then built once without storage (meta tensors) and compared with the shapes in the
weights file's header, and only a model that fits is built for real, so a few bytes of JSON cannot ask for
gigabytes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import logging
import os
import re
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from ._hf_hub import HF_HUB_PREFIX, hub_snapshot, parse_hub_name
from ._hub import (
    CheckpointLoadError,
    WeightsUnavailableError,
    load_state_dict_file,
    read_safetensors_shapes,
    resolve_checkpoint_path,
    resolve_weights,
)
from ._pretrained import MAX_NUM_CLASSES, PretrainedCfg
from ._registry import get_model_family, get_pretrained_cfg, model_entrypoint, resolve_model_name
from ._weights import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    describe_keys,
    fit_state_dict,
    load_weights,
    unwrap_state_dict,
)
from .layers import OUTPUT_ACTIVATIONS, HeadConfig
from .models._base import AudioClassifier

_logger = logging.getLogger(__name__)

LOCAL_DIR_PREFIX = "local-dir:"


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

    Loading is one sequence: the name and checkpoint are resolved into what to build and which weights file to read
    (:class:`_Source`), the model is built, the weights are loaded strictly.

    Args:
        model_name: ``architecture.tag`` (``efficientat_mn10.audioset``), an architecture (its default tag),
            ``local-dir:<path>`` for a directory written by audiokit's or transformers' ``save_pretrained``, or
            ``hf-hub:ORG/NAME[@REVISION]`` for such a directory on the Hugging Face Hub (through huggingface_hub's
            cache, offline mode and tokens).
        pretrained: download (or take from the cache) the weights named by the pretrained config.
        checkpoint_path: a local checkpoint file in the original upstream layout or ours (``.safetensors``), a
            model directory, or ``hf-hub:ORG/NAME[@REVISION]``; implies ``pretrained``. A transformers directory (its
            ``config.json`` has a ``model_type``) is built from its own config and feature extractor: the name only
            picks the family.
        num_classes: a new class count; the classifier is re-initialised (0 gives a pure embedder).
        label_names: names for a new classifier's outputs.
        kwargs: architecture arguments (e.g. ``drop_rate``), passed to the family's builder.
    """
    if is_directory_name(model_name):
        if checkpoint_path is not None or pretrained:
            _logger.debug("local-dir:/hf-hub: models carry their own weights; pretrained/checkpoint_path ignored")
        model = _build(_resolve_named_directory(model_name, kwargs))
        if num_classes is not None and num_classes != model.num_classes:
            model.reset_classifier(num_classes, label_names)
        elif label_names is not None and hasattr(model, "set_labels"):
            model.set_labels(label_names)  # a zero-shot model's classifier is made from label texts (CLAP)
        return model

    registered = get_pretrained_cfg(resolve_model_name(model_name))
    source = _resolve_registered(registered, checkpoint_path, pretrained, progress, kwargs)
    cfg = source.cfg
    if label_names is not None and num_classes is None and takes_label_texts(cfg.architecture):
        model = _build(source)
        model.set_labels(label_names)  # a zero-shot model's classifier is made from label texts (CLAP)
        return model
    new_head = num_classes is not None and num_classes != cfg.num_classes
    if new_head:
        cfg = cfg.replace(num_classes=num_classes, label_set=None, label_names=None)
        source.output_activation = None  # the new head's task decides
    if label_names is not None:
        if len(label_names) != cfg.num_classes:
            raise ValueError(f"{len(label_names)} label names given for {cfg.num_classes} classes")
        cfg = cfg.replace(label_names=tuple(label_names), label_set=None)
    source.cfg = cfg
    return _build(source, allow_new_classifier=new_head)


def takes_label_texts(architecture: str) -> bool:
    """Whether the architecture makes its classifier from label texts (``set_labels``: CLAP)."""
    return hasattr(typing.get_type_hints(model_entrypoint(architecture)).get("return"), "set_labels")


@dataclasses.dataclass
class _Source:
    """What to build and which weights to load into it: a model name and checkpoint, resolved."""

    cfg: PretrainedCfg
    model_kwargs: dict[str, Any]
    weights: Path | None = None
    head: HeadConfig | None = None
    output_activation: str | None = None
    # The config came from a directory (untrusted): the model is sized without storage and checked against the
    # weights' shapes before it is built for real.
    config_path: Path | None = None


def _resolve_registered(
    registered: PretrainedCfg,
    checkpoint_path: str | os.PathLike[str] | None,
    pretrained: bool,
    progress: bool,
    kwargs: dict[str, Any],
) -> _Source:
    if checkpoint_path is not None:
        if isinstance(checkpoint_path, str) and checkpoint_path.startswith(HF_HUB_PREFIX):
            path = hub_snapshot(checkpoint_path)
        else:
            path = Path(checkpoint_path).expanduser()
        if path.is_dir() and (path / CONFIG_NAME).is_file():
            config = _read_json_object(path / CONFIG_NAME, "model config")
            if is_transformers_config(config):
                return _resolve_transformers_dir(path, config, kwargs, registered)
            if "pretrained_cfg" in config:  # its labels, task and head would be lost under the registered config
                raise ValueError(
                    f"{path} is an audiokit save_pretrained directory: load it with create_model('local-dir:{path}') "
                    "(its config.json holds the labels, task and architecture the weights belong to)"
                )
        weights = resolve_checkpoint_path(path)
    elif pretrained:
        if not registered.url:
            raise WeightsUnavailableError(
                f"{registered.name} has no downloadable weights ({registered.notes or 'none are published'}); "
                "pass checkpoint_path= (Python) or --checkpoint-path FILE (CLI) with a file in the original layout"
            )
        weights = resolve_weights(
            registered.url,
            sha256=registered.sha256,
            md5=registered.md5,
            filename=registered.filename,
            progress=progress,
        )
    else:
        weights = None
    return _Source(registered, {**registered.model_kwargs, **kwargs}, weights)


def is_directory_name(name: str) -> bool:
    """Whether ``name`` stands for a model directory (``local-dir:PATH``, ``hf-hub:ORG/NAME[@REVISION]``) rather than
    a registered model; such a name is checked when the model is built."""
    return name.startswith((LOCAL_DIR_PREFIX, HF_HUB_PREFIX))


def _resolve_named_directory(name: str, kwargs: dict[str, Any]) -> _Source:
    """``local-dir:`` and ``hf-hub:`` names: the directory (a Hub snapshot in huggingface_hub's cache), then the same
    resolution for both."""
    if name.startswith(HF_HUB_PREFIX):
        source = _resolve_local_dir(hub_snapshot(name), kwargs)
        repo_id, _ = parse_hub_name(name)
        if source.cfg.hf_hub_id is None:  # a transformers directory's cfg: say where it came from
            source.cfg = source.cfg.replace(hf_hub_id=repo_id)
        return source
    return _resolve_local_dir(Path(name[len(LOCAL_DIR_PREFIX) :]).expanduser(), kwargs)


def _resolve_local_dir(directory: Path, kwargs: dict[str, Any]) -> _Source:
    config_path = directory / CONFIG_NAME
    if not config_path.is_file():
        raise FileNotFoundError(f"{directory}: not a saved model directory (no {CONFIG_NAME})")
    config = _read_json_object(config_path, "audiokit config")
    if is_transformers_config(config):
        return _resolve_transformers_dir(directory, config, kwargs, registered=None)
    config, cfg, head = _check_audiokit_config(config_path, config)
    return _Source(
        cfg,
        {**config.get("model_kwargs", {}), **kwargs},
        directory / WEIGHTS_NAME,
        head=head,
        output_activation=config.get("output_activation"),
        config_path=config_path,
    )


def _assemble(cfg: PretrainedCfg, kwargs: dict[str, Any], head: HeadConfig | None) -> AudioClassifier:
    model = build_model(cfg, **kwargs)
    if head is not None:
        model.reset_classifier(cfg.num_classes, cfg.get_label_names(), head=head)
    return model


def _build(source: _Source, allow_new_classifier: bool = False) -> AudioClassifier:
    """Build ``source``'s model and load its weights strictly; a directory's model is first sized without storage
    against the weights' shapes, so that a few bytes of JSON cannot ask for gigabytes."""
    checkpoint: Any = None
    if source.config_path is not None:
        try:
            with _without_storage():
                blueprint = _assemble(source.cfg, source.model_kwargs, source.head)
        except MemoryError:
            raise
        except Exception as err:  # whatever the config made the constructors trip over
            raise ValueError(
                f"{source.config_path}: cannot build {source.cfg.architecture} from this config "
                f"({type(err).__name__}: {_one_line(err)})"
            ) from err
        if source.weights is not None:
            if source.weights.suffix == ".safetensors":
                shapes = read_safetensors_shapes(source.weights)
                header: Any = {name: torch.empty(shape, device="meta") for name, shape in shapes.items()}
            else:  # a pickle has no header: read it once (weights_only), for the check and the load
                header = checkpoint = load_state_dict_file(source.weights)
            fit_state_dict(blueprint, header, str(source.weights), allow_new_classifier)
            del header
        del blueprint

    model = _assemble(source.cfg, source.model_kwargs, source.head)
    if source.output_activation is not None:
        model.output_activation = source.output_activation
    if source.weights is not None:
        if checkpoint is None:
            checkpoint = load_state_dict_file(source.weights)
        load_weights(model, checkpoint, source=str(source.weights), allow_new_classifier=allow_new_classifier)
    return model


def load_pretrained_dir(directory: str | os.PathLike[str], **kwargs: Any) -> AudioClassifier:
    """Rebuild a model written by ``save_pretrained`` (audiokit's, or transformers' for a family audiokit builds
    natively) exactly: architecture, labels, frontend, weights.

    The directory is not trusted: its config must pass validation, and the model it describes must fit the tensor
    shapes in the weights file's header, before the model is built and the weights are read.
    """
    return _build(_resolve_local_dir(Path(directory).expanduser(), kwargs))


# -- local-dir: --------------------------------------------------------------------------------------------------------
def _config_error(path: Path, problem: str) -> ValueError:
    return ValueError(f"{path}: invalid audiokit config: {problem}")


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())


def _read_json_object(path: Path, kind: str) -> dict[str, Any]:
    """A JSON object read from ``path``; anything else is one line naming the file."""
    try:
        raw = path.read_bytes()
    except PermissionError:
        raise CheckpointLoadError(f"Cannot load {path}: permission denied") from None
    except OSError as err:
        raise CheckpointLoadError(f"Cannot load {path}: {err.strerror or err}") from None
    try:
        config = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: invalid {kind}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{path}: invalid {kind}: not JSON ({err.msg} at line {err.lineno} column {err.colno})"
        ) from None
    except RecursionError:
        raise ValueError(f"{path}: invalid {kind}: not JSON (nested too deeply)") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path}: invalid {kind}: expected a JSON object, got {type(config).__name__}")
    return config


def _check_audiokit_config(
    path: Path, config: dict[str, Any]
) -> tuple[dict[str, Any], PretrainedCfg, HeadConfig | None]:
    """An audiokit ``config.json`` validated field by field: (the raw mapping, its pretrained cfg, its head)."""
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
    from .models import hf_auto

    if architecture == hf_auto.ARCHITECTURE:  # registered without a pretrained cfg: each model is its directory's
        classifier = hf_auto.CLASSIFIER
    else:
        resolve_model_name(architecture)  # clear error for an architecture this version does not know
        classifier = get_pretrained_cfg(architecture).classifier
    if cfg.architecture != architecture:
        raise _config_error(path, f"pretrained_cfg.architecture {cfg.architecture!r} is not {architecture!r}")
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


# -- transformers directories -----------------------------------------------------------------------------------------
# A family module that builds transformers checkpoints natively declares HF_MODEL_TYPE (the config's model_type) and
# provides HF_ARCHITECTURES (transformers class -> whether it has the classification head), HF_HEAD_PREFIX,
# HF_EXTRACTOR, HF_DEFAULT_ARCHITECTURE, model_kwargs_from_transformers(config, with_head) and
# frontend_from_transformers(extractor, config) -> (FrontendCfg, architecture arguments).
def transformers_families() -> dict[str, str]:
    """transformers ``model_type`` -> the audiokit family (module in ``audiokit.models``) that builds it natively."""
    from . import models  # the package imports (and registers) every family

    families = {}
    for module in vars(models).values():
        model_type = getattr(module, "HF_MODEL_TYPE", None)
        if isinstance(module, types.ModuleType) and isinstance(model_type, str):
            families[model_type] = module.__name__.rsplit(".", 1)[1]
    return families


def transformers_paths_note() -> str:
    """Which path a transformers directory (``local-dir:``, ``hf-hub:``) takes, by its config's ``model_type``
    (what ``audiokit models`` says beside the registered names, which are all native). Importing transformers for
    its exact list of audio-classification model types would take seconds, so the generic ones are examples."""
    from .models import hf_auto

    return (
        "Registered names are built by audiokit's own code (native). Transformers directories (local-dir:DIR, "
        f"hf-hub:ORG/NAME[@REVISION]) of model_type {', '.join(sorted(transformers_families()))} are built natively "
        "too; any other model_type transformers' AutoModelForAudioClassification knows (whisper, data2vec-audio, "
        "sew, sew-d, unispeech, unispeech-sat, wav2vec2-bert, wav2vec2-conformer, ...) runs through the generic "
        f"adapter {hf_auto.ARCHITECTURE} (transformers' own model and feature extractor)."
    )


TRANSFORMERS_EXTRACTOR_NAMES = ("preprocessor_config.json", "feature_extractor_config.json")
# problem_type -> (task, output activation), as transformers' audio-classification pipeline applies them.
_PROBLEM_TYPES: dict[str | None, tuple[str, str]] = {
    None: ("multiclass", "softmax"),
    "single_label_classification": ("multiclass", "softmax"),
    "multi_label_classification": ("multilabel", "sigmoid"),
    "regression": ("multiclass", "identity"),
}


def is_transformers_config(config: Mapping[str, Any]) -> bool:
    """Whether a parsed ``config.json`` was written by transformers (it names a ``model_type``; audiokit's own names
    a ``pretrained_cfg``)."""
    return "model_type" in config and "pretrained_cfg" not in config


def _normalised(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _architecture_defaults(architecture: str) -> dict[str, Any]:
    """Keyword defaults of an architecture's builder chain (entrypoint, then the class and its bases)."""
    entrypoint = model_entrypoint(architecture)
    functions: list[Callable[..., Any]] = [entrypoint]
    cls = typing.get_type_hints(entrypoint).get("return")
    if isinstance(cls, type) and issubclass(cls, AudioClassifier):
        functions += [vars(klass)["__init__"] for klass in cls.__mro__ if "__init__" in vars(klass)]
    defaults: dict[str, Any] = {}
    for fn in functions:
        for p in inspect.signature(fn).parameters.values():
            if p.default is not inspect.Parameter.empty:
                defaults.setdefault(p.name, p.default)
    return defaults


def _differences(cfg: PretrainedCfg, registered: PretrainedCfg) -> list[str]:
    """What a transformers directory's model has that the registered variant has not, field by field."""
    ours = {**_architecture_defaults(registered.architecture), **registered.model_kwargs}
    out = [
        f"{k} {v!r} (registered {_normalised(ours.get(k))!r})"
        for k, v in cfg.model_kwargs.items()
        if _normalised(v) != _normalised(ours.get(k))
    ]
    theirs_fe, ours_fe = cfg.frontend.to_dict(), registered.frontend.to_dict()
    out += [f"frontend.{k} {v!r} (registered {ours_fe[k]!r})" for k, v in theirs_fe.items() if v != ours_fe[k]]
    if cfg.num_classes != registered.num_classes:
        out.append(f"num_classes {cfg.num_classes} (registered {registered.num_classes})")
    if cfg.task != registered.task:
        out.append(f"task {cfg.task} (registered {registered.task})")
    if cfg.num_classes and cfg.get_label_names() != registered.get_label_names():
        out.append("labels: the directory's id2label")
    return out


def _transformers_head(
    config_path: Path, hf_config: Any, with_head: bool
) -> tuple[int, str, tuple[str, ...], str | None]:
    """(num_classes, task, label names in id order, output activation) of a transformers config."""
    if not with_head:
        return 0, "multiclass", (), None
    problem = hf_config.problem_type
    if problem not in _PROBLEM_TYPES:
        raise ValueError(f"{config_path}: problem_type {problem!r} is none of {sorted(map(str, _PROBLEM_TYPES))}")
    task, activation = _PROBLEM_TYPES[problem]
    id2label = hf_config.id2label
    missing = [i for i in range(hf_config.num_labels) if i not in id2label]
    if missing:
        names = describe_keys([str(i) for i in missing])
        raise ValueError(f"{config_path}: id2label has no name for class id(s) {names}")
    labels = tuple(str(id2label[i]) for i in range(hf_config.num_labels))
    return len(labels), task, labels, activation


def _resolve_transformers_dir(
    directory: Path, config: dict[str, Any], kwargs: dict[str, Any], registered: PretrainedCfg | None
) -> _Source:
    """A transformers ``save_pretrained`` directory -> what to build: the architecture from ``config.json``, the
    frontend from the feature extractor's file, the labels and task from ``id2label`` and ``problem_type``.

    With ``registered`` (a family name was given) the name picks the family, and one log line says what differs
    from the registered variant.
    """
    import importlib

    from transformers import CONFIG_MAPPING

    config_path = directory / CONFIG_NAME
    if config.get("auto_map"):
        raise ValueError(
            f"{config_path}: asks for code shipped with the model (auto_map); audiokit never runs a directory's code "
            "(trust_remote_code is never enabled)"
        )
    # transformers builds num_labels label entries while it parses the config: bounded first, so a few bytes of JSON
    # cannot ask for gigabytes.
    for key, count in (("num_labels", config.get("num_labels")), ("id2label", len(config.get("id2label") or ()))):
        if count is not None and not (
            isinstance(count, int) and not isinstance(count, bool) and 0 <= count <= MAX_NUM_CLASSES
        ):
            raise ValueError(f"{config_path}: {key} must give 0..{MAX_NUM_CLASSES} classes, got {count!r}")
    model_type = config["model_type"]
    architectures = config.get("architectures")
    if architectures is not None and not (
        isinstance(architectures, list) and all(isinstance(a, str) for a in architectures)
    ):
        raise ValueError(f"{config_path}: architectures must be a list of class names, got {architectures!r}")
    hf_class = architectures[0] if architectures else None
    what = hf_class or f"model_type {model_type!r}"
    native = transformers_families()
    family_name = native.get(model_type) if isinstance(model_type, str) else None
    if family_name is None:
        if registered is not None:
            raise ValueError(
                f"{config_path} is a {what} directory, which no audiokit family builds natively, not one of "
                f"{registered.name} (family {get_model_family(registered.architecture)}); load it with "
                f"create_model('local-dir:{directory}') (the generic transformers path)"
            )
        return _resolve_generic_transformers_dir(directory, config, kwargs, what)
    if registered is not None:
        wanted = get_model_family(registered.architecture)
        if wanted != family_name:
            raise ValueError(
                f"{config_path} is a {what} directory (audiokit family {family_name}), not one of "
                f"{registered.name} (family {wanted}); load it with create_model('local-dir:{directory}')"
            )
    family = importlib.import_module(f"{__package__}.models.{family_name}")
    if hf_class is not None and hf_class not in family.HF_ARCHITECTURES:
        raise ValueError(
            f"{config_path}: {hf_class} has no native audiokit path (the {family_name} family builds "
            f"{', '.join(family.HF_ARCHITECTURES)})"
        )
    weights = resolve_checkpoint_path(directory)
    if hf_class is None:  # a config saved on its own: whether the head is there is read off the weights
        names = _weight_names(weights)
        with_head = any(k.startswith(family.HF_HEAD_PREFIX) for k in names)
    else:
        with_head = family.HF_ARCHITECTURES[hf_class]
    try:
        hf_config = CONFIG_MAPPING[model_type].from_dict(config)
        model_kwargs = family.model_kwargs_from_transformers(hf_config, with_head)
    except Exception as err:  # transformers' strict field validation, or what the family refuses
        raise ValueError(f"{config_path}: {_one_line(err)}") from None
    num_classes, task, labels, activation = _transformers_head(config_path, hf_config, with_head)

    extractor_path, extractor = _transformers_extractor(directory)
    if extractor_path is not None:
        declared = extractor.get("feature_extractor_type")
        if declared is not None and declared != family.HF_EXTRACTOR:
            raise ValueError(f"{extractor_path}: a {declared!r}, not the {family.HF_EXTRACTOR} of {what}")
        try:
            frontend, extractor_kwargs = family.frontend_from_transformers(extractor, hf_config)
        except Exception as err:
            raise ValueError(f"{extractor_path}: {_one_line(err)}") from None
    elif registered is not None:
        _logger.warning(
            "%s: no %s; the input preprocessing of %s is assumed",
            directory,
            " or ".join(TRANSFORMERS_EXTRACTOR_NAMES),
            registered.name,
        )
        frontend = registered.frontend
        extractor_kwargs = {k: v for k, v in registered.model_kwargs.items() if k == "do_normalize"}
    else:
        raise FileNotFoundError(
            f"{directory}: no {' or '.join(TRANSFORMERS_EXTRACTOR_NAMES)}, so the input preprocessing is unknown; "
            "save the feature extractor into the directory, or name the family "
            "(create_model('<name>', checkpoint_path=...)) to take that variant's"
        )

    directory_kwargs = getattr(family, "kwargs_from_transformers_dir", None)
    if directory_kwargs is not None:  # what else the family reads from the directory (CLAP: its tokenizer)
        extractor_kwargs = {**extractor_kwargs, **directory_kwargs(directory)}
    built = {**model_kwargs, **extractor_kwargs}
    conflicts = [
        f"{k}={v!r} (the directory's is {built[k]!r})"
        for k, v in kwargs.items()
        if k in built and _normalised(v) != _normalised(built[k])
    ]
    if conflicts:
        raise ValueError(
            f"{config_path} decides the architecture; the argument(s) {'; '.join(conflicts)} contradict it"
        )
    built.update(kwargs)
    if registered is not None:
        cfg = registered.replace(
            frontend=frontend,
            num_classes=num_classes,
            task=task,
            label_set=None,
            label_names=labels,
            model_kwargs=built,
            clip_seconds=registered.clip_seconds if frontend == registered.frontend else None,
        )
        differences = _differences(cfg, registered)
        if differences:
            _logger.warning(
                "%s: built from its %s and %s; it differs from %s in %s",
                directory,
                CONFIG_NAME,
                extractor_path.name if extractor_path else "the registered preprocessing",
                registered.name,
                "; ".join(differences),
            )
    else:
        architecture = family.HF_DEFAULT_ARCHITECTURE
        cfg = PretrainedCfg(
            architecture=architecture,
            tag="transformers",
            frontend=frontend,
            num_classes=num_classes,
            task=task,
            label_names=labels,
            classifier=get_pretrained_cfg(architecture).classifier,
            source=str(directory),
            model_kwargs=built,
            notes=f"built from the transformers {what} in {directory}",
        )
    return _Source(cfg, built, weights, output_activation=activation, config_path=config_path)


def _resolve_generic_transformers_dir(
    directory: Path, config: dict[str, Any], kwargs: dict[str, Any], what: str
) -> _Source:
    """A transformers directory of a model_type without a native family -> the generic adapter
    (``models/hf_auto.py``): transformers' own model and feature extractor, parsed from the directory's files."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING_NAMES

    from .models import hf_auto

    config_path = directory / CONFIG_NAME
    try:
        hf_config = hf_auto.parse_transformers_config(config)
    except Exception as err:  # transformers' own validation, or what the adapter refuses
        raise ValueError(f"{config_path}: {what}: {_one_line(err)}") from None
    expected = MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING_NAMES[hf_config.model_type]
    architectures = config.get("architectures") or [expected]
    if architectures[0] != expected:
        raise ValueError(
            f"{config_path}: {architectures[0]} is no audio-classification model; audiokit's generic transformers "
            f"path builds {expected} (AutoModelForAudioClassification) for model_type {hf_config.model_type!r}"
        )
    extractor_path = next((directory / n for n in TRANSFORMERS_EXTRACTOR_NAMES if (directory / n).is_file()), None)
    if extractor_path is None:
        raise FileNotFoundError(
            f"{directory}: no {' or '.join(TRANSFORMERS_EXTRACTOR_NAMES)}, so the input preprocessing of {what} is "
            "unknown; save its feature extractor into the directory"
        )
    extractor = _read_json_object(extractor_path, "feature extractor config")
    try:
        fe = hf_auto.parse_extractor(extractor, hf_config.model_type)
    except Exception as err:
        raise ValueError(f"{extractor_path}: {_one_line(err)}") from None
    num_classes, task, labels, activation = _transformers_head(config_path, hf_config, True)
    built = {"hf_config": config, "extractor": extractor, **kwargs}
    fixed = hf_auto.fixed_input_samples(fe)
    cfg = PretrainedCfg(
        architecture=hf_auto.ARCHITECTURE,
        tag="transformers",
        frontend=hf_auto.frontend_cfg(fe),
        num_classes=num_classes,
        task=task,
        label_names=labels,
        classifier=hf_auto.CLASSIFIER,
        clip_seconds=fixed / fe.sampling_rate if fixed else None,
        source=str(directory),
        model_kwargs=built,
        notes=(
            f"built from the transformers {what} in {directory} by the generic path ({expected} + "
            f"{type(fe).__name__}, run as transformers runs them)"
        ),
    )
    weights = resolve_checkpoint_path(directory)
    return _Source(cfg, built, weights, output_activation=activation, config_path=config_path)


def _transformers_extractor(directory: Path) -> tuple[Path | None, dict[str, Any]]:
    """The feature extractor's saved settings and their file: its own, or the ``feature_extractor`` entry of the
    ``processor_config.json`` that transformers 5 writes for a processor; (None, {}) when there is neither."""
    path = next((directory / n for n in TRANSFORMERS_EXTRACTOR_NAMES if (directory / n).is_file()), None)
    if path is not None:
        return path, _read_json_object(path, "feature extractor config")
    path = directory / "processor_config.json"
    if path.is_file():
        extractor = _read_json_object(path, "processor config").get("feature_extractor")
        if isinstance(extractor, dict):
            return path, extractor
    return None, {}


def _weight_names(weights: Path) -> list[str]:
    if weights.suffix == ".safetensors":
        return list(read_safetensors_shapes(weights))
    return list(unwrap_state_dict(load_state_dict_file(weights), str(weights)))
