"""HTS-AT, the Hierarchical Token-Semantic Audio Transformer (Chen, Du, Zhu, Ma, Berg-Kirkpatrick, Dubnov,
ICASSP 2022), loaded from the authors' PyTorch-Lightning checkpoints (RetroCirce/HTS-Audio-Transformer, MIT).

A Swin-Transformer-T-like network over a 64-band log-mel spectrogram folded into a 256 x 256 "image":

    waveform (32 kHz) -> ``frontend`` (torchlibrosa's DFT-as-conv STFT, n_fft 1024, hop 320, periodic Hann, centred
    with reflect padding; power; Slaney mel 50-14000 Hz; ``10 log10(max(x, 1e-10))``, ref 1, no top_db: the PANNs
    frontend, with its float32 DFT and mel matrices read from the checkpoint) -> ``bn0`` over the mel bins ->
    ``(B, 1, T, 64)`` -> the time axis stretched to 1024 frames (bicubic, ``align_corners=True``; skipped at exactly
    1024) -> cut into 4 chunks of 256 frames stacked along frequency (chunk-major rows) -> ``(B, 1, 256, 256)`` ->
    ``patch_embed`` (4 x 4 patches, LayerNorm) -> 4 Swin stages (dims 96-768, depths 2-2-6-2, heads 4-8-16-32,
    window 8, shifted windows in every second block, patch merging at the end of stages 0-2) -> ``norm`` ->
    the 8 x 8 token map regrouped to ``(B, 768, 2, 32)`` (each chunk's two frequency rows stay rows, the chunks'
    time columns line up into 32 frames) -> ``tscam_conv`` (Conv2d ``(2, 3)``, padding ``(0, 1)``): frame logits
    ``(B, C, 32)``.

The audiokit contract on top of that:

- ``forward``: clip **logits** ``(B, C)`` = the mean of the 32 frame logits, before any sigmoid; ``predict_proba``
  (sigmoid for the AudioSet weights) is upstream's ``clipwise_output``.
- ``embed`` / ``forward_pre_logits``: upstream's ``latent_output``, the mean of the regrouped token map ``(B, 768)``.
  The clip logits are not a Linear of it (the frame convolution sees the two frequency rows apart and zero-pads the
  first and last frame), so ``tscam_conv`` is kept as the classifier and ``forward_head`` applies it to the token map.
- ``embed_frames``: ``(B, 32, 768)``, each frame's column of the token map averaged over its two frequency rows (their
  mean over the frames is ``embed``); ``forward_frames``: frame logits ``(B, 32, C)`` (their mean is ``forward``);
  ``predict_frames``: the frame probabilities and their times (:class:`FramePredictions`). For sigmoid models these
  are upstream's ``framewise_output`` before it repeats each of the 32 frames 32 times onto the stretched grid.
  ``frame_times`` maps the 32 frames back to seconds, undoing the stretch of the input's STFT frames onto 1024.
- ``reset_classifier(n)``: a fresh ``tscam_conv`` for ``n`` classes (the frame-level output stays), with ``head``
  resized alike; ``head=HeadConfig(...)`` puts an MLP on the clip embedding instead (no frame-level output then);
  ``0`` gives a pure embedder.

``head``, upstream's ``Linear(527, 527)``, is in every checkpoint but upstream's forward never uses it when the
token-semantic module is on (as for every released model): it is loaded and kept, so that the release loads
strictly and the parameter count is upstream's, and a log line says that it is unused.

Input length: the spectrogram must have at most 1024 frames, ``max_samples`` = 327,679 samples (10.24 s); a 10 s clip
has 1001 frames and is stretched to 1024, shorter clips more. Longer input is refused with a ``ValueError`` and
``audiokit.tag``/``embed`` cut long files into windows of ``max_samples``, as for PaSST. Upstream's own eval path for
longer spectrograms (crops of ``(T - 1) // 2`` frames every ``(T - 1) // 4``, each stretched to 1024, outputs
averaged) is not reproduced: every crop would be stretched by its own factor, so its frame outputs have no single
time grid, and fixed windows give the same coverage with each window seen at the scale the model was trained on.
Upstream's ``infer_mode`` (repeat a short spectrogram ``floor(1024 / T)`` times before stretching, used by its
``predict.py``) is not the path its evaluation took and is not offered; for 10 s clips both are the same.

The Swin blocks and patch merging are timm's (``timm.models.swin_transformer.SwinTransformerBlock`` and
``PatchMerging``): their state-dict names (``norm1``, ``attn.relative_position_bias_table``, ``attn.qkv``,
``attn.proj``, ``norm2``, ``mlp.fc1``, ``mlp.fc2``; ``downsample.norm``, ``downsample.reduction``), their patch
merging order (rows (0, 0), (1, 0), (0, 1), (1, 1) of each 2 x 2 group), their cyclic shift by half a window, their
-100 attention mask, LayerNorm eps 1e-5 and exact GELU are upstream's, and so is their rule that a stage no larger
than the window (the last, 8 x 8) uses one unshifted window. Only the stage container is this module's: timm's
``SwinTransformerStage`` merges patches at the *start* of the next stage, upstream at the *end* of the current one
(``layers.0.downsample`` in the checkpoints), so ``HtsatStage`` holds the blocks and then the downsample. timm keeps
``relative_position_index`` and ``attn_mask`` as computed, non-persistent buffers; the checkpoints store them (17
tensors), and :func:`checkpoint_filter_fn` checks them against the computed ones before dropping them.

Training mode adds upstream's SpecAugmentation after ``bn0`` (2 time stripes of up to 63 frames and 2 frequency
stripes of up to 7 bins set to 0, per clip) and drop-path 0.1. Mixup is audiokit's (``train.augment``).
"""

