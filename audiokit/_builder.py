"""Generic model building and weight loading, shared by every family.

Loading is strict: a checkpoint must provide exactly the model's tensors, except the classifier when the caller asked
for a different class count (then it is re-initialised, and that is logged). Everything else that differs is an
error that names the keys.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from . import __version__
from ._fileio import atomic_write
from ._pretrained import PretrainedCfg
from ._registry import get_pretrained_cfg, model_entrypoint, resolve_model_name
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


def load_weights(
    model: AudioClassifier,
    checkpoint: Any,
    *,
    source: str,
    allow_new_classifier: bool = False,
) -> None:
    """Load ``checkpoint`` (any object read by ``load_state_dict_file``) into ``model`` strictly.

    ``allow_new_classifier`` permits the final layer's tensors to be absent or of another shape: they keep their fresh
    initialisation (fine-tuning a pretrained backbone on a new class count).
    """
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
    incompatible = model.load_state_dict(state, strict=False)
    leftover = [k for k in incompatible.missing_keys if k not in head_keys] + list(incompatible.unexpected_keys)
    assert not leftover, leftover  # guarded by the checks above


def build_model(pretrained_cfg: PretrainedCfg, **kwargs: Any) -> AudioClassifier:
    """Instantiate the architecture named in ``pretrained_cfg`` with random weights."""
    model = model_entrypoint(pretrained_cfg.architecture)(pretrained_cfg=pretrained_cfg, **kwargs)
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


def load_pretrained_dir(directory: str | os.PathLike[str], **kwargs: Any) -> AudioClassifier:
    """Rebuild a model written by ``save_pretrained`` exactly (architecture, labels, frontend, weights)."""
    from ._hub import load_state_dict_file

    directory = Path(directory).expanduser()
    config_path = directory / CONFIG_NAME
    if not config_path.is_file():
        raise FileNotFoundError(f"{directory}: not a saved audiokit model (no {CONFIG_NAME})")
    try:
        config = json.loads(config_path.read_text())
        cfg = PretrainedCfg.from_dict(config["pretrained_cfg"])
        architecture = config["architecture"]
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{config_path}: invalid audiokit config ({err})") from err
    resolve_model_name(architecture)  # clear error for an architecture this version does not know
    model = build_model(cfg, **{**config.get("model_kwargs", {}), **kwargs})
    if config.get("head"):
        from .layers import HeadConfig

        model.reset_classifier(cfg.num_classes, cfg.get_label_names(), head=HeadConfig.from_dict(config["head"]))
    model.output_activation = config.get("output_activation", model.output_activation)
    weights = directory / WEIGHTS_NAME
    load_weights(model, load_state_dict_file(weights), source=str(weights))
    return model
