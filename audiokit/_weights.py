"""Fitting a checkpoint's tensors to a built model, and writing a model as a ``save_pretrained`` directory.

Loading is strict: a checkpoint must provide exactly the model's tensors, except the classifier when the caller asked
for a different class count (then it is re-initialised, and that is logged). Everything else that differs is an
error that names the keys, and so is a tensor holding NaN or inf.

Model families use this module while they are imported, so it imports no family: the builder (which imports the model
package) sits above it, never beside it.
"""

from __future__ import annotations

import json
import logging
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save

from . import __version__
from ._fileio import atomic_write

if typing.TYPE_CHECKING:
    from .models._base import AudioClassifier

_logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


class CheckpointMismatchError(ValueError):
    """A checkpoint whose tensors do not fit the model; the message names the differing keys."""


def describe_keys(keys: list[str], limit: int = 8) -> str:
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


def fit_state_dict(
    model: AudioClassifier, checkpoint: Any, source: str, allow_new_classifier: bool
) -> tuple[dict[str, torch.Tensor], set[str]]:
    """The checkpoint's tensors in the model's names, checked name by name and shape by shape against the model
    (either may hold meta tensors: only shapes are compared), and the classifier's key names."""
    model.check_checkpoint(checkpoint, source)  # what the file says besides its tensors (SAT: its training config)
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
        problems.append(f"missing {describe_keys(missing)}")
    if unexpected:
        problems.append(f"unexpected {describe_keys(unexpected)}")
    if mismatched:
        shapes = [f"{k} {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}" for k in mismatched]
        problems.append(f"shape mismatch {describe_keys(shapes)}")
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
            f"{source}: {len(bad)} tensor(s) hold NaN or inf: {describe_keys(bad, limit=5)}; the weights are damaged "
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
    state, head_keys = fit_state_dict(model, checkpoint, source, allow_new_classifier)
    _check_finite(state, source)
    incompatible = model.load_state_dict(state, strict=False)
    leftover = [k for k in incompatible.missing_keys if k not in head_keys] + list(incompatible.unexpected_keys)
    assert not leftover, leftover  # guarded by the checks above


def save_pretrained_dir(model: AudioClassifier, directory: Path) -> Path:
    """``config.json`` (architecture, arguments, pretrained cfg with labels and frontend) + ``model.safetensors``."""
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
