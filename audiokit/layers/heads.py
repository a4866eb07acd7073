"""Configurable classifier heads (an MLP on the pre-logits embedding) and activation diagnostics.

``ClassifierHead(model.num_features, num_classes, HeadConfig(hidden=[256], activation="gelu", norm="layer"))``
builds ``[Linear -> norm -> activation -> dropout] * len(hidden) -> fc`` and returns logits; the output activation
(``HeadConfig.output``) is never applied in ``forward``: it decides what ``predict_proba`` reports and, through
:func:`audiokit.layers.activations.loss_for_output`, which loss on the logits trains the head.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

import torch
from torch import nn

from .activations import OUTPUT_ACTIVATIONS, get_activation, normalize_name, output_width

__all__ = ["NORMS", "ActivationStats", "ClassifierHead", "HeadConfig", "activation_bounds", "grad_norms"]

NORMS: tuple[str, ...] = ("none", "batch", "layer")


@dataclass
class HeadConfig:
    """What a :class:`ClassifierHead` looks like.

    ``hidden``: widths of the hidden layers (empty: a single linear layer). ``activation``: a spec for
    :func:`~audiokit.layers.activations.get_activation` (e.g. ``"leaky_relu:0.1"``). ``dropout``: after each hidden
    activation. ``norm``: ``"batch"`` (BatchNorm1d, 2-D input), ``"layer"`` or ``"none"``, between each hidden
    Linear and its activation. ``output``: one of ``OUTPUT_ACTIVATIONS``; None means the task's default (sigmoid
    for multi-label, softmax for multi-class), see :meth:`output_for`.
    """

    hidden: list[int] = field(default_factory=list)
    activation: str = "relu"
    dropout: float = 0.0
    norm: Literal["none", "batch", "layer"] = "none"
    output: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.hidden, (int, str)) or not isinstance(self.hidden, Iterable):
            raise ValueError(f"hidden must be a list of layer widths, got {self.hidden!r}")
        self.hidden = list(self.hidden)
        for width in self.hidden:
            if isinstance(width, bool) or not isinstance(width, int) or width <= 0:
                raise ValueError(f"hidden widths must be positive integers, got {self.hidden!r}")
        get_activation(self.activation)  # raises ValueError naming the problem
        for width in self.hidden:
            output_width(self.activation, width)  # glu on an odd width
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)):
            raise ValueError(f"dropout must be a number in [0, 1), got {self.dropout!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {self.norm!r}")
        if self.output is not None:
            key = normalize_name(self.output) if isinstance(self.output, str) else self.output
            if key not in OUTPUT_ACTIVATIONS:
                raise ValueError(f"output must be None or one of {OUTPUT_ACTIVATIONS}, got {self.output!r}")
            self.output = key

    def output_for(self, task: str) -> str:
        """The output activation for ``task``: ``output`` when set, else sigmoid (multilabel) / softmax."""
        if self.output is not None:
            return self.output
        return "sigmoid" if task == "multilabel" else "softmax"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HeadConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown HeadConfig field(s) {unknown}; valid: {sorted(known)}")
        return cls(**data)


class ClassifierHead(nn.Module):
    """``[Linear -> norm -> activation -> dropout] * len(cfg.hidden) -> fc``; ``forward`` returns logits.

    ``layers[i]`` is a Sequential with children ``linear``, ``norm`` (when set), ``act``, ``drop`` (when
    dropout > 0); ``activations`` lists the activation modules (for hooks). With ``num_classes=0`` there is no
    ``fc`` (it is None) and the output is the last hidden layer's activations. ``out_features`` is the output width.
    """

    def __init__(self, in_features: int, num_classes: int, cfg: HeadConfig | None = None):
        super().__init__()
        cfg = cfg if cfg is not None else HeadConfig()
        if isinstance(in_features, bool) or not isinstance(in_features, int) or in_features <= 0:
            raise ValueError(f"in_features must be a positive integer, got {in_features!r}")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
            raise ValueError(f"num_classes must be a non-negative integer, got {num_classes!r}")
        self.cfg = cfg
        self.in_features = in_features
        self.num_classes = num_classes
        self.layers = nn.ModuleList()
        width = in_features
        for hidden in cfg.hidden:
            block: OrderedDict[str, nn.Module] = OrderedDict(linear=nn.Linear(width, hidden))
            if cfg.norm == "batch":
                block["norm"] = nn.BatchNorm1d(hidden)
            elif cfg.norm == "layer":
                block["norm"] = nn.LayerNorm(hidden)
            block["act"] = get_activation(cfg.activation)
            if cfg.dropout > 0:
                block["drop"] = nn.Dropout(cfg.dropout)
            self.layers.append(nn.Sequential(block))
            width = output_width(cfg.activation, hidden)
        self.fc = nn.Linear(width, num_classes) if num_classes > 0 else None
        self.out_features = num_classes if num_classes > 0 else width

    @property
    def activations(self) -> list[nn.Module]:
        """The activation module of each hidden layer, in order."""
        return [block.act for block in self.layers]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.layers:
            x = block(x)
        return x if self.fc is None else self.fc(x)


# -- diagnostics ---------------------------------------------------------------------------------------------------
def activation_bounds(module: nn.Module) -> tuple[float, float] | None:
    """``(low, high)`` for activations bounded on both sides, None for the others.

    The bounds come from a fixed table of the torch classes, not from probing: Tanh and Softsign ``(-1, 1)``,
    Sigmoid and Hardsigmoid ``(0, 1)``, Hardtanh ``(min_val, max_val)`` (ReLU6 is a Hardtanh with ``(0, 6)``).
    Everything else (ReLU, ELU, GELU, ...) is unbounded on at least one side and reports no saturation.
    """
    if isinstance(module, nn.Hardtanh):
        return float(module.min_val), float(module.max_val)
    if isinstance(module, (nn.Tanh, nn.Softsign)):
        return -1.0, 1.0
    if isinstance(module, (nn.Sigmoid, nn.Hardsigmoid)):
        return 0.0, 1.0
    return None


class _LayerStats:
    def __init__(self, bounds: tuple[float, float] | None):
        self.bounds = bounds
        self.reset()

    def reset(self) -> None:
        self.ever_positive: torch.Tensor | None = None
        self.count = 0  # elements
        self.saturated = 0
        self.total = 0.0
        self.total_sq = 0.0

    def update(self, out: torch.Tensor) -> None:
        out = out.detach().to(torch.float64).reshape(-1, out.shape[-1])
        positive = (out > 0).any(dim=0)
        self.ever_positive = positive if self.ever_positive is None else self.ever_positive | positive
        self.count += out.numel()
        self.total += float(out.sum())
        self.total_sq += float((out * out).sum())
        if self.bounds is not None:
            low, high = self.bounds
            near = ((out - low).abs() <= ActivationStats.tolerance) | ((out - high).abs() <= ActivationStats.tolerance)
            self.saturated += int(near.sum())


class ActivationStats:
    """Forward hooks on a head's hidden activations that accumulate, until :meth:`reset`, per hidden layer ``i``:

    - ``{prefix}.layer{i}.dead_fraction``: fraction of units whose output was never > 0 over every sample seen.
      The same rule applies to activations with a negative range (ELU, GELU, tanh, ...): a unit that never
      produced a positive value counts as dead.
    - ``{prefix}.layer{i}.saturated_fraction``: fraction of outputs within ``tolerance`` (1e-3) of one of the
      activation's bounds, for activations bounded on both sides (see :func:`activation_bounds`); 0 for the others.
    - ``{prefix}.layer{i}.mean`` / ``.std``: over all outputs seen (population std).

    Layers that have seen no data yet are left out of :meth:`summary`. Usable as a context manager (removes hooks).
    """

    tolerance = 1e-3

    def __init__(self, head: ClassifierHead | nn.Module, prefix: str = "head"):
        modules = getattr(head, "activations", None)
        if modules is None:
            found = [m for m in head.modules() if isinstance(m, ClassifierHead)]
            if not found:
                raise ValueError("ActivationStats needs a ClassifierHead (or a module that contains one)")
            modules = found[0].activations
        self.prefix = prefix
        self._stats = [_LayerStats(activation_bounds(m)) for m in modules]
        self._handles = [m.register_forward_hook(self._hook(s)) for m, s in zip(modules, self._stats)]

    @staticmethod
    def _hook(stats: _LayerStats):
        def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
            stats.update(output)

        return hook

    def summary(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for i, s in enumerate(self._stats):
            if s.count == 0 or s.ever_positive is None:
                continue
            key = f"{self.prefix}.layer{i}"
            mean = s.total / s.count
            out[f"{key}.dead_fraction"] = float(1.0 - s.ever_positive.double().mean())
            out[f"{key}.saturated_fraction"] = s.saturated / s.count
            out[f"{key}.mean"] = mean
            out[f"{key}.std"] = math.sqrt(max(s.total_sq / s.count - mean * mean, 0.0))
        return out

    def reset(self) -> None:
        for s in self._stats:
            s.reset()

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self) -> ActivationStats:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def grad_norms(module: nn.Module, prefix: str = "head") -> dict[str, float]:
    """L2 norm of each Linear layer's weight gradient, ``{prefix}.{name}.grad_norm`` (e.g. ``head.fc.grad_norm``,
    ``head.layers.0.linear.grad_norm``); call after ``backward``. Layers without a gradient are left out."""
    out: dict[str, float] = {}
    for name, sub in module.named_modules():
        if isinstance(sub, nn.Linear) and sub.weight.grad is not None:
            out[f"{prefix}.{name}.grad_norm" if name else f"{prefix}.grad_norm"] = float(
                sub.weight.grad.detach().float().norm()
            )
    return out
