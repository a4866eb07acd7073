"""PANNs: large-scale pretrained audio neural networks (Kong et al., 2020), loaded from the original checkpoints.

Architectures: Cnn6, Cnn10, Cnn14 (also the 16 kHz Cnn14), MobileNetV1, Wavegram-Logmel-Cnn14 and the sound event
detection model Cnn14_DecisionLevelMax (:class:`Cnn14DecisionLevelMax`, frame-level outputs), all trained on AudioSet
(527 classes, multi-label). Module attribute names equal the original ones, so a checkpoint's keys map onto
ours one to one; only the three frozen frontend tensors are renamed (see :func:`checkpoint_filter_fn`).

Data flow (every family member):

- ``frontend``: waveform ``(B, T)`` -> log-mel ``(B, 1, n_mels, frames)`` in dB. The STFT is a float32 DFT applied as a
  convolution and the mel matrix is a plain matmul, with the DFT and mel matrices loaded from the checkpoint, so the
  features are the ones the weights were trained on.
- ``bn0``: per-mel-bin batch norm (part of the model, not the frontend), then the layout becomes
  ``(B, 1, frames, n_mels)`` (time before frequency, as in the original).
- backbone (``forward_features``): ``(B, C, T', F')`` after the last conv block.
- head (``forward_pre_logits``): mean over frequency, then max over time + mean over time, dropout, ``relu(fc1(.))``:
  the embedding ``(B, num_features)``.
- ``fc_audioset``: logits ``(B, num_classes)``. The original applies a sigmoid inside ``forward``; here ``forward``
  returns logits and ``predict_proba`` applies the sigmoid.

Dropout (0.2 after each conv block, 0.5 before ``fc1``) is active only in training mode, as in the original.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from .._pretrained import FrontendCfg, PretrainedCfg
from .._registry import register_model, register_pretrained_cfgs
from ._base import AudioClassifier

if TYPE_CHECKING:
    from .htsat import FramePredictions

__all__ = [
    "Cnn6", "Cnn10", "Cnn14", "Cnn14DecisionLevelMax", "MobileNetV1", "WavegramLogmelCnn14", "checkpoint_filter_fn",
]  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------------
# Blocks
# ---------------------------------------------------------------------------------------------------------------------
class ConvBlock(nn.Module):
    """Two 3x3 conv -> BN -> ReLU stages followed by average pooling over ``(time, freq)``.

    ``pool_size=(1, 1)`` means no pooling (the last Cnn14 block).
    """

    conv_bn_pairs = (("conv1", "bn1"), ("conv2", "bn2"))  # each norm takes its conv's output (layers.fusion)

    def __init__(self, in_chs: int, out_chs: int, pool_size: tuple[int, int] = (2, 2)):
        super().__init__()
        self.conv1 = nn.Conv2d(in_chs, out_chs, kernel_size=3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(out_chs, out_chs, kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_chs)
        self.bn2 = nn.BatchNorm2d(out_chs)
        self.pool_size = tuple(pool_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        if self.pool_size != (1, 1):
            x = F.avg_pool2d(x, kernel_size=self.pool_size)
        return x


class ConvBlock5x5(nn.Module):
    """One 5x5 conv -> BN -> ReLU stage followed by average pooling (the Cnn6 block)."""

    conv_bn_pairs = (("conv1", "bn1"),)

    def __init__(self, in_chs: int, out_chs: int, pool_size: tuple[int, int] = (2, 2)):
        super().__init__()
        self.conv1 = nn.Conv2d(in_chs, out_chs, kernel_size=5, padding=2, bias=False)
        self.bn1 = nn.BatchNorm2d(out_chs)
        self.pool_size = tuple(pool_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        if self.pool_size != (1, 1):
            x = F.avg_pool2d(x, kernel_size=self.pool_size)
        return x


class ConvPreWavBlock(nn.Module):
    """1-D block of the Wavegram branch: conv3 -> BN -> ReLU -> dilated conv3 -> BN -> ReLU -> max-pool by ``pool``."""

    conv_bn_pairs = (("conv1", "bn1"), ("conv2", "bn2"))

    def __init__(self, in_chs: int, out_chs: int, pool: int = 4):
        super().__init__()
        self.conv1 = nn.Conv1d(in_chs, out_chs, kernel_size=3, padding=1, bias=False)
        self.conv2 = nn.Conv1d(out_chs, out_chs, kernel_size=3, dilation=2, padding=2, bias=False)
        self.bn1 = nn.BatchNorm1d(out_chs)
        self.bn2 = nn.BatchNorm1d(out_chs)
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return F.max_pool1d(x, kernel_size=self.pool)


def _mobilenet_stem(in_chs: int, out_chs: int, pool: int) -> nn.Sequential:
    # PANNs' variant pools *before* the batch norm, and downsamples by pooling rather than by conv stride.
    # Indices: 0 conv, 1 pool, 2 bn, 3 relu (the checkpoint keys depend on them).
    return nn.Sequential(
        nn.Conv2d(in_chs, out_chs, kernel_size=3, padding=1, bias=False),
        nn.AvgPool2d(pool),
        nn.BatchNorm2d(out_chs),
        nn.ReLU(inplace=True),
    )


def _mobilenet_separable(in_chs: int, out_chs: int, pool: int) -> nn.Sequential:
    # Depthwise 3x3 -> pool -> BN -> ReLU -> pointwise 1x1 -> BN -> ReLU.
    # Indices: 0 dw conv, 1 pool, 2 bn, 3 relu, 4 pw conv, 5 bn, 6 relu (the checkpoint keys depend on them).
    return nn.Sequential(
        nn.Conv2d(in_chs, in_chs, kernel_size=3, padding=1, groups=in_chs, bias=False),
        nn.AvgPool2d(pool),
        nn.BatchNorm2d(in_chs),
        nn.ReLU(inplace=True),
        nn.Conv2d(in_chs, out_chs, kernel_size=1, bias=False),
        nn.BatchNorm2d(out_chs),
        nn.ReLU(inplace=True),
    )


# (out_chs, pool) of the 13 depthwise-separable blocks after the 32-channel stem.
_MOBILENETV1_PLAN: tuple[tuple[int, int], ...] = (
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1),
)  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------------------------------
_LAST_MAP_ONLY = (
    "{name}'s frame embeddings are its last feature map's time steps (layer must be None); earlier blocks are "
    "offered pooled over time and frequency by embed(layer=k)"
)


class PannsClassifier(AudioClassifier):
    """Shared parts of the PANNs models: ``bn0`` over mel bins, the mean/max head with ``fc1``, and ``fc_audioset``.

    Subclasses build the backbone between ``bn0`` and the head and set ``time_pools`` (how many times the backbone
    halves the time axis), which fixes the shortest input the model accepts.
    """

    time_pools: int = 0
    prefers_channels_last = True  # Cnn14 at batch 8: ~1.15x on a 2-core AVX2 CPU; the usual NHWC gain on GPUs

    def __init__(
        self,
        pretrained_cfg: PretrainedCfg,
        num_features: int,
        drop_rate: float = 0.5,
        block_drop_rate: float = 0.2,
    ):
        super().__init__(pretrained_cfg)
        if pretrained_cfg.frontend.kind != "logmel":
            raise ValueError(
                f"{type(self).__name__} needs a log-mel frontend, got kind={pretrained_cfg.frontend.kind!r}"
            )
        self.num_features = num_features
        self.drop_rate = drop_rate
        self.block_drop_rate = block_drop_rate
        self.bn0 = nn.BatchNorm2d(pretrained_cfg.frontend.n_mels)

    def _init_head(self) -> None:
        """Create ``fc1`` and ``fc_audioset`` (called last by subclasses: the state dict keeps the original order)."""
        self.fc1 = nn.Linear(self.num_features, self.num_features)
        self.fc_audioset: nn.Module = (
            nn.Linear(self.num_features, self.num_classes) if self.num_classes > 0 else nn.Identity()
        )

    @property
    def min_samples(self) -> int:
        # The backbone halves the time axis `time_pools` times, so it needs 2**time_pools frames (Cnn14: 32 frames,
        # 9920 samples at 32 kHz); shorter input is zero-padded by prepare_waveform.
        cfg = self.frontend_cfg
        frames = 2**self.time_pools
        needed = (frames - 1) * cfg.hop_length if cfg.center else cfg.n_fft + (frames - 1) * cfg.hop_length
        return max(cfg.min_samples, needed)

    def logmel(self, waveform: torch.Tensor) -> torch.Tensor:
        """``(B, T)`` -> log-mel normalised by ``bn0``, laid out ``(B, 1, frames, n_mels)`` as the backbone expects."""
        x = self.frontend(waveform).transpose(2, 3)  # (B, 1, frames, n_mels)
        # Mel bins as channels, through the same (B, n_mels, frames, 1) view as the original, so that the batch-norm
        # kernel sees the same memory layout and rounds identically.
        return self.bn0(x.transpose(1, 3)).transpose(1, 3)

    def _block_dropout(self, x: torch.Tensor) -> torch.Tensor:
        return F.dropout(x, p=self.block_drop_rate, training=self.training)

    # -- embedding points ------------------------------------------------------------------------------------------
    def embedding_points(self) -> dict[str, int]:
        """``pooled``: the head's pooling of the last feature map (its mean over frequency, then max + mean over
        time), the vector ``fc1`` takes; ``pre_logits`` is ``relu(fc1(pooled))``."""
        return {"pooled": self.num_features}

    def block_output(self, waveform: torch.Tensor, index: int) -> torch.Tensor:
        """Prepared waveform -> the feature map ``(B, C, T', F')`` after block ``index`` (``embedding_blocks``)."""
        raise NotImplementedError(f"{type(self).__name__} offers no per-block embeddings")

    def forward_embedding(self, waveform: torch.Tensor, layer: int | str) -> torch.Tensor:
        if layer == "pooled":
            x = self.forward_features(waveform).mean(dim=3)
            return x.amax(dim=2) + x.mean(dim=2)
        return self.block_output(waveform, int(layer)).mean(dim=(2, 3))

    @torch.no_grad()
    def forward_frame_embeddings(self, waveform: torch.Tensor, layer: int | None = None) -> torch.Tensor:
        """The last block's time steps ``(B, T', C)``: the feature map averaged over frequency, before the max + mean
        over time that the head pools it with (so ``frames.amax(1) + frames.mean(1)`` is ``embed(layer="pooled")``)."""
        if layer is not None:
            raise ValueError(_LAST_MAP_ONLY.format(name=self.pretrained_cfg.name))
        return self.forward_features(self.prepare_waveform(waveform)).mean(dim=3).transpose(1, 2)

    @property
    def frame_hop_seconds(self) -> float:
        """Seconds per time step of the last feature map: ``2 ** time_pools`` STFT hops (Cnn14: 0.32 s at 32 kHz)."""
        return 2**self.time_pools * self.frontend_cfg.hop_length / self.sample_rate

    def forward_pre_logits(self, features: torch.Tensor) -> torch.Tensor:
        """``(B, C, T', F')`` -> embedding ``(B, num_features)`` = ``relu(fc1(max_t + mean_t of the freq mean))``."""
        x = features.mean(dim=3)
        x = x.amax(dim=2) + x.mean(dim=2)
        x = F.dropout(x, p=self.drop_rate, training=self.training)
        return F.relu(self.fc1(x))

    def checkpoint_filter_fn(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return checkpoint_filter_fn(super().checkpoint_filter_fn(state_dict))


class _CnnStack(PannsClassifier):
    """Cnn6/Cnn10/Cnn14: a plain stack ``conv_block1..N`` on the normalised log-mel."""

    def __init__(
        self,
        pretrained_cfg: PretrainedCfg,
        block: type[nn.Module],
        widths: tuple[int, ...],
        pools: tuple[tuple[int, int], ...],
        **kwargs: Any,
    ):
        super().__init__(pretrained_cfg, num_features=widths[-1], **kwargs)
        in_chs = 1
        for i, (out_chs, pool) in enumerate(zip(widths, pools, strict=True), start=1):
            self.add_module(f"conv_block{i}", block(in_chs, out_chs, pool_size=pool))
            in_chs = out_chs
        self._block_names = [f"conv_block{i}" for i in range(1, len(widths) + 1)]
        self._block_widths = widths
        self.time_pools = sum(p[0] == 2 for p in pools)
        self._init_head()

    def embedding_blocks(self) -> dict[int, int]:
        """1..N: the outputs of ``conv_block1`` ... ``conv_blockN`` (each after its pooling)."""
        return {i: width for i, width in enumerate(self._block_widths, start=1)}

    def block_output(self, waveform: torch.Tensor, index: int) -> torch.Tensor:
        x = self.logmel(waveform)
        for name in self._block_names[:index]:
            x = self._block_dropout(getattr(self, name)(x))
        return x

    def forward_features(self, waveform: torch.Tensor) -> torch.Tensor:
        """``(B, T)`` -> ``(B, C, T', F')`` after the last conv block (Cnn14, 10 s: ``(B, 2048, 31, 2)``)."""
        x = self.logmel(waveform)
        for name in self._block_names:
            x = self._block_dropout(getattr(self, name)(x))
        return x


class Cnn6(_CnnStack):
    """Four 5x5 conv blocks (64, 128, 256, 512 channels), each followed by 2x2 average pooling; embedding 512."""

    def __init__(self, pretrained_cfg: PretrainedCfg, **kwargs: Any):
        super().__init__(pretrained_cfg, ConvBlock5x5, (64, 128, 256, 512), ((2, 2),) * 4, **kwargs)


class Cnn10(_CnnStack):
    """Four double-3x3 conv blocks (64, 128, 256, 512 channels) with 2x2 average pooling; embedding 512."""

    def __init__(self, pretrained_cfg: PretrainedCfg, **kwargs: Any):
        super().__init__(pretrained_cfg, ConvBlock, (64, 128, 256, 512), ((2, 2),) * 4, **kwargs)


class Cnn14(_CnnStack):
    """Six double-3x3 conv blocks (64 ... 2048 channels), 2x2 pooling after the first five; embedding 2048.

    The same class serves the 32 kHz and the 16 kHz weights: only the frontend differs.
    """

    def __init__(self, pretrained_cfg: PretrainedCfg, **kwargs: Any):
        widths = (64, 128, 256, 512, 1024, 2048)
        super().__init__(pretrained_cfg, ConvBlock, widths, ((2, 2),) * 5 + ((1, 1),), **kwargs)


class Cnn14DecisionLevelMax(_CnnStack):
    """PANNs' sound event detection model (``Cnn14_DecisionLevelMax``): the Cnn14 body, classified frame by frame.

    After the last block and the mean over frequency, each of the ``T' = frames // 32`` time steps ("segments", 32 STFT
    hops = 0.32 s at 32 kHz) is smoothed by ``max_pool1d(3, 1, 1) + avg_pool1d(3, 1, 1)`` over time (the average
    counts the zero padding, as upstream's does), passed through ``relu(fc1)`` and ``fc_audioset``: segment logits
    ``(B, T', C)``. Upstream's clip output is the maximum over segments of their sigmoids; since the sigmoid is
    monotonic that is the sigmoid of the maximum segment logit, so ``forward`` returns the per-class maximum of the
    segment logits and ``predict_proba`` gives upstream's ``clipwise_output``.

    - ``forward_frames``: segment logits ``(B, T', C)``; ``predict_frames``: their probabilities with
      ``frame_times`` (:class:`~audiokit.models.htsat.FramePredictions`, as HTS-AT's);
      ``framewise_output``: upstream's ``framewise_output`` ``(B, frames, C)``, each segment repeated 32 times and the
      last one repeated up to the STFT frame count (1001 for 10 s).
    - ``embed`` / ``forward_pre_logits``: the per-class decision is a maximum over segments, which no Linear of one
      clip vector reproduces, so the embedding is the maximum over segments of the ``relu(fc1)`` segment embeddings
      (``embed_frames`` gives them per segment, ``(B, T', 2048)``); ``forward_head`` turns the backbone output into
      the logits through the segments. After ``reset_classifier(n)`` the new Linear is applied per segment the same
      way; an MLP head (``head=HeadConfig(...)``) or a pure embedder works on the clip embedding.

    Dropout: 0.2 after every block, 0.5 before and after ``fc1`` (training mode only), as upstream. ``widths`` are
    Cnn14's; other widths build the same network at another size (the tests use a narrow one).
    """

    def __init__(self, pretrained_cfg: PretrainedCfg, widths: tuple[int, ...] = (64, 128, 256, 512, 1024, 2048),
                 **kwargs: Any):  # fmt: skip
        widths = tuple(int(w) for w in widths)
        if len(widths) != 6:
            raise ValueError(f"Cnn14DecisionLevelMax has 6 blocks, got {len(widths)} widths")
        super().__init__(pretrained_cfg, ConvBlock, widths, ((2, 2),) * 5 + ((1, 1),), **kwargs)

    def embedding_points(self) -> dict[str, int]:
        """None besides ``pre_logits``: this model pools per segment after ``fc1`` (the maximum of the segment
        embeddings), so there is no pooled vector before a head layer."""
        return {}

    @property
    def segment_frames(self) -> int:
        """STFT frames per output segment (32: the five 2x2 poolings), upstream's ``interpolate_ratio``."""
        return 2**self.time_pools

    def _segment_embeddings(self, features: torch.Tensor) -> torch.Tensor:
        x = features.mean(dim=3)  # (B, C, T')
        x = F.max_pool1d(x, kernel_size=3, stride=1, padding=1) + F.avg_pool1d(x, kernel_size=3, stride=1, padding=1)
        x = F.dropout(x, p=self.drop_rate, training=self.training)
        x = F.relu(self.fc1(x.transpose(1, 2)))
        return F.dropout(x, p=self.drop_rate, training=self.training)  # (B, T', num_features)

    def forward_pre_logits(self, features: torch.Tensor) -> torch.Tensor:
        """``(B, C, T', F')`` -> clip embedding ``(B, num_features)``: the maximum of the segment embeddings."""
        return self._segment_embeddings(features).amax(dim=1)

    def _segment_classifier(self) -> nn.Linear | None:
        classifier = self.get_classifier()
        return classifier if isinstance(classifier, nn.Linear) else None

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Backbone output -> clip logits (the per-class maximum of the segment logits), or the embedding with
        ``pre_logits``; an MLP head or a pure embedder works on the clip embedding instead."""
        classifier = self._segment_classifier()
        if pre_logits or classifier is None:
            embedding = self.forward_pre_logits(features)
            return embedding if pre_logits else self.get_classifier()(embedding)
        return classifier(self._segment_embeddings(features)).amax(dim=1)

    def forward_frames(self, waveform: torch.Tensor) -> torch.Tensor:
        """``(B, T)`` -> segment logits ``(B, T', num_classes)``, ``T' = frames // 32``."""
        classifier = self._segment_classifier()
        if classifier is None:
            raise ValueError(
                "frame-level outputs need a Linear classifier applied per segment; this model's classifier is "
                f"{type(self.get_classifier()).__name__} (a pure embedder or an MLP head on the clip embedding)"
            )
        return classifier(self._segment_embeddings(self.forward_features(self.prepare_waveform(waveform))))

    @torch.no_grad()
    def predict_frames(self, waveform: torch.Tensor) -> FramePredictions:
        """Segment probabilities ``(B, T', num_classes)`` (upstream's ``segmentwise_output``) with their
        ``frame_times``."""
        from .htsat import FramePredictions  # here, not at the top: htsat imports this module

        probabilities = self.activate(self.forward_frames(waveform))
        return FramePredictions(probabilities, self.frame_times(waveform.shape[-1]))

    @torch.no_grad()
    def framewise_output(self, waveform: torch.Tensor) -> torch.Tensor:
        """Upstream's ``framewise_output`` ``(B, frames, num_classes)``: every segment's probabilities repeated for
        its 32 STFT frames, the last segment's also for the frames the pooling dropped."""
        frames = self.frontend_cfg.num_frames(self.prepare_waveform(waveform).shape[-1])
        segments = self.activate(self.forward_frames(waveform))
        repeated = segments.repeat_interleave(self.segment_frames, dim=1)
        tail = repeated[:, -1:].expand(-1, frames - repeated.shape[1], -1)
        return torch.cat([repeated, tail], dim=1)

    @torch.no_grad()
    def forward_frame_embeddings(self, waveform: torch.Tensor, layer: int | None = None) -> torch.Tensor:
        """Segment embeddings ``(B, T', num_features)`` (``relu(fc1)`` of each segment; their maximum is ``embed``)."""
        if layer is not None:
            raise ValueError("Cnn14_DecisionLevelMax's frame embeddings are fc1's (layer must be None)")
        return self._segment_embeddings(self.forward_features(self.prepare_waveform(waveform)))

    def frame_times(self, num_samples: int) -> torch.Tensor:
        """``(T', 2)`` start and end in seconds (float64) of each segment for a clip of ``num_samples``.

        STFT frame ``f`` is centred at ``f * hop`` samples; segment ``i`` takes frames ``32 i .. 32 i + 31`` and is
        given the times of frames ``32 i`` and ``32 (i + 1)``. The last segment also stands for the frames after the
        last full 32 (upstream pads its framewise output with it), so it ends at the clip's end: a 10 s clip gives
        31 segments of 0.32 s, the last one 9.6 s to 10 s. Input shorter than ``min_samples`` is zero-padded
        before the forward, and its times are those of the padded clip.
        """
        fe = self.frontend_cfg
        n = max(int(num_samples), self.min_samples)
        count = fe.num_frames(n) // self.segment_frames
        step = self.segment_frames * fe.hop_length / fe.sample_rate
        edges = torch.arange(count + 1, dtype=torch.float64) * step
        edges[-1] = max(float(edges[-1]), n / fe.sample_rate)
        return torch.stack([edges[:-1], edges[1:]], dim=1)

    @property
    def frame_hop_seconds(self) -> float:
        """Seconds between segment starts: 32 hops, 0.32 s at 32 kHz."""
        return self.segment_frames * self.frontend_cfg.hop_length / self.sample_rate


class MobileNetV1(PannsClassifier):
    """PANNs' MobileNetV1: a 32-channel stem and 13 depthwise-separable blocks (``features.0`` ... ``features.13``).

    Unlike the ImageNet MobileNet, downsampling is average pooling placed between each 3x3 conv and its batch norm,
    and there is no dropout between blocks. Embedding 1024.
    """

    time_pools = 5

    def __init__(self, pretrained_cfg: PretrainedCfg, **kwargs: Any):
        super().__init__(pretrained_cfg, num_features=_MOBILENETV1_PLAN[-1][0], **kwargs)
        layers = [_mobilenet_stem(1, 32, pool=2)]
        in_chs = 32
        for out_chs, pool in _MOBILENETV1_PLAN:
            layers.append(_mobilenet_separable(in_chs, out_chs, pool))
            in_chs = out_chs
        self.features = nn.Sequential(*layers)
        self._init_head()

    def forward_features(self, waveform: torch.Tensor) -> torch.Tensor:
        """``(B, T)`` -> ``(B, 1024, T', F')`` (10 s: ``(B, 1024, 31, 2)``)."""
        return self.features(self.logmel(waveform))

    def embedding_blocks(self) -> dict[int, int]:
        """0: the stem's output (``features.0``); 1..13: the depthwise-separable blocks'."""
        return dict(enumerate([32] + [width for width, _ in _MOBILENETV1_PLAN]))

    def block_output(self, waveform: torch.Tensor, index: int) -> torch.Tensor:
        return self.features[: index + 1](self.logmel(waveform))


class WavegramLogmelCnn14(PannsClassifier):
    """Cnn14 fed with two branches concatenated after its first block: log-mel and a learned "Wavegram".

    The Wavegram branch is a strided 1-D conv over the raw waveform and three 1-D blocks (each max-pooling by 4);
    its 128 channels are regrouped into 4 channels x 32 pseudo-frequency bins and passed through a 2-D block that
    halves time. Embedding 2048.

    Input length: the two branches reach the concatenation with the same number of frames only for some input
    lengths (the original raises a size error for the others, e.g. 9920 samples; 10 s, 7 s and 1 s work). Here
    ``forward_features`` zero-pads the waveform at the end by the fewest samples that make the branches agree
    (nothing for the lengths the original accepts, so the outputs are the original's there; never more than
    10240 samples, since every multiple of 10240 works).
    """

    time_pools = 5
    conv_bn_pairs = (("pre_conv0", "pre_bn0"),)

    def __init__(self, pretrained_cfg: PretrainedCfg, **kwargs: Any):
        super().__init__(pretrained_cfg, num_features=2048, **kwargs)
        fe = pretrained_cfg.frontend
        if fe.n_mels != 64 or not fe.center:
            raise ValueError("WavegramLogmelCnn14 needs 64 mel bins and a centred STFT (the Wavegram has 32 bins)")
        self.pre_conv0 = nn.Conv1d(1, 64, kernel_size=11, stride=5, padding=5, bias=False)
        self.pre_bn0 = nn.BatchNorm1d(64)
        self.pre_block1 = ConvPreWavBlock(64, 64)
        self.pre_block2 = ConvPreWavBlock(64, 128)
        self.pre_block3 = ConvPreWavBlock(128, 128)
        self.pre_block4 = ConvBlock(4, 64, pool_size=(2, 1))
        self.conv_block1 = ConvBlock(1, 64)
        self.conv_block2 = ConvBlock(128, 128)
        self.conv_block3 = ConvBlock(128, 256)
        self.conv_block4 = ConvBlock(256, 512)
        self.conv_block5 = ConvBlock(512, 1024)
        self.conv_block6 = ConvBlock(1024, 2048, pool_size=(1, 1))
        self._init_head()

    def _branch_frames(self, num_samples: int) -> tuple[int, int]:
        """Frames that the Wavegram and the log-mel branch produce at the concatenation for ``num_samples``."""
        conv_out = (num_samples - 1) // 5 + 1  # kernel 11, stride 5, padding 5
        wave = conv_out // (4 * 4 * 4) // 2
        mel = self.frontend_cfg.num_frames(num_samples) // 2
        return wave, mel

    def aligned_length(self, num_samples: int) -> int:
        """The shortest length >= ``num_samples`` at which both branches agree (see the class docstring)."""
        for n in range(num_samples, num_samples + 10240 + 1):
            wave, mel = self._branch_frames(n)
            if wave == mel:
                return n
        raise RuntimeError(f"no input length from {num_samples} aligns the two branches (frontend {self.frontend_cfg})")

    def forward_wavegram(self, waveform: torch.Tensor) -> torch.Tensor:
        """``(B, T)`` -> Wavegram ``(B, 64, frames / 2, 32)``."""
        a = F.relu(self.pre_bn0(self.pre_conv0(waveform[:, None, :])))
        a = self.pre_block3(self.pre_block2(self.pre_block1(a)))  # (B, 128, T')
        a = a.reshape(a.shape[0], -1, 32, a.shape[-1]).transpose(2, 3)  # (B, 4, T', 32)
        return self.pre_block4(a)

    def forward_features(self, waveform: torch.Tensor) -> torch.Tensor:
        """``(B, T)`` -> ``(B, 2048, T', 2)``; pads the waveform as the class docstring explains."""
        short = self.aligned_length(waveform.shape[-1]) - waveform.shape[-1]
        if short:
            waveform = F.pad(waveform, (0, short))
        wavegram = self.forward_wavegram(waveform)
        x = self.conv_block1(self.logmel(waveform))
        x = self._block_dropout(torch.cat((x, wavegram), dim=1))
        for block in (self.conv_block2, self.conv_block3, self.conv_block4, self.conv_block5, self.conv_block6):
            x = self._block_dropout(block(x))
        return x


# ---------------------------------------------------------------------------------------------------------------------
# Checkpoint conversion
# ---------------------------------------------------------------------------------------------------------------------
# The original frontend stores its DFT and mel matrices as frozen parameters under these names.
_FRONTEND_KEYS = {
    "spectrogram_extractor.stft.conv_real.weight": "frontend.dft_real",
    "spectrogram_extractor.stft.conv_imag.weight": "frontend.dft_imag",
    "logmel_extractor.melW": "frontend.mel_fb",
}


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map an original PANNs state dict (already taken out of ``{'model': ...}``) onto our key names.

    Only the frontend tensors are renamed; they keep their values, which are the exact float32 DFT x window and mel
    matrices the weights were trained with. Our own key names pass through unchanged.
    """
    return {_FRONTEND_KEYS.get(k, k): v for k, v in state_dict.items()}


# ---------------------------------------------------------------------------------------------------------------------
# Pretrained configurations
# ---------------------------------------------------------------------------------------------------------------------
def _frontend(sample_rate: int, n_fft: int, hop_length: int, f_max: float) -> FrontendCfg:
    return FrontendCfg(
        kind="logmel",
        sample_rate=sample_rate,
        n_fft=n_fft,
        hop_length=hop_length,
        n_mels=64,
        f_min=50.0,
        f_max=f_max,
        window="hann",  # periodic
        center=True,
        pad_mode="reflect",
        stft="dft_conv",
        mel_scale="slaney",
        mel_norm="slaney",
        log="db",
        amin=1e-10,
        stored_in_checkpoint=True,
    )


FRONTEND_32K = _frontend(32000, 1024, 320, 14000.0)
FRONTEND_16K = _frontend(16000, 512, 160, 8000.0)

_ZENODO = "https://zenodo.org/record/3987831/files/{}?download=1"


def _cfg(
    architecture: str,
    filename: str,
    audioset_map: float,
    num_params: int,
    *,
    frontend: FrontendCfg = FRONTEND_32K,
    sha256: str | None = None,
    md5: str | None = None,
    notes: str | None = None,
) -> PretrainedCfg:
    if md5 is not None:
        notes = (notes + "; " if notes else "") + f"upstream md5 {md5}"
    return PretrainedCfg(
        architecture=architecture,
        tag="audioset",
        frontend=frontend,
        num_classes=527,
        task="multilabel",
        label_set="audioset",
        url=_ZENODO.format(filename.replace("=", "%3D")),
        sha256=sha256,
        filename=filename,
        clip_seconds=10.0,
        classifier="fc_audioset",
        license="code MIT; weights CC-BY-4.0",
        paper="Kong et al., PANNs: Large-Scale Pretrained Audio Neural Networks for Audio Pattern Recognition, "
        "IEEE/ACM TASLP 2020 (arXiv:1912.10211)",
        source="https://github.com/qiuqiangkong/audioset_tagging_cnn, weights on Zenodo record 3987831",
        metrics={"audioset_map": audioset_map},
        num_params=num_params,
        notes=notes,
    )


default_cfgs: list[PretrainedCfg] = [
    _cfg("panns_cnn14", "Cnn14_mAP=0.431.pth", 0.431, 80_753_615,
         sha256="0dc499e40e9761ef5ea061ffc77697697f277f6a960894903df3ada000e34b31"),
    _cfg("panns_cnn14_16k", "Cnn14_16k_mAP=0.438.pth", 0.438, 80_753_615, frontend=FRONTEND_16K,
         md5="362fc5ff18f1d6ad2f6d464b45893f2c",
         notes="trained on 32 kHz clips decimated by 2 without an anti-alias filter"),
    _cfg("panns_cnn10", "Cnn10_mAP=0.380.pth", 0.380, 5_219_279, md5="bfb1f1f9968938fa8ef4012b8471f5f6"),
    _cfg("panns_cnn6", "Cnn6_mAP=0.343.pth", 0.343, 4_837_455, md5="e25e26b84585b14c7754c91e48efc9be"),
    _cfg("panns_mobilenetv1", "MobileNetV1_mAP=0.389.pth", 0.389, 4_796_303, md5="a419303e1c88aa1b9d2ac3811563d371"),
    _cfg("panns_wavegram_logmel_cnn14", "Wavegram_Logmel_Cnn14_mAP=0.439.pth", 0.439, 81_065_487,
         md5="17fa9ab65af3c0eb5ffbc5f65552c4e1"),
    _cfg("panns_cnn14_decisionlevelmax", "Cnn14_DecisionLevelMax_mAP=0.385.pth", 0.385, 80_753_615,
         sha256="dd3b4043a87d4ec13df8082c0fcfee3fb5084151808e47e060987a95eabdd142",
         notes="sound event detection: frame-level outputs every 0.32 s (predict_frames)"),
]  # fmt: skip
register_pretrained_cfgs(default_cfgs)


# ---------------------------------------------------------------------------------------------------------------------
# Builders (named after the registry names)
# ---------------------------------------------------------------------------------------------------------------------
@register_model
def panns_cnn6(pretrained_cfg: PretrainedCfg, **kwargs: Any) -> Cnn6:
    """PANNs Cnn6 (4.8 M parameters, AudioSet mAP 0.343), 32 kHz."""
    return Cnn6(pretrained_cfg, **kwargs)


@register_model
def panns_cnn10(pretrained_cfg: PretrainedCfg, **kwargs: Any) -> Cnn10:
    """PANNs Cnn10 (5.2 M parameters, AudioSet mAP 0.380), 32 kHz."""
    return Cnn10(pretrained_cfg, **kwargs)


@register_model
def panns_cnn14(pretrained_cfg: PretrainedCfg, **kwargs: Any) -> Cnn14:
    """PANNs Cnn14 (80.8 M parameters, AudioSet mAP 0.431), 32 kHz."""
    return Cnn14(pretrained_cfg, **kwargs)


@register_model
def panns_cnn14_16k(pretrained_cfg: PretrainedCfg, **kwargs: Any) -> Cnn14:
    """PANNs Cnn14 for 16 kHz audio (80.8 M parameters, AudioSet mAP 0.438)."""
    return Cnn14(pretrained_cfg, **kwargs)


@register_model
def panns_mobilenetv1(pretrained_cfg: PretrainedCfg, **kwargs: Any) -> MobileNetV1:
    """PANNs MobileNetV1 (4.8 M parameters, AudioSet mAP 0.389), 32 kHz."""
    return MobileNetV1(pretrained_cfg, **kwargs)


@register_model
def panns_wavegram_logmel_cnn14(pretrained_cfg: PretrainedCfg, **kwargs: Any) -> WavegramLogmelCnn14:
    """PANNs Wavegram-Logmel-Cnn14 (81.1 M parameters, AudioSet mAP 0.439), 32 kHz."""
    return WavegramLogmelCnn14(pretrained_cfg, **kwargs)


@register_model
def panns_cnn14_decisionlevelmax(pretrained_cfg: PretrainedCfg, **kwargs: Any) -> Cnn14DecisionLevelMax:
    """PANNs Cnn14_DecisionLevelMax (80.8 M parameters, AudioSet mAP 0.385), 32 kHz: sound event detection with
    segment outputs every 0.32 s."""
    return Cnn14DecisionLevelMax(pretrained_cfg, **kwargs)
