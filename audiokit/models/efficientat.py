"""EfficientAT (Schmid, Koutini, Widmer): MobileNetV3 "MN" and dynamic "DyMN" audio taggers for AudioSet.

Both families are width-scaled MobileNetV3-Large backbones on a 128-band Kaldi-mel log spectrogram at 32 kHz, trained on
AudioSet by knowledge distillation from a PaSST ensemble. The modules below are laid out so that ``state_dict()``
produces exactly the tensor names, order and shapes of the original checkpoints (GitHub release v0.0.1 of
fschmid56/EfficientAT, flat state dicts), so those files load strictly without any key remapping.

- ``MobileNetAT`` (MN, ICASSP 2023): inverted-residual blocks with a channel squeeze-excitation that uses a
  sigmoid gate; registered as ``efficientat_mn{01,02,04,05,10,20,30,40}``.
- ``DynamicMobileNetAT`` (DyMN, TASLP 2024): every block is a dynamic block with a context generator, dynamic
  convolutions (4 kernels mixed per example), dynamic ReLU and coordinate attention; ``efficientat_dymn{04,10,20}``.

Both heads are ``pool -> flatten -> Linear(C, 1280w) -> Hardswish -> Dropout -> Linear(1280w, classes)``; the final
layer is ``classifier.5`` and the embedding (``embed``, ``num_features`` wide) is the input to it, as in upstream
fine-tuning, which keeps ``classifier.2`` and replaces only ``classifier.5``. Upstream's own embedding, the second
output of its forward (``features``: the global average of the last feature map, 6 * 160w wide, 384 for mn04), is
``embed(x, layer="pooled")``; ``embed(x, layer=k)`` pools block ``k``'s map (0: the stem, upstream's ``return_fmaps``).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from .._pretrained import FrontendCfg, PretrainedCfg
from .._registry import register_model, register_pretrained_cfgs
from ._base import AudioClassifier

__all__ = [
    "DyBlock",
    "DynamicConv",
    "DynamicMobileNetAT",
    "DynamicReLU",
    "InvertedResidual",
    "MobileNetAT",
    "checkpoint_filter_fn",
    "make_divisible",
]

ActName = Literal["relu", "hardswish"]

# MobileNetV3-Large body at width 1.0, shared by MN and DyMN:
# (in_channels, kernel, expanded_channels, out_channels, squeeze_excite, activation, stride)
_BLOCKS: tuple[tuple[int, int, int, int, bool, ActName, int], ...] = (
    (16, 3, 16, 16, False, "relu", 1),
    (16, 3, 64, 24, False, "relu", 2),
    (24, 3, 72, 24, False, "relu", 1),
    (24, 5, 72, 40, True, "relu", 2),
    (40, 5, 120, 40, True, "relu", 1),
    (40, 5, 120, 40, True, "relu", 1),
    (40, 3, 240, 80, False, "hardswish", 2),
    (80, 3, 200, 80, False, "hardswish", 1),
    (80, 3, 184, 80, False, "hardswish", 1),
    (80, 3, 184, 80, False, "hardswish", 1),
    (80, 3, 480, 112, True, "hardswish", 1),
    (112, 3, 672, 112, True, "hardswish", 1),
    (112, 5, 672, 160, True, "hardswish", 2),
    (160, 5, 960, 160, True, "hardswish", 1),
    (160, 5, 960, 160, True, "hardswish", 1),
)
_STEM_CHANNELS = 16
_HEAD_HIDDEN = 1280  # width of classifier.2 (the embedding) at width 1.0
_LAST_CONV_EXPANSION = 6  # features.16 / out_c: 160w -> 6 * 160w
BN_EPS = 1e-3
BN_MOMENTUM = 0.01


# ---------------------------------------------------------------------------------------------------------------------
# Helpers and blocks
# ---------------------------------------------------------------------------------------------------------------------
def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round ``value`` to the nearest multiple of ``divisor`` (at least ``min_value``, default ``divisor``), going one
    step up when rounding would lose more than 10 % (the MobileNet channel rule)."""
    floor = divisor if min_value is None else min_value
    rounded = max(floor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def _batch_norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


def _activation(name: ActName) -> nn.Module:
    if name == "relu":
        return nn.ReLU()
    if name == "hardswish":
        return nn.Hardswish()
    raise ValueError(f"unknown activation {name!r}; allowed: 'relu', 'hardswish'")


class ConvBnAct(nn.Sequential):
    """``Conv2d`` (no bias, 'same' padding for odd kernels) -> ``BatchNorm2d`` -> optional activation, as children
    ``0``, ``1``, ``2`` (the layout torchvision's ``ConvNormActivation`` gives the original checkpoints)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        stride: int = 1,
        groups: int = 1,
        act: ActName | None = None,
    ):
        layers: list[nn.Module] = [
            nn.Conv2d(
                in_channels,
                out_channels,
                kernel_size,
                stride=stride,
                padding=(kernel_size - 1) // 2,
                groups=groups,
                bias=False,
            ),
            _batch_norm(out_channels),
        ]
        if act is not None:
            layers.append(_activation(act))
        super().__init__(*layers)


class ChannelSqueezeExcite(nn.Module):
    """Squeeze-excitation over channels: mean over (F, T) -> ``fc1`` -> ReLU -> ``fc2`` -> sigmoid -> rescale.

    Unlike torchvision's MobileNetV3 (1x1 convolutions, hard sigmoid) the original uses Linear layers and a true
    sigmoid.
    """

    def __init__(self, channels: int, squeeze_channels: int):
        super().__init__()
        self.fc1 = nn.Linear(channels, squeeze_channels)
        self.fc2 = nn.Linear(squeeze_channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = x.mean(dim=(2, 3))
        scale = self.fc2(F.relu(self.fc1(scale)))
        return x * torch.sigmoid(scale)[:, :, None, None]


class SqueezeExciteStack(nn.Module):
    """Container matching the original's key layout (``conc_se_layers.0.fc1``).

    Upstream can run several squeeze-excitations (over channels, frequency and time) side by side and fuse them; every
    released checkpoint uses the channel one alone, which keeps the network independent of the input length, so that
    is the only configuration provided here.
    """

    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        self.conc_se_layers = nn.ModuleList([ChannelSqueezeExcite(channels, make_divisible(channels // reduction, 8))])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conc_se_layers[0](x)


class InvertedResidual(nn.Module):
    """MobileNetV3 block: [1x1 expand] -> depthwise kxk (stride) -> [squeeze-excite] -> 1x1 project (+ residual).

    The steps are the children ``block.0``, ``block.1``, ... in that order, so a block without expansion starts with its
    depthwise convolution at ``block.0``.
    """

    def __init__(
        self,
        in_channels: int,
        kernel_size: int,
        expanded_channels: int,
        out_channels: int,
        use_se: bool,
        act: ActName,
        stride: int,
    ):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        self.use_residual = stride == 1 and in_channels == out_channels
        layers: list[nn.Module] = []
        if expanded_channels != in_channels:
            layers.append(ConvBnAct(in_channels, expanded_channels, 1, act=act))
        layers.append(
            ConvBnAct(
                expanded_channels, expanded_channels, kernel_size, stride=stride, groups=expanded_channels, act=act
            )
        )
        if use_se:
            layers.append(SqueezeExciteStack(expanded_channels))
        layers.append(ConvBnAct(expanded_channels, out_channels, 1, act=None))
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return out + x if self.use_residual else out


class DynamicConv(nn.Module):
    """Convolution whose kernel is a per-example mixture of ``num_kernels`` kernels (Dy-Conv).

    Mixing weights: ``softmax(residuals(context) / temperature)``. The kernels are stored flattened in ``weight`` of
    shape ``(1, 1, num_kernels, out * in / groups * k * k)``, the original layout; no bias.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        context_dim: int,
        kernel_size: int = 1,
        stride: int = 1,
        groups: int = 1,
        num_kernels: int = 4,
        temperature: float = 1.0,
    ):
        super().__init__()
        if in_channels % groups:
            raise ValueError(f"in_channels {in_channels} is not divisible by groups {groups}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.stride = stride
        self.padding = (kernel_size - 1) // 2
        self.groups = groups
        self.num_kernels = num_kernels
        self.temperature = float(temperature)
        kernels = torch.empty(num_kernels, out_channels, in_channels // groups, kernel_size, kernel_size)
        for kernel in kernels:
            nn.init.kaiming_normal_(kernel, mode="fan_out")
        self.weight = nn.Parameter(kernels.reshape(1, 1, num_kernels, -1))
        self.residuals = nn.Sequential(nn.Linear(context_dim, num_kernels))

    def kernel_attention(self, context: torch.Tensor) -> torch.Tensor:
        """``(B, context_dim)`` -> mixing weights ``(B, num_kernels)`` summing to one."""
        return torch.softmax(self.residuals(context) / self.temperature, dim=-1)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        b, _, f, t = x.shape
        attention = self.kernel_attention(context)
        kernels = attention @ self.weight.reshape(self.num_kernels, -1)  # (B, out * in/groups * k * k)
        kernels = kernels.reshape(b * self.out_channels, self.in_channels // self.groups, self.kernel_size, -1)
        # One grouped convolution over the batch folded into channels applies each example's own kernel.
        out = F.conv2d(
            x.reshape(1, b * self.in_channels, f, t),
            kernels,
            stride=self.stride,
            padding=self.padding,
            groups=self.groups * b,
        )
        return out.reshape(b, self.out_channels, out.shape[-2], out.shape[-1])

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"groups={self.groups}, num_kernels={self.num_kernels}, temperature={self.temperature}"
        )


class DynamicReLU(nn.Module):
    """Dy-ReLU-B: per-example, per-channel ``max(a1 * x + b1, a2 * x + b2)`` with coefficients from the context.

    ``theta = 2 * sigmoid(coef_net(context)) - 1`` gives ``2 * M`` values per channel; the coefficients are
    ``theta * lambdas + init_v`` (slopes first, then intercepts), so that ``theta = 0`` is a plain ReLU. ``lambdas``
    and ``init_v`` are persistent buffers because the original checkpoints carry them.
    """

    def __init__(self, channels: int, context_dim: int, num_pieces: int = 2):
        super().__init__()
        self.channels = channels
        self.num_pieces = num_pieces
        self.coef_net = nn.Sequential(nn.Linear(context_dim, 2 * num_pieces * channels))
        self.register_buffer("lambdas", torch.tensor([1.0] * num_pieces + [0.5] * num_pieces))
        self.register_buffer("init_v", torch.tensor([1.0] + [0.0] * (2 * num_pieces - 1)))

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        theta = 2.0 * torch.sigmoid(self.coef_net(context)) - 1.0
        coefs = theta.reshape(x.shape[0], self.channels, 1, 1, 2 * self.num_pieces) * self.lambdas + self.init_v
        m = self.num_pieces
        pieces = x.unsqueeze(-1) * coefs[..., :m] + coefs[..., m:]
        return pieces.amax(dim=-1)


class ContextGen(nn.Module):
    """The DyMN block's context: frequency and time profiles of the block input, transformed jointly.

    Returns ``(h_c, g_f, g_t)``: ``h_c`` ``(B, H)`` drives Dy-Conv and Dy-ReLU; ``g_f`` ``(B, E, F', 1)`` and ``g_t``
    ``(B, E, 1, T')`` are the coordinate-attention logits at the block's output resolution (average-pooled with
    stride 2 in strided blocks, zero padding counted in the average).
    """

    def __init__(self, context_dim: int, in_channels: int, expanded_channels: int, stride: int = 1):
        super().__init__()
        self.joint_conv = nn.Conv2d(in_channels, context_dim, 1, bias=False)
        self.joint_norm = _batch_norm(context_dim)
        self.joint_act = nn.Hardswish()
        self.conv_f = nn.Conv2d(context_dim, expanded_channels, 1)
        self.conv_t = nn.Conv2d(context_dim, expanded_channels, 1)
        if stride > 1:
            self.pool_f: nn.Module = nn.AvgPool2d((3, 1), stride=(stride, 1), padding=(1, 0))
            self.pool_t: nn.Module = nn.AvgPool2d((1, 3), stride=(1, stride), padding=(0, 1))
        else:
            self.pool_f = nn.Identity()
            self.pool_t = nn.Identity()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n_f, n_t = x.shape[2], x.shape[3]
        freq_profile = x.mean(dim=3, keepdim=True)  # (B, C, F, 1)
        time_profile = x.mean(dim=2, keepdim=True).transpose(2, 3)  # (B, C, T, 1)
        joint = self.joint_act(self.joint_norm(self.joint_conv(torch.cat([freq_profile, time_profile], dim=2))))
        h_f, h_t = torch.split(joint, [n_f, n_t], dim=2)
        h_c = joint.mean(dim=(2, 3))  # (B, H): average over the F + T sequence
        g_f = self.conv_f(self.pool_f(h_f))
        g_t = self.conv_t(self.pool_t(h_t.transpose(2, 3)))
        return h_c, g_f, g_t


class DyBlock(nn.Module):
    """DyMN block: context -> [dynamic 1x1 expand, BN, act] -> dynamic depthwise kxk, BN, Dy-ReLU -> coordinate
    attention -> dynamic 1x1 project, BN (+ residual when stride 1 and in == out)."""

    def __init__(
        self,
        in_channels: int,
        kernel_size: int,
        expanded_channels: int,
        out_channels: int,
        act: ActName,
        stride: int,
        width_mult: float,
        context_ratio: int = 4,
        min_context: int = 32,
        max_context: int = 128,
        num_kernels: int = 4,
        relu_pieces: int = 2,
        temperature: float = 1.0,
    ):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        self.use_residual = stride == 1 and in_channels == out_channels
        lo, hi = make_divisible(min_context * width_mult, 8), make_divisible(max_context * width_mult, 8)
        self.context_dim = context_dim = min(max(make_divisible(expanded_channels // context_ratio, 8), lo), hi)
        dyconv: dict[str, Any] = {"context_dim": context_dim, "num_kernels": num_kernels, "temperature": temperature}

        # Children in the original registration order, so the state dict lists the tensors in the same order.
        self.exp_conv: DynamicConv | None
        if expanded_channels != in_channels:
            self.exp_conv = DynamicConv(in_channels, expanded_channels, **dyconv)
            self.exp_norm: nn.Module = _batch_norm(expanded_channels)
            self.exp_act: nn.Module = _activation(act)
        else:  # the first block: nothing to expand
            self.exp_conv = None
            self.exp_norm = nn.Identity()
            self.exp_act = nn.Identity()
        self.depth_conv = DynamicConv(
            expanded_channels,
            expanded_channels,
            kernel_size=kernel_size,
            stride=stride,
            groups=expanded_channels,
            **dyconv,
        )
        self.depth_norm = _batch_norm(expanded_channels)
        self.depth_act = DynamicReLU(expanded_channels, context_dim, num_pieces=relu_pieces)
        self.proj_conv = DynamicConv(expanded_channels, out_channels, **dyconv)
        self.proj_norm = _batch_norm(out_channels)
        self.context_gen = ContextGen(context_dim, in_channels, expanded_channels, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h_c, g_f, g_t = self.context_gen(x)
        out = x
        if self.exp_conv is not None:
            out = self.exp_act(self.exp_norm(self.exp_conv(out, h_c)))
        out = self.depth_act(self.depth_norm(self.depth_conv(out, h_c)), h_c)
        out = out * torch.sigmoid(g_f) * torch.sigmoid(g_t)  # coordinate attention
        out = self.proj_norm(self.proj_conv(out, h_c))
        return out + x if self.use_residual else out


def _mlp_head(in_features: int, hidden: int, num_classes: int, drop_rate: float) -> nn.Sequential:
    """Children 0..5 as in the original: pool, flatten, Linear (``classifier.2``), Hardswish, Dropout, final Linear
    (``classifier.5``, an ``nn.Identity`` for ``num_classes=0``)."""
    return nn.Sequential(
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(1),
        nn.Linear(in_features, hidden),
        nn.Hardswish(),
        nn.Dropout(drop_rate),
        nn.Linear(hidden, num_classes) if num_classes > 0 else nn.Identity(),
    )


def _init_weights(model: nn.Module) -> None:
    """The original initialisation: Kaiming (fan-out) convolutions, unit BatchNorm, N(0, 0.01) Linear layers."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


# ---------------------------------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------------------------------
class _EfficientATBase(AudioClassifier):
    """Shared head handling: ``classifier`` is the 6-step MLP and ``classifier.5`` the final layer."""

    classifier: nn.Sequential

    def forward_backbone(self, logmel: torch.Tensor) -> torch.Tensor:
        """Normalised log-mel ``(B, 1, n_mels, frames)`` -> feature map ``(B, 6 * 160w, n_mels / 32, frames / 32)``."""
        raise NotImplementedError

    def forward_features(self, waveform: torch.Tensor) -> torch.Tensor:
        """``(B, T)`` waveform -> last feature map ``(B, C, F', T')`` (32x downsampled in both axes)."""
        return self.forward_backbone(self.frontend(waveform))

    def forward_pre_logits(self, features: torch.Tensor) -> torch.Tensor:
        """Feature map -> embedding ``(B, num_features)``: pool, flatten, Linear, Hardswish, Dropout."""
        x = features
        for layer in self.classifier[:5]:
            x = layer(x)
        return x

    # -- embedding points ------------------------------------------------------------------------------------------
    block_channels: list[int]  # the stem's output width, then each inverted-residual block's

    def hidden_state(self, logmel: torch.Tensor, index: int) -> torch.Tensor:
        """Feature map after the stem (``index`` 0) or after inverted-residual block ``index`` (1..15): upstream's
        ``return_fmaps`` entry ``index``. Only the layers up to it run."""
        raise NotImplementedError

    def embedding_blocks(self) -> dict[int, int]:
        """0: the stem's output; 1..15: the inverted-residual (MN) or dynamic (DyMN) blocks'."""
        return dict(enumerate(self.block_channels))

    def embedding_points(self) -> dict[str, int]:
        """``pooled``: the global average of the last feature map (after the final 1x1 conv), upstream's
        ``features``; 6 * 160w wide (384 for mn04), while ``pre_logits`` is the 1280w-wide output of
        ``classifier.2`` + Hardswish (512 for mn04)."""
        return {"pooled": self.feature_channels}

    def forward_embedding(self, waveform: torch.Tensor, layer: int | str) -> torch.Tensor:
        logmel = self.frontend(waveform)
        if layer == "pooled":
            # The head's own pool and flatten: the operation upstream's `features` is.
            return self.classifier[1](self.classifier[0](self.forward_backbone(logmel)))
        return self.hidden_state(logmel, int(layer)).mean(dim=(2, 3))

    @torch.no_grad()
    def forward_frame_embeddings(self, waveform: torch.Tensor, layer: int | None = None) -> torch.Tensor:
        """The last feature map's time steps ``(B, T', 6 * 160w)``, averaged over frequency: their mean over time is
        ``embed(layer="pooled")``, upstream's ``features``."""
        if layer is not None:
            raise ValueError(
                f"{self.pretrained_cfg.name}'s frame embeddings are its last feature map's time steps (layer must be "
                "None); earlier blocks are offered pooled over time and frequency by embed(layer=k)"
            )
        return self.forward_features(self.prepare_waveform(waveform)).mean(dim=2).transpose(1, 2)

    @property
    def frame_hop_seconds(self) -> float:
        """Seconds per time step of the last feature map: 32 mel hops (0.32 s at 10 ms)."""
        return 32 * self.frontend_cfg.hop_length / self.sample_rate

    def checkpoint_filter_fn(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return checkpoint_filter_fn(state_dict, self)


class MobileNetAT(_EfficientATBase):
    """EfficientAT MN: MobileNetV3-Large scaled by ``width_mult``, one input channel, MLP head.

    Keys: ``features.0`` (stem conv 3x3/2), ``features.1..15`` (``InvertedResidual``), ``features.16`` (1x1 conv to
    6 * 160w), ``classifier.{2,5}``.
    """

    prefers_channels_last = True  # depthwise convolutions: ~1.2x (mn10, batch 1) on a 2-core AVX2 CPU

    def __init__(self, pretrained_cfg: PretrainedCfg, width_mult: float = 1.0, drop_rate: float = 0.2):
        super().__init__(pretrained_cfg)
        self.width_mult = width_mult

        def ch(c: int) -> int:
            return make_divisible(c * width_mult, 8)

        stem = ch(_STEM_CHANNELS)
        layers: list[nn.Module] = [ConvBnAct(1, stem, 3, stride=2, act="hardswish")]
        for c_in, k, c_exp, c_out, use_se, act, stride in _BLOCKS:
            layers.append(InvertedResidual(ch(c_in), k, ch(c_exp), ch(c_out), use_se, act, stride))
        last_in = ch(_BLOCKS[-1][3])
        last_out = _LAST_CONV_EXPANSION * last_in
        layers.append(ConvBnAct(last_in, last_out, 1, act="hardswish"))
        self.features = nn.Sequential(*layers)
        self.block_channels = [stem] + [ch(b[3]) for b in _BLOCKS]
        self.num_features = ch(_HEAD_HIDDEN)
        self.feature_channels = last_out
        self.classifier = _mlp_head(last_out, self.num_features, pretrained_cfg.num_classes, drop_rate)
        _init_weights(self)

    def forward_backbone(self, logmel: torch.Tensor) -> torch.Tensor:
        return self.features(logmel)

    def hidden_state(self, logmel: torch.Tensor, index: int) -> torch.Tensor:
        return self.features[: index + 1](logmel)


class DynamicMobileNetAT(_EfficientATBase):
    """EfficientAT DyMN: the MN body with every block a ``DyBlock``; keys ``layers.0..14``, ``in_c``, ``out_c``,
    ``classifier.{2,5}``.

    ``temperature`` divides the Dy-Conv attention logits. It is not stored in checkpoints: training anneals it from
    30 to 1, and the AudioSet weights are only correct at 1.0 (the default). ``set_temperature`` changes it.
    """

    def __init__(
        self,
        pretrained_cfg: PretrainedCfg,
        width_mult: float = 1.0,
        drop_rate: float = 0.2,
        temperature: float = 1.0,
    ):
        super().__init__(pretrained_cfg)
        self.width_mult = width_mult

        def ch(c: int) -> int:
            return make_divisible(c * width_mult, 8)

        # The original registers the blocks before the stem, which fixes the state-dict order.
        self.layers = nn.ModuleList(
            DyBlock(ch(c_in), k, ch(c_exp), ch(c_out), act, stride, width_mult, temperature=temperature)
            for c_in, k, c_exp, c_out, _se, act, stride in _BLOCKS
        )
        self.in_c = ConvBnAct(1, ch(_STEM_CHANNELS), 3, stride=2, act="hardswish")
        last_in = ch(_BLOCKS[-1][3])
        last_out = _LAST_CONV_EXPANSION * last_in
        self.out_c = ConvBnAct(last_in, last_out, 1, act="hardswish")
        self.block_channels = [ch(_STEM_CHANNELS)] + [ch(b[3]) for b in _BLOCKS]
        self.num_features = ch(_HEAD_HIDDEN)
        self.feature_channels = last_out
        self.classifier = _mlp_head(last_out, self.num_features, pretrained_cfg.num_classes, drop_rate)
        _init_weights(self)

    @property
    def temperature(self) -> float:
        return self.layers[0].depth_conv.temperature

    def set_temperature(self, temperature: float) -> None:
        """Set the Dy-Conv attention temperature of every block (1.0 for the AudioSet weights)."""
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        for m in self.modules():
            if isinstance(m, DynamicConv):
                m.temperature = float(temperature)
        self.model_kwargs["temperature"] = float(temperature)  # so that save_pretrained records it

    def forward_backbone(self, logmel: torch.Tensor) -> torch.Tensor:
        x = self.in_c(logmel)
        for layer in self.layers:
            x = layer(x)
        return self.out_c(x)

    def hidden_state(self, logmel: torch.Tensor, index: int) -> torch.Tensor:
        x = self.in_c(logmel)
        for layer in self.layers[:index]:
            x = layer(x)
        return x


# ---------------------------------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------------------------------
def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: AudioClassifier) -> dict[str, torch.Tensor]:
    """Original EfficientAT files are flat state dicts already in this module's key names: pass them through.

    (The builder strips a ``module.`` prefix before this runs.) Anything that differs is left for the strict loader
    to report by name.
    """
    return dict(state_dict)


# ---------------------------------------------------------------------------------------------------------------------
# Pretrained configurations
# ---------------------------------------------------------------------------------------------------------------------
_RELEASE = "https://github.com/fschmid56/EfficientAT/releases/download/v0.0.1/"
_SOURCE = "https://github.com/fschmid56/EfficientAT (release v0.0.1; MIT)"
_PAPER_MN = (
    "F. Schmid, K. Koutini, G. Widmer. Efficient Large-Scale Audio Tagging via Transformer-to-CNN Knowledge "
    "Distillation. ICASSP 2023. arXiv:2211.04772"
)
_PAPER_DYMN = (
    "F. Schmid, K. Koutini, G. Widmer. Dynamic Convolutional Neural Networks as Efficient Pre-trained Audio Models. "
    "IEEE/ACM TASLP 2024. arXiv:2310.15648"
)


def efficientat_frontend(hop_length: int = 320, n_mels: int = 128) -> FrontendCfg:
    """The EfficientAT evaluation frontend (``AugmentMelSTFT`` in eval mode), 32 kHz.

    Pre-emphasis 0.97 (drops one sample), STFT n_fft 1024 with a symmetric Hann window of 800 centred in it,
    reflect-padded frames every ``hop_length`` samples, power, Kaldi mel banks 0-15 kHz (the Nyquist bin weighted 0),
    ``ln(x + 1e-5)``, then ``(x + 4.5) / 5``.
    """
    return FrontendCfg(
        kind="logmel",
        sample_rate=32000,
        n_fft=1024,
        win_length=800,
        hop_length=hop_length,
        n_mels=n_mels,
        f_min=0.0,
        f_max=15000.0,
        window="hann_symmetric",
        center=True,
        pad_mode="reflect",
        preemphasis=0.97,
        stft="fft",
        mel_scale="kaldi",
        mel_norm=None,
        log="ln",
        log_offset=1e-5,
        mean=-4.5,
        std=5.0,
    )


def _cfg(
    architecture: str,
    filename: str,
    *,
    audioset_map: float,
    num_params: int,
    tag: str = "audioset",
    sha256: str | None = None,
    frontend: FrontendCfg | None = None,
    paper: str = _PAPER_MN,
    model_kwargs: dict[str, Any] | None = None,
    notes: str | None = None,
) -> PretrainedCfg:
    return PretrainedCfg(
        architecture=architecture,
        tag=tag,
        frontend=frontend or efficientat_frontend(),
        num_classes=527,
        task="multilabel",
        label_set="audioset",
        url=_RELEASE + filename,
        sha256=sha256,
        clip_seconds=10.0,
        classifier="classifier.5",
        license="MIT",
        paper=paper,
        source=_SOURCE,
        metrics={"audioset_map": audioset_map},
        num_params=num_params,
        model_kwargs=dict(model_kwargs or {}),
        notes=notes,
    )


_MN10_PARAMS = 4_876_831
_DYMN_NOTE = "Dy-Conv temperature 1.0 (the end of the AudioSet schedule; it is not stored in the checkpoint)."

default_cfgs: list[PretrainedCfg] = [
    _cfg("efficientat_mn01", "mn01_as_mAP_298.pt", audioset_map=0.298, num_params=123_783),
    _cfg("efficientat_mn02", "mn02_as_mAP_378.pt", audioset_map=0.378, num_params=324_695),
    _cfg(
        "efficientat_mn04",
        "mn04_as_mAP_432.pt",
        audioset_map=0.432,
        num_params=983_599,
        sha256="899a8c6217063f6941793102a2780b3dd788ab11fce468d9cf5f0577c453321c",
    ),
    _cfg("efficientat_mn05", "mn05_as_mAP_443.pt", audioset_map=0.443, num_params=1_431_239),
    _cfg("efficientat_mn10", "mn10_as_mAP_471.pt", audioset_map=0.471, num_params=_MN10_PARAMS),
    # mn10 trained at other time (hop) and frequency (mel bands) resolutions: the same network, another frontend.
    *(
        _cfg(
            "efficientat_mn10",
            filename,
            tag=f"audioset_hop{ms}",
            audioset_map=score,
            num_params=_MN10_PARAMS,
            frontend=efficientat_frontend(hop_length=32 * ms),
            notes=f"trained with a {ms} ms hop ({32 * ms} samples at 32 kHz)",
        )
        for ms, filename, score in (
            (5, "mn10_as_hop_5_mAP_475.pt", 0.475),
            (15, "mn10_as_hop_15_mAP_463.pt", 0.463),
            (20, "mn10_as_hop_20_mAP_456.pt", 0.456),
            (25, "mn10_as_hop_25_mAP_447.pt", 0.447),
        )
    ),
    *(
        _cfg(
            "efficientat_mn10",
            filename,
            tag=f"audioset_mels{mels}",
            audioset_map=score,
            num_params=_MN10_PARAMS,
            frontend=efficientat_frontend(n_mels=mels),
            notes=f"trained on {mels} mel bands",
        )
        for mels, filename, score in (
            (40, "mn10_as_mels_40_mAP_453.pt", 0.453),
            (64, "mn10_as_mels_64_mAP_461.pt", 0.461),
            (256, "mn10_as_mels_256_mAP_474.pt", 0.474),
        )
    ),
    _cfg("efficientat_mn20", "mn20_as_mAP_478.pt", audioset_map=0.478, num_params=17_909_287),
    _cfg("efficientat_mn30", "mn30_as_mAP_482.pt", audioset_map=0.482, num_params=39_086_367),
    _cfg("efficientat_mn40", "mn40_as_mAP_484.pt", audioset_map=0.484, num_params=68_427_303),
    _cfg(
        "efficientat_mn40",
        "mn40_as_ext_mAP_487.pt",
        tag="audioset_ext",
        audioset_map=0.487,
        num_params=68_427_303,
        notes="upstream mn40_as_ext: the same data with extended training (300 epochs)",
    ),
    _cfg(
        "efficientat_dymn04",
        "dymn04_as.pt",
        audioset_map=0.450,
        num_params=1_961_239,
        paper=_PAPER_DYMN,
        model_kwargs={"temperature": 1.0},
        notes=_DYMN_NOTE,
    ),
    _cfg(
        "efficientat_dymn10",
        "dymn10_as.pt",
        audioset_map=0.477,
        num_params=10_548_479,
        paper=_PAPER_DYMN,
        model_kwargs={"temperature": 1.0},
        notes=_DYMN_NOTE,
    ),
    _cfg(
        "efficientat_dymn20",
        "dymn20_as_mAP_493.pt",
        audioset_map=0.493,
        num_params=39_966_143,
        paper=_PAPER_DYMN,
        model_kwargs={"temperature": 1.0},
        notes=_DYMN_NOTE + " mAP from the file name; the README table gives 0.491 for an earlier dymn20_as.",
    ),
]
register_pretrained_cfgs(default_cfgs)


# ---------------------------------------------------------------------------------------------------------------------
# Builders
# ---------------------------------------------------------------------------------------------------------------------
def _create_mn(pretrained_cfg: PretrainedCfg, width_mult: float, **kwargs: Any) -> MobileNetAT:
    return MobileNetAT(pretrained_cfg, width_mult=width_mult, **kwargs)


def _create_dymn(pretrained_cfg: PretrainedCfg, width_mult: float, **kwargs: Any) -> DynamicMobileNetAT:
    return DynamicMobileNetAT(pretrained_cfg, width_mult=width_mult, **kwargs)


@register_model
def efficientat_mn01(pretrained_cfg: PretrainedCfg, **kwargs: Any) -> MobileNetAT:
    """MN, width 0.1 (0.12 M parameters)."""
    return _create_mn(pretrained_cfg, 0.1, **kwargs)


@register_model
def efficientat_mn02(pretrained_cfg: PretrainedCfg, **kwargs: Any) -> MobileNetAT:
    """MN, width 0.2 (0.32 M parameters)."""
    return _create_mn(pretrained_cfg, 0.2, **kwargs)


@register_model
def efficientat_mn04(pretrained_cfg: PretrainedCfg, **kwargs: Any) -> MobileNetAT:
    """MN, width 0.4 (0.98 M parameters)."""
    return _create_mn(pretrained_cfg, 0.4, **kwargs)


@register_model
def efficientat_mn05(pretrained_cfg: PretrainedCfg, **kwargs: Any) -> MobileNetAT:
    """MN, width 0.5 (1.43 M parameters)."""
    return _create_mn(pretrained_cfg, 0.5, **kwargs)


@register_model
def efficientat_mn10(pretrained_cfg: PretrainedCfg, **kwargs: Any) -> MobileNetAT:
    """MN, width 1.0 (4.88 M parameters)."""
    return _create_mn(pretrained_cfg, 1.0, **kwargs)


@register_model
def efficientat_mn20(pretrained_cfg: PretrainedCfg, **kwargs: Any) -> MobileNetAT:
    """MN, width 2.0 (17.9 M parameters)."""
    return _create_mn(pretrained_cfg, 2.0, **kwargs)


@register_model
def efficientat_mn30(pretrained_cfg: PretrainedCfg, **kwargs: Any) -> MobileNetAT:
    """MN, width 3.0 (39.1 M parameters)."""
    return _create_mn(pretrained_cfg, 3.0, **kwargs)


@register_model
def efficientat_mn40(pretrained_cfg: PretrainedCfg, **kwargs: Any) -> MobileNetAT:
    """MN, width 4.0 (68.4 M parameters)."""
    return _create_mn(pretrained_cfg, 4.0, **kwargs)


@register_model
def efficientat_dymn04(pretrained_cfg: PretrainedCfg, **kwargs: Any) -> DynamicMobileNetAT:
    """DyMN, width 0.4 (1.96 M parameters)."""
    return _create_dymn(pretrained_cfg, 0.4, **kwargs)


@register_model
def efficientat_dymn10(pretrained_cfg: PretrainedCfg, **kwargs: Any) -> DynamicMobileNetAT:
    """DyMN, width 1.0 (10.5 M parameters)."""
    return _create_dymn(pretrained_cfg, 1.0, **kwargs)


@register_model
def efficientat_dymn20(pretrained_cfg: PretrainedCfg, **kwargs: Any) -> DynamicMobileNetAT:
    """DyMN, width 2.0 (40.0 M parameters)."""
    return _create_dymn(pretrained_cfg, 2.0, **kwargs)
