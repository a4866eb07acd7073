"""Reusable layers: activations by name, configurable classifier heads and their diagnostics."""

from .activations import (
    HIDDEN_ACTIVATIONS,
    OUTPUT_ACTIVATIONS,
    get_activation,
    get_output_activation,
    loss_for_output,
    output_width,
    width_factor,
)
from .heads import ActivationStats, ClassifierHead, HeadConfig, activation_bounds, grad_norms

__all__ = [
    "HIDDEN_ACTIVATIONS",
    "OUTPUT_ACTIVATIONS",
    "ActivationStats",
    "ClassifierHead",
    "HeadConfig",
    "activation_bounds",
    "get_activation",
    "get_output_activation",
    "grad_norms",
    "loss_for_output",
    "output_width",
    "width_factor",
]