from __future__ import annotations

import logging
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .._pretrained import PretrainedCfg
from .._registry import register_model, register_pretrained_cfgs
from .._weights import CheckpointMismatchError
from ..layers import HeadConfig
from ._base import AudioClassifier
from .panns import FRONTEND_32K
from .panns import checkpoint_filter_fn as panns_frontend_keys

__all__ = ["HTSAT", "FramePredictions", "HtsatStage", "TokenSemanticConv", "checkpoint_filter_fn"]

_logger = logging.getLogger(__name__)

LIGHTNING_PREFIX = "sed_model."  # SEDWrapper holds the network as ``sed_model``
FRONTEND_TENSORS = ("dft_real", "dft_imag", "mel_fb")
# Buffers upstream saves with every block; deterministic functions of the geometry.
_DERIVED_SUFFIXES = (".attn.relative_position_index", ".attn_mask")


# ---------------------------------------------------------------------------------------------------------------------
# Blocks
# ---------------------------------------------------------------------------------------------------------------------
class PatchEmbed(nn.Module):
    """``proj`` Conv2d over the folded spectrogram, then ``norm`` (LayerNorm); output channels-last ``(B, H, W, D)``,
    the layout timm's Swin blocks take."""

    def __init__(self, patch_size: int, patch_stride: int, embed_dim: int, in_chans: int = 1):
        super().__init__()
        padding = (patch_size - patch_stride) // 2
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, stride=patch_stride, padding=padding)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


class HtsatStage(nn.Module):
    """One stage: ``blocks`` (timm Swin blocks, every second one shifted) then ``downsample`` (patch merging, or None
    for the last stage), the order of upstream's ``BasicLayer``. Channels-last ``(B, H, W, C)`` in and out."""

    def __init__(
        self,
        dim: int,
        resolution: tuple[int, int],
        depth: int,
        num_heads: int,
        window_size: int,
        mlp_ratio: float,
        drop_rate: float,
        attn_drop_rate: float,
        drop_path: list[float],
        downsample: bool,
    ):
        super().__init__()
        from timm.models.swin_transformer import PatchMerging, SwinTransformerBlock

        self.blocks = nn.ModuleList(
            SwinTransformerBlock(
                dim,
                input_resolution=resolution,
                num_heads=num_heads,
                window_size=window_size,
                shift_size=0 if i % 2 == 0 else window_size // 2,
                mlp_ratio=mlp_ratio,
                qkv_bias=True,
                proj_drop=drop_rate,
                attn_drop=attn_drop_rate,
                drop_path=drop_path[i],
                norm_layer=nn.LayerNorm,
                act_layer=nn.GELU,
            )
            for i in range(depth)
        )
        self.downsample = PatchMerging(dim, norm_layer=nn.LayerNorm) if downsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.downsample(x) if self.downsample is not None else x


