"""Activations by name: hidden activations for classifier heads, and output activations paired with their losses.

Hidden activations are written as a *spec*: a name, optionally followed by ``:`` and comma-separated parameters,
positional (in the order of the torch class's constructor) or ``key=value``::

    get_activation("relu")
    get_activation("leaky_relu:0.1")                   # negative_slope=0.1
    get_activation("elu:alpha=1.0")
    get_activation("hardtanh:min_val=-2,max_val=2")
    get_activation("threshold:0.1,0.0")                # threshold=0.1, value=0.0 (both required)

Names are case-insensitive and ``-``/``_`` are interchangeable. Every activation is the ``torch.nn`` class itself;
the accepted parameters are read from the class's constructor signature, less ``inplace`` (a head always computes
out of place, which keeps autograd and diagnostic hooks safe), ``device``/``dtype`` and deprecated aliases.
``glu`` splits the last dimension in two halves and so halves the width: :func:`output_width` tells a head how wide
the next layer's input is.

Output activations (:data:`OUTPUT_ACTIVATIONS`) turn logits into what ``predict_proba`` reports; training never
applies them to the logits before the loss. :func:`loss_for_output` returns the numerically stable loss on logits
that goes with each one.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._pretrained import TASKS

_logger = logging.getLogger(__name__)

__all__ = [
    "HIDDEN_ACTIVATIONS",
    "OUTPUT_ACTIVATIONS",
    "activation_parameters",
    "get_activation",
    "get_output_activation",
    "loss_for_output",
    "normalize_name",
    "output_width",
    "parse_spec",
    "width_factor",
]

# name -> torch.nn class (or a partial of one, for variants such as gelu_tanh)
_HIDDEN: dict[str, Any] = {
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "leaky_relu": nn.LeakyReLU,
    "prelu": nn.PReLU,
    "rrelu": nn.RReLU,
    "elu": nn.ELU,
    "selu": nn.SELU,
    "celu": nn.CELU,
    "gelu": nn.GELU,
    "gelu_tanh": partial(nn.GELU, approximate="tanh"),
    "silu": nn.SiLU,
    "swish": nn.SiLU,
    "mish": nn.Mish,
    "softplus": nn.Softplus,
    "softsign": nn.Softsign,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "hardtanh": nn.Hardtanh,
    "hardsigmoid": nn.Hardsigmoid,
    "hardswish": nn.Hardswish,
    "hardshrink": nn.Hardshrink,
    "softshrink": nn.Softshrink,
    "tanhshrink": nn.Tanhshrink,
    "logsigmoid": nn.LogSigmoid,
    "threshold": nn.Threshold,
    "glu": partial(nn.GLU, dim=-1),
    "identity": nn.Identity,
}

HIDDEN_ACTIVATIONS: tuple[str, ...] = tuple(sorted(_HIDDEN))
"""Every name :func:`get_activation` accepts (``swish`` is an alias of ``silu``)."""

# constructor parameters a spec may not set: handled by the head, fixed by the variant, or deprecated aliases
_EXCLUDED_PARAMS = {"self", "inplace", "device", "dtype", "min_value", "max_value"}

OUTPUT_ACTIVATIONS: tuple[str, ...] = ("softmax", "log_softmax", "sigmoid", "softmin", "identity")


def normalize_name(name: str) -> str:
    """Lower-case, trimmed, ``-`` -> ``_``."""
    return name.strip().lower().replace("-", "_")


def _lookup(name: str) -> Any:
    key = normalize_name(name)
    if key not in _HIDDEN:
        raise ValueError(f"unknown activation {name!r}; valid names: {', '.join(HIDDEN_ACTIVATIONS)}")
    return _HIDDEN[key]


def activation_parameters(name: str) -> dict[str, inspect.Parameter]:
    """The parameters a spec for ``name`` may set, in positional order (from the torch class's signature)."""
    factory = _lookup(name)
    cls = factory.func if isinstance(factory, partial) else factory
    fixed = set(factory.keywords) if isinstance(factory, partial) else set()
    params = {}
    for p in inspect.signature(cls).parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or p.name in _EXCLUDED_PARAMS or p.name in fixed:
            continue
        params[p.name] = p
    return params


def _describe(name: str, params: dict[str, inspect.Parameter]) -> str:
    if not params:
        return f"{name!r} takes no parameters"
    parts = []
    for p in params.values():
        part = f"{p.name}: {_type_name(p)}"
        part += " (required)" if p.default is p.empty else f" = {p.default!r}"
        parts.append(part)
    return f"{name!r} accepts: {', '.join(parts)}"


def _type_name(p: inspect.Parameter) -> str:
    ann = p.annotation
    if ann is not p.empty:
        text = ann if isinstance(ann, str) else getattr(ann, "__name__", str(ann))
        for t in ("bool", "int", "float", "str"):
            if text == t or text.startswith(f"{t} ") or text.startswith(f"{t}|"):
                return t
    if p.default is not p.empty and p.default is not None:
        return type(p.default).__name__
    return "float"


def _convert(text: str, type_name: str) -> Any:
    text = text.strip()
    if type_name == "bool":
        low = text.lower()
        if low in ("true", "1", "yes"):
            return True
        if low in ("false", "0", "no"):
            return False
        raise ValueError(f"expected a boolean, got {text!r}")
    if type_name == "int":
        return int(text)
    if type_name == "float":
        return float(text)
    return text


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``"leaky_relu:0.1"`` -> ``("leaky_relu", {"negative_slope": 0.1})``; raises ValueError on any problem."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"an activation spec must be a non-empty string, got {spec!r}")
    raw_name, _, arg_text = spec.partition(":")
    name = normalize_name(raw_name)
    params = activation_parameters(name)  # raises for unknown names
    names = list(params)
    kwargs: dict[str, Any] = {}
    args = arg_text.split(",") if arg_text.strip() else []
    seen_keyword = False
    for position, arg in enumerate(args):
        key, eq, value = arg.partition("=")
        if eq:
            key = key.strip()
            seen_keyword = True
            if key not in params:
                raise ValueError(f"activation {spec!r}: unknown parameter {key!r}; {_describe(name, params)}")
        else:
            value = key
            if seen_keyword:
                raise ValueError(
                    f"activation {spec!r}: positional parameter after a keyword; {_describe(name, params)}"
                )
            if position >= len(names):
                raise ValueError(
                    f"activation {spec!r}: too many parameters ({len(args)} given); {_describe(name, params)}"
                )
            key = names[position]
        if key in kwargs:
            raise ValueError(f"activation {spec!r}: parameter {key!r} given twice; {_describe(name, params)}")
        if not value.strip():
            raise ValueError(f"activation {spec!r}: empty value for {key!r}; {_describe(name, params)}")
        try:
            kwargs[key] = _convert(value, _type_name(params[key]))
        except ValueError as err:
            raise ValueError(
                f"activation {spec!r}: bad value {value.strip()!r} for {key!r} ({err}); {_describe(name, params)}"
            ) from None
    missing = [p.name for p in params.values() if p.default is p.empty and p.name not in kwargs]
    if missing:
        raise ValueError(f"activation {spec!r}: missing required parameter(s) {missing}; {_describe(name, params)}")
    return name, kwargs


def get_activation(spec: str) -> nn.Module:
    """Build the ``torch.nn`` activation module a spec names (see the module docstring for the syntax)."""
    name, kwargs = parse_spec(spec)
    try:
        return _HIDDEN[name](**kwargs)
    except (TypeError, ValueError, AssertionError, RuntimeError) as err:
        raise ValueError(
            f"activation {spec!r}: torch rejected {kwargs} ({err}); {_describe(name, activation_parameters(name))}"
        ) from None


def width_factor(spec: str) -> float:
    """How the activation scales the feature width: 0.5 for ``glu``, 1.0 for every element-wise one."""
    name, _ = parse_spec(spec)
    return 0.5 if name == "glu" else 1.0


def output_width(spec: str, width: int) -> int:
    """Width after the activation for an input of ``width`` features; ``glu`` needs an even width."""
    name, _ = parse_spec(spec)
    if name != "glu":
        return width
    if width % 2:
        raise ValueError(f"glu splits the features into two halves and needs an even width, got {width}")
    return width // 2


# -- output activations and their losses ---------------------------------------------------------------------------
def _normalize_output(name: str) -> str:
    key = normalize_name(name) if isinstance(name, str) else name
    if key not in OUTPUT_ACTIVATIONS:
        raise ValueError(f"unknown output activation {name!r}; valid names: {', '.join(OUTPUT_ACTIVATIONS)}")
    return key


def get_output_activation(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """``logits -> tensor`` for an output activation (softmax-like ones act on the last dimension)."""
    key = _normalize_output(name)
    return {
        "softmax": partial(torch.softmax, dim=-1),
        "log_softmax": partial(torch.log_softmax, dim=-1),
        "sigmoid": torch.sigmoid,
        "softmin": lambda x: torch.softmax(-x, dim=-1),
        "identity": lambda x: x,
    }[key]


def _is_index_target(logits: torch.Tensor, targets: torch.Tensor) -> bool:
    return not targets.is_floating_point() and targets.dim() == logits.dim() - 1


def _as_probabilities(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Class indices -> one-hot; float targets of the logits' shape pass through."""
    if _is_index_target(logits, targets):
        return F.one_hot(targets.long(), logits.shape[-1]).to(logits.dtype)
    if targets.shape != logits.shape:
        raise ValueError(
            f"targets must be class indices of shape {tuple(logits.shape[:-1])} or probabilities / multi-hot of "
            f"shape {tuple(logits.shape)}, got {tuple(targets.shape)} ({targets.dtype})"
        )
    return targets.to(logits.dtype)


def loss_for_output(
    name: str,
    task: str,
    label_smoothing: float = 0.0,
    class_weights: torch.Tensor | None = None,
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The loss on *logits* that goes with an output activation: ``loss(logits, targets) -> scalar``.

    - ``softmax``: cross-entropy on the logits (targets: class indices or probabilities; label smoothing and class
      weights as in :func:`torch.nn.functional.cross_entropy`).
    - ``log_softmax``: negative log-likelihood of ``log_softmax(logits)`` (``F.nll_loss`` for class indices,
      ``-(w * t * log_softmax).sum(-1).mean()`` for probabilities); label smoothing turns the targets into
      ``(1 - s) * t + s / C`` first. Without class weights it equals the softmax loss.
    - ``sigmoid``: BCE-with-logits against multi-hot targets (multi-label), or against the one-hot of the class
      indices (single-label, one-vs-rest); label smoothing uses ``(1 - s) * t + s / 2``; class weights weigh each
      class's term.
    - ``softmin``: cross-entropy on ``-logits`` (the class with the *lowest* score is the prediction).
    - ``identity``: multi-class -> cross-entropy on the logits, multi-label -> BCE-with-logits; identity only
      changes what ``predict_proba`` reports (the raw logits), never the training objective.

    ``softmax``/``log_softmax``/``softmin`` normalise over classes and cannot express several positive labels, so
    they raise for ``task="multilabel"``; ``sigmoid`` for ``"multiclass"`` is allowed and logged at INFO.
    """
    key = _normalize_output(name)
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    if task == "multilabel" and key in ("softmax", "log_softmax", "softmin"):
        raise ValueError(
            f"output activation {key!r} normalises over classes and cannot represent several positive labels; "
            "a multi-label task requires 'sigmoid' (or 'identity', which trains with BCE-with-logits too)"
        )
    if task == "multiclass" and key == "sigmoid":
        _logger.info("sigmoid output on a multi-class task: training one-vs-rest with BCE-with-logits")

    def weights_for(logits: torch.Tensor) -> torch.Tensor | None:
        return None if class_weights is None else class_weights.to(device=logits.device, dtype=logits.dtype)

    def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        if not _is_index_target(logits, targets):
            targets = _as_probabilities(logits, targets)
        return F.cross_entropy(logits, targets, weight=weights_for(logits), label_smoothing=label_smoothing)

    def nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        logp = torch.log_softmax(logits, dim=-1)
        weight = weights_for(logits)
        if _is_index_target(logits, targets) and label_smoothing == 0.0:
            return F.nll_loss(logp, targets.long(), weight=weight)
        probs = _as_probabilities(logits, targets)
        if label_smoothing:
            probs = (1.0 - label_smoothing) * probs + label_smoothing / logits.shape[-1]
        terms = probs * logp if weight is None else weight * probs * logp
        return -terms.sum(-1).mean()

    def bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        probs = _as_probabilities(logits, targets)
        if label_smoothing:
            probs = (1.0 - label_smoothing) * probs + label_smoothing / 2.0
        return F.binary_cross_entropy_with_logits(logits, probs, weight=weights_for(logits))

    if key == "softmax":
        return cross_entropy
    if key == "log_softmax":
        return nll
    if key == "softmin":
        return lambda logits, targets: cross_entropy(-logits, targets)
    if key == "sigmoid":
        return bce
    return bce if task == "multilabel" else cross_entropy  # identity
