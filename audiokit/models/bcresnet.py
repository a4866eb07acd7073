"""BC-ResNet (Kim, Chang, Lee, Sung; Interspeech 2021): broadcasted-residual keyword spotting on Speech Commands.

A small CNN on a 40-band HTK log-mel spectrogram of exactly one second of 16 kHz audio (40 x 101 frames). Most of
the work happens in 1-D over time: each BC-ResBlock runs a frequency-wise depthwise convolution with SubSpectralNorm
(the 2-D part ``f2``), averages that over frequency, runs a dilated temporal depthwise + pointwise convolution on the
resulting (C, 1, T) map (the 1-D part ``f1``) and broadcasts it back over frequency as a residual.

``BCResNet(tau)`` builds BC-ResNet-tau with base width ``b = int(8 * tau)`` for the six published widths
tau in {1, 1.5, 2, 3, 6, 8}. Module names are chosen so that ``state_dict()`` has the tensor names and shapes of
checkpoints trained with the reference code (Qualcomm-AI-research/bcresnet, 195 tensors for every width); the one
difference is the final layer, ``classifier.5``: a 1x1 convolution with bias there, an ``nn.Linear`` here (applied to
the pooled ``(B, 4b)`` embedding, so ``reset_classifier`` and ``embed`` follow the audiokit contract).
``checkpoint_filter_fn`` reshapes its ``(classes, 4b, 1, 1)`` weight to ``(classes, 4b)``.

Length policy: the network was trained on clips zero-padded at the end to exactly one second, and so is every input
here (inside ``forward_features``, silently, as the reference preprocessing does). Longer input is refused with a
``ValueError``: tag long recordings in one-second windows (``audiokit tag --window 1``).

No trained weights are published; ``create_model(name, checkpoint_path=...)`` loads a file trained with the reference
code (a flat state dict, optionally wrapped or ``module.``-prefixed) or one written by ``save_pretrained``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._pretrained import FrontendCfg, PretrainedCfg
from .._registry import register_model, register_pretrained_cfgs
from ._base import AudioClassifier

__all__ = ["BCResBlock", "BCResNet", "SubSpectralNorm", "bcresnet_frontend", "checkpoint_filter_fn"]

SAMPLE_RATE = 16000
CLIP_SAMPLES = SAMPLE_RATE  # every input is padded to exactly one second
NUM_SUB_BANDS = 5  # SubSpectralNorm groups
STAGE_DEPTHS = (2, 2, 4, 4)
STRIDED_STAGES = (1, 2)  # stages whose first block halves the frequency axis
DROPOUT = 0.1


# ---------------------------------------------------------------------------------------------------------------------
# Layers
# ---------------------------------------------------------------------------------------------------------------------
class SubSpectralNorm(nn.Module):
    """BatchNorm with separate statistics and affine parameters for each of ``groups`` equal frequency bands.

    ``(B, C, F, T)`` is regrouped to ``(B, C * groups, F / groups, T)`` (channel ``c``, band ``g`` -> BN channel
    ``c * groups + g``), normalised by ``ssnorm`` and restored. ``F`` must be divisible by ``groups``.
    """

    def __init__(self, channels: int, groups: int = NUM_SUB_BANDS):
        super().__init__()
        self.channels = channels
        self.groups = groups
        self.ssnorm = nn.BatchNorm2d(channels * groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, f, t = x.shape
        if f % self.groups:
            raise ValueError(f"SubSpectralNorm: {f} frequency bins are not divisible into {self.groups} sub-bands")
        out = self.ssnorm(x.reshape(b, c * self.groups, f // self.groups, t))
        return out.reshape(b, c, f, t)

    def extra_repr(self) -> str:
        return f"{self.channels}, groups={self.groups}"


class ConvNorm(nn.Module):
    """``block`` = Conv2d (no bias) -> BatchNorm2d or SubSpectralNorm -> optional activation (children 0, 1, 2)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: tuple[int, int],
        *,
        stride: tuple[int, int] = (1, 1),
        dilation: tuple[int, int] = (1, 1),
        groups: int = 1,
        sub_spectral: bool = False,
        act: type[nn.Module] | None = None,
    ):
        super().__init__()
        padding = tuple(d * (k - 1) // 2 for k, d in zip(kernel_size, dilation))
        layers: list[nn.Module] = [
            nn.Conv2d(
                in_channels,
                out_channels,
                kernel_size,
                stride=stride,
                padding=padding,
                dilation=dilation,
                groups=groups,
                bias=False,
            ),
            SubSpectralNorm(out_channels) if sub_spectral else nn.BatchNorm2d(out_channels),
        ]
        if act is not None:
            layers.append(act())
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class BCResBlock(nn.Module):
    """Broadcasted-residual block.

    ``f2`` (frequency-wise, 2-D): [transition blocks only: 1x1 conv + BN + ReLU changing the width] -> depthwise 3x1
    conv over frequency (stride ``freq_stride``) -> SubSpectralNorm. ``f1`` (temporal, on the frequency average):
    depthwise 1x3 conv with dilation ``dilation`` -> BN -> SiLU -> 1x1 conv -> Dropout2d. Output:
    ``relu(f2_out + f1_out (broadcast over frequency) [+ input, when the width is unchanged])``.
    """

    def __init__(self, in_channels: int, out_channels: int, freq_stride: int = 1, dilation: int = 1):
        super().__init__()
        self.transition = in_channels != out_channels
        f2: list[nn.Module] = []
        if self.transition:
            f2.append(ConvNorm(in_channels, out_channels, (1, 1), act=nn.ReLU))
        f2.append(
            ConvNorm(
                out_channels, out_channels, (3, 1), stride=(freq_stride, 1), groups=out_channels, sub_spectral=True
            )
        )
        self.f2 = nn.Sequential(*f2)
        self.f1 = nn.Sequential(
            ConvNorm(out_channels, out_channels, (1, 3), dilation=(1, dilation), groups=out_channels, act=nn.SiLU),
            nn.Conv2d(out_channels, out_channels, 1, bias=False),
            nn.Dropout2d(DROPOUT),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        freq_out = self.f2(x)
        time_out = self.f1(freq_out.mean(dim=2, keepdim=True))
        out = freq_out + time_out
        if not self.transition:
            out = out + x
        return F.relu(out)


# ---------------------------------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------------------------------
def stage_channels(base: int) -> list[int]:
    """Widths ``[2b, b, 1.5b, 2b, 2.5b, 4b]``: the head's output, the four stages' outputs, the embedding."""
    return [2 * base, base, int(1.5 * base), 2 * base, int(2.5 * base), 4 * base]


class BCResNet(AudioClassifier):
    """BC-ResNet-tau: ``cnn_head`` (5x5 conv, frequency stride 2) -> ``BCBlocks`` (4 stages of 2, 2, 4, 4 blocks,
    frequency stride 2 entering stages 1 and 2, temporal dilation 1, 2, 4, 8) -> ``classifier``.

    ``classifier``: depthwise 5x5 conv collapsing the 5 remaining frequency bins (``.0``) -> 1x1 conv to 4b (``.1``)
    -> BN (``.2``) -> ReLU -> global average pool -> Linear (``.5``). ``num_features`` = 4b is the pooled embedding.
    """

    def __init__(self, pretrained_cfg: PretrainedCfg, tau: float = 8.0):
        super().__init__(pretrained_cfg)
        if pretrained_cfg.frontend.n_mels != 40:
            raise ValueError(f"BC-ResNet needs 40 mel bands (5 sub-bands after 8x pooling), got {pretrained_cfg}")
        self.tau = tau
        self.base_channels = base = int(tau * 8)
        c = stage_channels(base)
        self.cnn_head = nn.Sequential(
            nn.Conv2d(1, c[0], 5, stride=(2, 1), padding=2, bias=False),
            nn.BatchNorm2d(c[0]),
            nn.ReLU(),
        )
        stages = []
        for i, depth in enumerate(STAGE_DEPTHS):
            widths = [c[i]] + [c[i + 1]] * depth
            stride = 2 if i in STRIDED_STAGES else 1
            stages.append(
                nn.Sequential(
                    *(
                        BCResBlock(widths[j], widths[j + 1], freq_stride=stride if j == 0 else 1, dilation=2**i)
                        for j in range(depth)
                    )
                )
            )
        self.BCBlocks = nn.ModuleList(stages)
        self.num_features = c[-1]
        n = pretrained_cfg.num_classes
        self.classifier = nn.Sequential(
            nn.Conv2d(c[-2], c[-2], 5, padding=(0, 2), groups=c[-2], bias=False),
            nn.Conv2d(c[-2], c[-1], 1, bias=False),
            nn.BatchNorm2d(c[-1]),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Linear(c[-1], n) if n > 0 else nn.Identity(),
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)

    @property
    def max_samples(self) -> int:
        """Longest waveform accepted: the one-second clip the network was trained on (shorter input is padded)."""
        return CLIP_SAMPLES

    def pad_to_clip(self, waveform: torch.Tensor) -> torch.Tensor:
        """Zero-pad ``(B, T)`` at the end to exactly one second; longer input is a ``ValueError``."""
        n = waveform.shape[-1]
        if n > CLIP_SAMPLES:
            raise ValueError(
                f"{self.pretrained_cfg.architecture} takes at most {CLIP_SAMPLES} samples (1 s at {SAMPLE_RATE} Hz), "
                f"got {n} ({n / SAMPLE_RATE:.2f} s); split longer audio into 1 s windows "
                "(`audiokit tag --window 1`, or slice the waveform)"
            )
        return F.pad(waveform, (0, CLIP_SAMPLES - n)) if n < CLIP_SAMPLES else waveform

    def forward_features(self, waveform: torch.Tensor) -> torch.Tensor:
        """``(B, T <= 16000)`` -> last stage output ``(B, 2.5b, 5, 101)``."""
        x = self.cnn_head(self.frontend(self.pad_to_clip(waveform)))
        for stage in self.BCBlocks:
            x = stage(x)
        return x

    def forward_pre_logits(self, features: torch.Tensor) -> torch.Tensor:
        """Stage output -> pooled embedding ``(B, 4b)``."""
        x = features
        for layer in self.classifier[:5]:
            x = layer(x)
        return x.flatten(1)

    # -- embedding points ------------------------------------------------------------------------------------------
    def embedding_blocks(self) -> dict[int, int]:
        """0: ``cnn_head``'s output; 1..12: the BC-ResBlocks', counted across the four stages (2, 2, 4, 4)."""
        c = stage_channels(self.base_channels)
        widths = [c[0]]
        for i, depth in enumerate(STAGE_DEPTHS):
            widths += [c[i + 1]] * depth
        return dict(enumerate(widths))

    def embedding_points(self) -> dict[str, int]:
        """``pooled``: the global average pool's output, which is the final layer's input here (the convolutions of
        ``classifier`` run before the pooling), so it is the same vector as ``pre_logits``."""
        return {"pooled": self.num_features}

    def forward_embedding(self, waveform: torch.Tensor, layer: int | str) -> torch.Tensor:
        if layer == "pooled":
            return self.forward_pre_logits(self.forward_features(waveform))
        x = self.cnn_head(self.frontend(self.pad_to_clip(waveform)))
        remaining = int(layer)
        for stage in self.BCBlocks:
            for block in stage:
                if remaining == 0:
                    break
                x = block(x)
                remaining -= 1
        return x.mean(dim=(2, 3))

    @torch.no_grad()
    def forward_frame_embeddings(self, waveform: torch.Tensor, layer: int | None = None) -> torch.Tensor:
        """The time steps ``(B, 101, 4b)`` of the classifier's last feature map (after its convolutions, which
        collapse frequency, before the global pool): BC-ResNet keeps the 10 ms frame rate, and their mean over time
        is ``embed()``."""
        if layer is not None:
            raise ValueError(
                f"{self.pretrained_cfg.name}'s frame embeddings are its last feature map's time steps (layer must be "
                "None); earlier blocks are offered pooled over time and frequency by embed(layer=k)"
            )
        x = self.forward_features(self.prepare_waveform(waveform))
        for layer_module in self.classifier[:4]:  # up to the AdaptiveAvgPool2d
            x = layer_module(x)
        return x.mean(dim=2).transpose(1, 2)

    @property
    def frame_hop_seconds(self) -> float:
        return self.frontend_cfg.hop_length / self.sample_rate

    def checkpoint_filter_fn(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return checkpoint_filter_fn(state_dict, self)


# ---------------------------------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------------------------------
def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: AudioClassifier) -> dict[str, torch.Tensor]:
    """Reference-code checkpoints -> this module's layout.

    The names already match (the builder has stripped any ``module.`` prefix); the final 1x1 convolution's
    weight ``classifier.5.weight`` ``(classes, 4b, 1, 1)`` becomes the Linear weight ``(classes, 4b)``. Our own
    files (``save_pretrained``) pass through unchanged; anything else is left for the strict loader to report.
    """
    out = dict(state_dict)
    key = f"{model.pretrained_cfg.classifier}.weight"
    weight = out.get(key)
    if weight is not None and weight.dim() == 4 and weight.shape[2:] == (1, 1):
        out[key] = weight.reshape(weight.shape[0], weight.shape[1])
    return out


# ---------------------------------------------------------------------------------------------------------------------
# Pretrained configurations
# ---------------------------------------------------------------------------------------------------------------------
_SOURCE = "https://github.com/Qualcomm-AI-research/bcresnet (architecture and training recipe; no released weights)"
_PAPER = (
    "B. Kim, S. Chang, J. Lee, D. Sung. Broadcasted Residual Learning for Efficient Keyword Spotting. "
    "Interspeech 2021. arXiv:2106.04140"
)
_LICENSE = (
    "BSD-3-Clause-Clear (Qualcomm reference code; it grants no patent rights: 'NO EXPRESS OR IMPLIED LICENSES TO ANY "
    "PARTY'S PATENT RIGHTS ARE GRANTED'). audiokit's implementation is independent; weights you train are yours."
)
_NOTES = (
    "No official weights are published: pass checkpoint_path= (Python) or --checkpoint-path FILE (CLI) with a state "
    "dict trained by the reference code (12-class Google Speech Commands protocol) or saved by save_pretrained. "
    "Input is zero-padded to exactly 1 s; embed and predict_proba cut longer input into 1 s windows (forward "
    "refuses it)."
)

# tau -> (registry suffix, parameter count of the reference network, published metrics)
_VARIANTS: dict[float, tuple[str, int, dict[str, float]]] = {
    1.0: ("1", 9_232, {}),
    1.5: ("1_5", 17_154, {}),
    2.0: ("2", 27_284, {}),
    3.0: ("3", 54_168, {}),
    6.0: ("6", 187_812, {}),
    8.0: ("8", 321_068, {"gsc_v1_acc": 0.980, "gsc_v2_acc": 0.987}),
}


def bcresnet_frontend() -> FrontendCfg:
    """The reference preprocessing: ``torchaudio.transforms.MelSpectrogram(16000, n_fft=512, win_length=480,
    hop_length=160, n_mels=40)`` (periodic Hann 480 centred in 512, reflect-padded centred frames, power, HTK mel
    0-8 kHz, no filter normalisation), then ``ln(x + 1e-6)``; no mean/std normalisation."""
    return FrontendCfg(
        kind="logmel",
        sample_rate=SAMPLE_RATE,
        n_fft=512,
        win_length=480,
        hop_length=160,
        n_mels=40,
        f_min=0.0,
        f_max=None,
        window="hann",
        center=True,
        pad_mode="reflect",
        stft="fft",
        mel_scale="htk",
        mel_norm=None,
        log="ln",
        log_offset=1e-6,
    )


def _cfg(tau: float) -> PretrainedCfg:
    suffix, num_params, metrics = _VARIANTS[tau]
    return PretrainedCfg(
        architecture=f"bcresnet_{suffix}",
        tag="speechcommands",
        frontend=bcresnet_frontend(),
        num_classes=12,
        task="multiclass",
        label_set="speechcommands12",
        url=None,
        clip_seconds=1.0,
        classifier="classifier.5",
        license=_LICENSE,
        paper=_PAPER,
        source=_SOURCE,
        metrics=dict(metrics),
        num_params=num_params,
        notes=_NOTES
        + (" Accuracies: the paper's BC-ResNet-8 on GSC v1/v2 (12 classes, official test sets)." if metrics else ""),
    )


default_cfgs: list[PretrainedCfg] = [_cfg(tau) for tau in _VARIANTS]
register_pretrained_cfgs(default_cfgs)


# ---------------------------------------------------------------------------------------------------------------------
# Builders
# ---------------------------------------------------------------------------------------------------------------------
@register_model
def bcresnet_1(pretrained_cfg: PretrainedCfg, **kwargs: Any) -> BCResNet:
    """BC-ResNet-1 (base width 8, 9.2 k parameters)."""
    return BCResNet(pretrained_cfg, tau=1.0, **kwargs)


@register_model
def bcresnet_1_5(pretrained_cfg: PretrainedCfg, **kwargs: Any) -> BCResNet:
    """BC-ResNet-1.5 (base width 12, 17.2 k parameters)."""
    return BCResNet(pretrained_cfg, tau=1.5, **kwargs)


@register_model
def bcresnet_2(pretrained_cfg: PretrainedCfg, **kwargs: Any) -> BCResNet:
    """BC-ResNet-2 (base width 16, 27.3 k parameters)."""
    return BCResNet(pretrained_cfg, tau=2.0, **kwargs)


@register_model
def bcresnet_3(pretrained_cfg: PretrainedCfg, **kwargs: Any) -> BCResNet:
    """BC-ResNet-3 (base width 24, 54.2 k parameters)."""
    return BCResNet(pretrained_cfg, tau=3.0, **kwargs)


@register_model
def bcresnet_6(pretrained_cfg: PretrainedCfg, **kwargs: Any) -> BCResNet:
    """BC-ResNet-6 (base width 48, 188 k parameters)."""
    return BCResNet(pretrained_cfg, tau=6.0, **kwargs)


@register_model
def bcresnet_8(pretrained_cfg: PretrainedCfg, **kwargs: Any) -> BCResNet:
    """BC-ResNet-8 (base width 64, 321 k parameters)."""
    return BCResNet(pretrained_cfg, tau=8.0, **kwargs)