class TokenSemanticConv(nn.Conv2d):
    """The token-semantic classifier, ``Conv2d(num_features, num_classes, (rows, 3), padding (0, 1))`` over the
    regrouped token map; ``in_features``/``out_features`` let it stand where audiokit expects a final layer."""

    def __init__(self, in_features: int, num_classes: int, rows: int):
        super().__init__(in_features, num_classes, kernel_size=(rows, 3), padding=(0, 1))

    @property
    def in_features(self) -> int:
        return self.in_channels

    @property
    def out_features(self) -> int:
        return self.out_channels


class FramePredictions(NamedTuple):
    """``predict_frames``'s result: ``probabilities (B, frames, classes)`` and ``times (frames, 2)``, each frame's
    start and end in seconds (float64; see ``HTSAT.frame_times``)."""

    probabilities: torch.Tensor
    times: torch.Tensor


def _drop_stripes(x: torch.Tensor, dim: int, width: int, count: int) -> torch.Tensor:
    """Per clip, ``count`` stripes of ``0 .. width - 1`` positions along ``dim`` set to zero, at uniform offsets
    (torchlibrosa's DropStripes, which SpecAugmentation applies to time and then frequency)."""
    keep = torch.ones(x.shape[0], x.shape[dim], dtype=x.dtype)
    total = x.shape[dim]
    for row in keep:
        for _ in range(count):
            distance = min(int(torch.randint(0, width, (1,))), total - 1)
            start = int(torch.randint(0, total - distance, (1,)))
            row[start : start + distance] = 0
    shape = [x.shape[0]] + [x.shape[d] if d == dim else 1 for d in range(1, x.dim())]
    return x * keep.to(x.device).reshape(shape)


