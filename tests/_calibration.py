"""Informative random weights for the families ``tests.conftest.informative_model`` cannot serve.

``informative_model`` measures BatchNorm statistics in training mode on 2 s of noise at one level. BC-ResNet refuses 2 s
(its input is a fixed 1 s); a DyMN calibrated that way is chaotic in eval mode (logits ~1e17 on 0.1-amplitude noise:
its dynamic convolutions amplify every mismatch between batch and running statistics, block after block); PANNs get
logits of 30 to 700, whose sigmoid is saturated and whose float32 rounding alone exceeds a 1e-4 tolerance. Here every
BatchNorm instead gets the statistics of its own input in one eval-mode pass over noise at several levels.
"""

from __future__ import annotations

import torch

import audiokit as ak
from tests.conftest import informative_model

LEVELS = (0.01, 0.03, 0.1, 0.3)  # noise amplitudes of the calibration clips; every other one ends halfway in silence


def calibrate_batchnorm(model: torch.nn.Module, waveform: torch.Tensor) -> torch.nn.Module:
    """Give every BatchNorm the per-channel mean and variance of its input in one eval-mode pass over ``waveform``.

    A pre-forward hook sets the statistics just before each layer runs, so every layer normalises its actual eval-mode
    input and the layers after it see the calibrated output. Returns ``model``, in eval mode.
    """

    def fit(norm: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        x = args[0]
        dims = [d for d in range(x.dim()) if d != 1]
        norm.running_mean.copy_(x.mean(dims))
        norm.running_var.copy_(x.var(dims))

    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    handles = [norm.register_forward_pre_hook(fit) for norm in norms]
    try:
        with torch.no_grad():
            model.eval()(waveform)
    finally:
        for handle in handles:
            handle.remove()
    return model


def informative(name: str, seed: int = 0) -> torch.nn.Module:
    """``informative_model(name, seed)``; for BC-ResNet, DyMN and PANNs: the Linear layers of ``classifier`` redrawn at
    unit gain (EfficientAT's are N(0, 0.01); PANNs' fc layers keep PyTorch's default) and ``calibrate_batchnorm`` on
    noise at ``LEVELS``, half of the clips ending early in silence (as a short clip zero-padded to BC-ResNet's 1 s).
    Logits O(0.1-1), input-dependent; eval mode.

    DyMN's inner Linear layers (kernel attention, Dy-ReLU coefficients) keep their initialisation: redrawn at unit
    gain they make the network chaotic again (logits ~1e11 on some inputs).
    """
    if not name.startswith(("bcresnet_", "efficientat_dymn", "panns_")):
        return informative_model(name, seed=seed)
    torch.manual_seed(seed)
    model = ak.create_model(name)
    generator = torch.Generator().manual_seed(seed)
    for key, module in model.named_modules():
        if key.startswith("classifier") and isinstance(module, torch.nn.Linear):
            torch.nn.init.normal_(module.weight, std=module.in_features**-0.5, generator=generator)
    samples = min(model.sample_rate, model.max_samples or model.sample_rate)
    noise = torch.tensor(LEVELS)[:, None] * torch.randn(len(LEVELS), samples, generator=generator)
    noise[1::2, samples // 2 :] = 0.0
    return calibrate_batchnorm(model, noise)
