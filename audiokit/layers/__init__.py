"""Reusable layers: activations by name, configurable classifier heads and their diagnostics, BatchNorm folding."""

from .activations import (
    HIDDEN_ACTIVATIONS,
    OUTPUT_ACTIVATIONS,
    get_activation,
    get_output_activation,
    loss_for_output,
    output_width,
    width_factor,
)
from .fusion import fold_batchnorm_, is_batchnorm_folded
from .heads import ActivationStats, ClassifierHead, HeadConfig, activation_bounds, grad_norms

__all__ = [
    "HIDDEN_ACTIVATIONS",
    "OUTPUT_ACTIVATIONS",
    "ActivationStats",
    "ClassifierHead",
    "HeadConfig",
    "activation_bounds",
    "fold_batchnorm_",
    "get_activation",
    "get_output_activation",
    "grad_norms",
    "is_batchnorm_folded",
    "loss_for_output",
    "output_width",
    "width_factor",
]