# ---------------------------------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------------------------------
class HTSAT(AudioClassifier):
    """HTS-AT; ``forward`` returns clip logits ``(B, num_classes)``, ``forward_frames`` frame logits.

    Args:
        pretrained_cfg: the weights' configuration (frontend, classes).
        spec_size: side of the square input image (256); ``spec_size // n_mels`` time chunks are stacked, and the
            spectrogram is stretched to ``spec_size * spec_size // n_mels`` frames.
        patch_size, patch_stride: patch embedding (4, 4).
        embed_dim, depths, num_heads, window_size, mlp_ratio: the Swin stages (96, (2, 2, 6, 2), (4, 8, 16, 32), 8, 4).
        drop_rate, attn_drop_rate, drop_path_rate: dropout and stochastic depth (upstream trains with 0, 0, 0.1).
        time_drop_width, time_stripes, freq_drop_width, freq_stripes: SpecAugmentation in training mode (64, 2, 8, 2;
            a count of 0 turns that part off).
    """

    length_dependent_frames = True

    def __init__(
        self,
        pretrained_cfg: PretrainedCfg,
        spec_size: int = 256,
        patch_size: int = 4,
        patch_stride: int = 4,
        embed_dim: int = 96,
        depths: tuple[int, ...] | list[int] = (2, 2, 6, 2),
        num_heads: tuple[int, ...] | list[int] = (4, 8, 16, 32),
        window_size: int = 8,
        mlp_ratio: float = 4.0,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.1,
        time_drop_width: int = 64,
        time_stripes: int = 2,
        freq_drop_width: int = 8,
        freq_stripes: int = 2,
    ):
        super().__init__(pretrained_cfg)
        fe = pretrained_cfg.frontend
        if fe.kind != "logmel" or fe.stft != "dft_conv" or not fe.stored_in_checkpoint:
            raise ValueError("HTS-AT needs the torchlibrosa-style logmel frontend stored in its checkpoint (PANNs')")
        depths, num_heads = list(depths), list(num_heads)
        if len(depths) != len(num_heads) or not depths:
            raise ValueError(f"depths {depths} and num_heads {num_heads} must be non-empty and of one length")
        if spec_size % fe.n_mels:
            raise ValueError(f"spec_size {spec_size} must be a multiple of n_mels {fe.n_mels}")
        self.freq_ratio = spec_size // fe.n_mels
        grid = spec_size // patch_stride
        self.final_grid = grid // 2 ** (len(depths) - 1)
        if grid % 2 ** (len(depths) - 1) or self.final_grid % self.freq_ratio:
            raise ValueError(
                f"spec_size {spec_size} / patch_stride {patch_stride} = {grid} patches must halve {len(depths) - 1} "
                f"times into a multiple of the {self.freq_ratio} time chunks"
            )
        for i, heads in enumerate(num_heads):
            if (embed_dim * 2**i) % heads:
                raise ValueError(f"stage {i}: dim {embed_dim * 2**i} is not divisible by {heads} heads")
        if min(time_drop_width, freq_drop_width, time_stripes, freq_stripes) < 0:
            raise ValueError("SpecAugmentation widths and stripe counts must be >= 0")
        self.spec_size = spec_size
        self.target_frames = spec_size * self.freq_ratio  # 1024
        self.embed_dim = embed_dim
        self.num_features = embed_dim * 2 ** (len(depths) - 1)
        self.time_drop_width, self.time_stripes = time_drop_width, time_stripes
        self.freq_drop_width, self.freq_stripes = freq_drop_width, freq_stripes
        self._frontend_as_frozen_parameters()

        # Registration order = the checkpoints' tensor order.
        self.bn0 = nn.BatchNorm2d(fe.n_mels)
        self.patch_embed = PatchEmbed(patch_size, patch_stride, embed_dim)
        self.pos_drop = nn.Dropout(drop_rate)
        rates = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        self.layers = nn.ModuleList()
        for i, depth in enumerate(depths):
            side = grid // 2**i
            self.layers.append(
                HtsatStage(
                    embed_dim * 2**i,
                    (side, side),
                    depth,
                    num_heads[i],
                    window_size,
                    mlp_ratio,
                    drop_rate,
                    attn_drop_rate,
                    rates[sum(depths[:i]) : sum(depths[: i + 1])],
                    downsample=i < len(depths) - 1,
                )
            )
        self.norm = nn.LayerNorm(self.num_features)
        self.rows = self.final_grid // self.freq_ratio  # frequency rows per chunk in the token map (2)
        n = pretrained_cfg.num_classes
        self.tscam_conv: nn.Module = TokenSemanticConv(self.num_features, n, self.rows) if n > 0 else nn.Identity()
        self.head: nn.Module = nn.Linear(n, n) if n > 0 else nn.Identity()  # stored by upstream, never used
        self._init_weights()

    def _frontend_as_frozen_parameters(self) -> None:
        # torchlibrosa holds its DFT and mel matrices as frozen nn.Parameters, and upstream's published count
        # (31,325,143) includes them; holding them the same way keeps that count (their state-dict names are
        # unchanged, and nothing trains them).
        for name in FRONTEND_TENSORS:
            value = self.frontend._buffers.pop(name)
            self.frontend.register_parameter(name, nn.Parameter(value, requires_grad=False))

    def _init_weights(self) -> None:
        # Upstream's initialisation: truncated normal (std 0.02) Linear weights with zero bias, unit LayerNorms.
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    # -- geometry --------------------------------------------------------------------------------------------------
    @property
    def max_samples(self) -> int:
        """Longest waveform whose spectrogram fits the 1024-frame grid (centred STFT: ``1024 * hop - 1`` samples,
        327,679 = 10.24 s at 32 kHz); longer input must be windowed."""
        return self.target_frames * self.frontend_cfg.hop_length - 1

    def frame_times(self, num_samples: int) -> torch.Tensor:
        """``(frames, 2)`` start and end in seconds of each output frame for a clip of ``num_samples``.

        The clip's ``T`` STFT frames (frame ``f`` centred at ``f * hop`` samples) are stretched onto 1024 with
        ``align_corners=True``, so grid position ``j`` sits at STFT frame ``j (T - 1) / 1023``; output frame ``i``
        covers grid positions ``32 i`` to ``32 i + 31`` and is given the times of ``32 i`` and ``32 (i + 1)``.
        A 10 s clip (1001 frames) gives frames 0.3128 s long; ``max_samples`` gives 0.32 s.
        """
        fe = self.frontend_cfg
        frames = fe.num_frames(max(num_samples, self.min_samples))
        if frames > self.target_frames:
            raise ValueError(self._too_long(frames))
        per_position = max(frames - 1, 0) / (self.target_frames - 1) * fe.hop_length / fe.sample_rate
        count = self.final_grid * self.freq_ratio
        span = self.target_frames // count
        edges = torch.arange(count + 1, dtype=torch.float64) * span * per_position
        return torch.stack([edges[:-1], edges[1:]], dim=1)

    @property
    def frame_hop_seconds(self) -> float:
        """Seconds per output frame for input of ``max_samples`` (1024 STFT frames, no stretch): 32 hops, 0.32 s.
        Shorter clips are stretched, so their frames are shorter (``frame_times`` gives them for any length)."""
        positions = self.target_frames // (self.final_grid * self.freq_ratio)
        return positions * self.frontend_cfg.hop_length / self.sample_rate

    def _too_long(self, frames: int) -> str:
        fe = self.frontend_cfg
        return (
            f"{frames} spectrogram frames are more than the {self.target_frames} of {self.pretrained_cfg.name}'s "
            f"input: at most {self.max_samples} samples ({self.max_samples / fe.sample_rate:.3f} s at "
            f"{fe.sample_rate} Hz, max_samples) fit. Split longer audio into windows (audiokit tag/embed do this "
            "themselves) or crop it"
        )

    # -- forward ---------------------------------------------------------------------------------------------------
    def logmel(self, waveform: torch.Tensor) -> torch.Tensor:
        """``(B, T)`` -> log-mel normalised by ``bn0``, ``(B, 1, frames, n_mels)`` (SpecAugmentation in training)."""
        x = self.frontend(waveform).transpose(2, 3)  # (B, 1, frames, n_mels)
        # Mel bins as channels through the same (B, n_mels, frames, 1) view as upstream's.
        x = self.bn0(x.transpose(1, 3)).transpose(1, 3)
        if self.training:
            if self.time_stripes and self.time_drop_width:
                x = _drop_stripes(x, 2, self.time_drop_width, self.time_stripes)
            if self.freq_stripes and self.freq_drop_width:
                x = _drop_stripes(x, 3, self.freq_drop_width, self.freq_stripes)
        return x

    def fold(self, logmel: torch.Tensor) -> torch.Tensor:
        """``(B, 1, T <= 1024, n_mels)`` -> ``(B, 1, spec_size, spec_size)``: time stretched to 1024 frames, then
        chunk ``c`` (frames ``256 c .. 256 c + 255``) laid out as image rows ``c * n_mels .. (c + 1) * n_mels - 1``
        (mel bins), its frames as the columns."""
        b, c, frames, mels = logmel.shape
        if frames > self.target_frames:
            raise ValueError(self._too_long(frames))
        if frames < self.target_frames:
            logmel = F.interpolate(logmel, (self.target_frames, mels), mode="bicubic", align_corners=True)
        chunks = logmel.reshape(b, c, self.freq_ratio, self.spec_size, mels)  # (B, 1, chunk, frame, mel)
        return chunks.transpose(3, 4).reshape(b, c, self.freq_ratio * mels, self.spec_size)

    def forward_image(self, image: torch.Tensor) -> torch.Tensor:
        """Folded spectrogram ``(B, 1, 256, 256)`` -> regrouped token map ``(B, num_features, rows, frames)``
        (``(B, 768, 2, 32)``): frame ``t`` = chunk ``t // 8``, token column ``t % 8``."""
        x = self.pos_drop(self.patch_embed(image))
        for stage in self.layers:
            x = stage(x)
        x = self.norm(x)  # (B, H, W, C), H = chunk * rows + row
        b, _, w, c = x.shape
        x = x.reshape(b, self.freq_ratio, self.rows, w, c)  # (B, chunk, row, column, C)
        return x.permute(0, 4, 2, 1, 3).reshape(b, c, self.rows, self.freq_ratio * w)

    def forward_features(self, waveform: torch.Tensor) -> torch.Tensor:
        """``(B, T)`` waveform -> regrouped token map ``(B, num_features, rows, frames)``."""
        return self.forward_image(self.fold(self.logmel(waveform)))

    def forward_pre_logits(self, features: torch.Tensor) -> torch.Tensor:
        """Token map -> clip embedding ``(B, num_features)``: its mean (upstream's ``latent_output``)."""
        return features.flatten(2).mean(dim=2)

    # -- embedding points ------------------------------------------------------------------------------------------
    def embedding_blocks(self) -> dict[int, int]:
        """Per Swin *stage*: 0 the patch embedding's output, k stage k's last block's output, before the stage's patch
        merging (96, 96, 192, 384, 768 wide for HTS-AT); each the mean over all its tokens (time and frequency)."""
        widths = [self.embed_dim] + [self.embed_dim * 2**i for i in range(len(self.layers))]
        return dict(enumerate(widths))

    def embedding_points(self) -> dict[str, int]:
        """``pooled``: the mean of the final-norm token map (upstream's ``latent_output``); ``tscam_conv`` does not
        take it as input, so it is also ``pre_logits``."""
        return {"pooled": self.num_features}

    def forward_embedding(self, waveform: torch.Tensor, layer: int | str) -> torch.Tensor:
        if layer == "pooled":
            return self.forward_pre_logits(self.forward_features(waveform))
        x = self.pos_drop(self.patch_embed(self.fold(self.logmel(waveform))))
        for i, stage in enumerate(self.layers[: int(layer)]):
            if i > 0:  # the previous stage's patch merging, skipped until this stage's blocks are wanted
                x = self.layers[i - 1].downsample(x)
            for block in stage.blocks:
                x = block(x)
        return x.mean(dim=(1, 2))

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Token map -> clip logits (the mean of the frame logits), or the embedding with ``pre_logits``. An MLP head
        (``reset_classifier(head=...)``) or a pure embedder works on the embedding instead."""
        classifier = self.get_classifier()
        if pre_logits or not isinstance(classifier, TokenSemanticConv):
            embedding = self.forward_pre_logits(features)
            return embedding if pre_logits else classifier(embedding)
        return self._frame_logits(features).mean(dim=1)

    def _frame_logits(self, features: torch.Tensor) -> torch.Tensor:
        classifier = self.get_classifier()
        if not isinstance(classifier, TokenSemanticConv):
            raise ValueError(
                "frame-level outputs need the token-semantic classifier (tscam_conv); this model's classifier is "
                f"{type(classifier).__name__} (a pure embedder or an MLP head on the clip embedding)"
            )
        return classifier(features).flatten(2).transpose(1, 2)  # (B, frames, C)

    def forward_frames(self, waveform: torch.Tensor) -> torch.Tensor:
        """``(B, T)`` -> frame logits ``(B, frames, num_classes)`` (32 frames); their mean is ``forward``."""
        return self._frame_logits(self.forward_features(self.prepare_waveform(waveform)))

    @torch.no_grad()
    def predict_frames(self, waveform: torch.Tensor) -> FramePredictions:
        """Frame probabilities ``(B, frames, num_classes)`` (the model's output activation, sigmoid for the AudioSet
        weights: upstream's ``framewise_output`` before its 32x repeat) with ``frame_times`` of the clip length."""
        probabilities = self.activate(self.forward_frames(waveform))
        return FramePredictions(probabilities, self.frame_times(waveform.shape[-1]))

    @torch.no_grad()
    def forward_frame_embeddings(self, waveform: torch.Tensor, layer: int | None = None) -> torch.Tensor:
        """Per-frame embeddings ``(B, frames, num_features)``: each frame's column of the token map averaged over its
        frequency rows (their mean over frames is ``embed``). ``layer`` is not supported (the final norm's output)."""
        if layer is not None:
            raise ValueError("HTS-AT's frame embeddings are the last stage's (layer must be None)")
        return self.forward_features(self.prepare_waveform(waveform)).mean(dim=2).transpose(1, 2)

    # -- classifier ------------------------------------------------------------------------------------------------
    def reset_classifier(
        self,
        num_classes: int,
        label_names: list[str] | tuple[str, ...] | None = None,
        head: HeadConfig | None = None,
    ) -> None:
        """A new classifier for ``num_classes``: a fresh ``tscam_conv`` (frame outputs kept) or, with ``head``, an MLP
        on the clip embedding; ``head`` (upstream's unused Linear) is resized with it so that the layout is that of
        a model built for ``num_classes``. ``0`` gives a pure embedder."""
        reference = next(self.get_classifier().parameters(), None)
        super().reset_classifier(num_classes, label_names, head)
        modules: dict[str, nn.Module] = {"head": nn.Linear(num_classes, num_classes) if num_classes else nn.Identity()}
        if head is None and num_classes > 0:
            modules["tscam_conv"] = TokenSemanticConv(self.num_features, num_classes, self.rows)
        for name, module in modules.items():
            if reference is not None:
                module = module.to(device=reference.device, dtype=reference.dtype)
            setattr(self, name, module)

    def checkpoint_filter_fn(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return checkpoint_filter_fn(state_dict, self)


# ---------------------------------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------------------------------
def _mismatch(message: str) -> Exception:
    return CheckpointMismatchError(message)


def _has_module(model: nn.Module, name: str) -> bool:
    try:
        model.get_submodule(name)
    except AttributeError:
        return False
    return True


def _check_derived_buffer(model: HTSAT, key: str, stored: torch.Tensor) -> None:
    owner, _, name = key.rpartition(".")
    module = model.get_submodule(owner)
    computed = getattr(module, name, None)
    if computed is None:
        raise _mismatch(
            f"{key}: the checkpoint has a shifted-window mask for a block that the model runs unshifted "
            "(another input size or window size?)"
        )
    if computed.shape != stored.shape:
        raise _mismatch(f"{key}: shape {tuple(stored.shape)} vs model {tuple(computed.shape)}")
    if computed.device.type != "meta" and not torch.equal(stored.to(computed.dtype), computed):
        raise _mismatch(
            f"{key}: the stored values differ from those this model computes for its geometry (window size, "
            "stage resolution): not a checkpoint of this HTS-AT configuration"
        )


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: HTSAT) -> dict[str, torch.Tensor]:
    """An HTS-AT checkpoint (already taken out of Lightning's ``{'state_dict': ...}`` by the builder) in this model's
    names:

    - the ``sed_model.`` prefix of the Lightning checkpoints is removed (``predict.py``'s stripped layout and
      audiokit's own have none);
    - the torchlibrosa frontend tensors are renamed to ``frontend.*`` (PANNs' names) and loaded as they are;
    - ``relative_position_index`` and ``attn_mask`` (17 buffers in the release) must equal what the model computes for
      its geometry; they are then dropped, as the model recomputes them (a mismatch is an error);
    - ``head`` (unused by forward) takes the model's own fresh tensors when the class count differs, or is dropped for
      a pure embedder, as upstream's fine-tuning drops it.

    Anything else that differs is left for the strict loader to name.
    """
    state = {k.removeprefix(LIGHTNING_PREFIX): v for k, v in state_dict.items()}
    if not any(k.startswith("layers.") and ".blocks." in k for k in state) or not any(
        k.startswith(("tscam_conv.", "norm.")) for k in state
    ):
        sample = ", ".join(list(state)[:5])
        raise _mismatch(
            f"not an HTS-AT checkpoint: no Swin stages (layers.*.blocks.*) and token-semantic head (tscam_conv) among "
            f"its {len(state)} tensors (first: {sample}); is it a checkpoint of another family?"
        )
    state = panns_frontend_keys(state)

    # Those of blocks the model does not have stay in the state, for the strict loader to name with the rest.
    derived = [k for k in state if k.endswith(_DERIVED_SUFFIXES) and _has_module(model, k.rpartition(".")[0])]
    for key in derived:
        _check_derived_buffer(model, key, state.pop(key))
    if derived:
        _logger.info(
            "%d stored relative_position_index / attn_mask buffers equal the model's computed ones; not loaded",
            len(derived),
        )

    own = {k: v for k, v in model.state_dict().items() if k.startswith("head.")}
    theirs = [k for k in state if k.startswith("head.")]
    if theirs and not own:
        _logger.info("head (unused by forward) dropped: the model has no classifier")
        for k in theirs:
            del state[k]
    elif theirs and any(k not in own or state[k].shape != own[k].shape for k in theirs):
        _logger.info("head (unused by forward) re-initialised for %d classes", model.num_classes)
        for k in theirs:
            del state[k]
        state.update({k: v.detach().clone() for k, v in own.items()})
    elif theirs:
        _logger.info("head (Linear %d -> %d) loaded; upstream's forward does not use it", *own["head.weight"].shape)
    return state


# ---------------------------------------------------------------------------------------------------------------------
# Pretrained configurations
# ---------------------------------------------------------------------------------------------------------------------
_DRIVE = "https://drive.google.com/drive/folders/1f5VYMk0uos_YnuBshgmaTVioXbs7Kmz6"
_PAPER = (
    "K. Chen, X. Du, B. Zhu, Z. Ma, T. Berg-Kirkpatrick, S. Dubnov. HTS-AT: A Hierarchical Token-Semantic Audio "
    "Transformer for Sound Classification and Detection. ICASSP 2022. arXiv:2202.00874"
)

default_cfgs: list[PretrainedCfg] = [
    PretrainedCfg(
        architecture="htsat",
        tag="audioset",
        frontend=FRONTEND_32K,
        num_classes=527,
        task="multilabel",
        label_set="audioset",
        url=None,  # Google Drive only: no stable direct link
        sha256=None,
        clip_seconds=10.0,
        classifier="tscam_conv",
        license="MIT",
        paper=_PAPER,
        source=(
            "https://github.com/RetroCirce/HTS-Audio-Transformer (MIT); checkpoints in the authors' Google Drive "
            f"folder {_DRIVE}"
        ),
        metrics={"audioset_map": 0.471},
        num_params=31_325_143,
        notes=(
            "Weights are on Google Drive only: download one of HTSAT_AudioSet_Saved_1.ckpt ... _6.ckpt (the six "
            "models of upstream's ensemble; its README's quick start names _1, predict.py _6) or "
            f"htsat_audioset_pretrain.ckpt (gdown id 1OK8a5XuMVLyeVKF117L8pfxeZYdfSDZv) from {_DRIVE} and pass "
            "checkpoint_path= (Python) or --checkpoint-path FILE (CLI); the PyTorch-Lightning file loads as it is. "
            "mAP 0.471 is the published single-model result (0.487 for the ensemble), evaluated by upstream on 10 "
            "time-shifted copies of each clip. The README also mentions ESC-50, Speech Commands and DESED "
            "checkpoints, but no file name for them appears in the repository, so none is registered."
        ),
    ),
]
register_pretrained_cfgs(default_cfgs)


# ---------------------------------------------------------------------------------------------------------------------
# Builders
# ---------------------------------------------------------------------------------------------------------------------
@register_model
def htsat(pretrained_cfg: PretrainedCfg, **kwargs: Any) -> HTSAT:
    """HTS-AT (Swin-T-like, dims 96-768, depths 2-2-6-2, window 8, 256 x 256 folded spectrogram), 31.3 M parameters
    with upstream's frozen frontend matrices and its unused head; 32 kHz, 10 s."""
    return HTSAT(pretrained_cfg, **kwargs)
