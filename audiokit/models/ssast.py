"""SSAST, the Self-Supervised Audio Spectrogram Transformer (Gong, Lai, Chung, Glass, AAAI 2022).

A DeiT-style vision transformer pretrained without labels (masked patch classification and reconstruction) on
AudioSet-2M and LibriSpeech-960, over the AST family's 128-band Kaldi log filterbank at 16 kHz. The released files are
the *pretraining* models; audiokit builds the model upstream fine-tunes from them and uses it as an embedder:

    waveform -> ``frontend`` (kaldi_fbank, 1024 frames zero-padded in the log domain, ``(x - mean) / (2 std)``)
    -> ``patch_embed.proj`` (Conv2d with the pretrained kernel, 16x16 "patch" or 128x2 "frame", at the fine-tuning
    stride) -> flatten, frequency-major -> prepend ``cls_token`` and ``dist_token`` -> + ``pos_embed`` -> ``blocks``
    (timm ViT blocks) -> ``norm`` -> mean of every token after the two global ones (upstream's ``ft_avgtok``, the
    pooling of all its fine-tuning recipes; ``embed``, ``num_features`` = embed_dim) -> ``head``.

The released weights carry no classifier (``num_classes`` 0, ``head`` is ``nn.Identity``): ``embed`` is the model's
output, ``audiokit tag`` refuses it, and ``reset_classifier(n)`` adds upstream's fine-tuning head (``mlp_head``:
LayerNorm eps 1e-5, then Linear), trained with ``audiokit finetune``.

Fine-tuning geometry, as upstream's recipes: patch models run at stride 10x10 (12 x 101 patches for 1024 frames),
frame models at 128x1 (1 x 1023); the pretrained kernel is used as it is at the new stride. The release files hold 512
positions for the pretraining grid (8 x 64 patch, 1 x 512 frame, non-overlapping); loading one resizes them to the
fine-tuning grid as upstream does (see :func:`resize_pos_embed`), keeping the [cls]/[dist] positions. A model saved
with ``save_pretrained`` holds the resized grid and loads unchanged.

Checkpoints: the release files are ``nn.DataParallel(ASTModel(pretrain_stage=True)).state_dict()`` (``module.``
prefixes, stripped by the builder): ``p_input_fdim``/``p_input_tdim`` (the pretraining input size), ``mask_embed``,
``v.*`` (the timm DeiT-distilled backbone with its unused ImageNet heads ``v.head``/``v.head_dist``) and the
pretraining prediction layers ``cpredlayer.*``/``gpredlayer.*``. :func:`checkpoint_filter_fn` checks the file against
the registered variant (input size, kernel shape, width), drops the pretraining-only tensors by name (logged) and
hands the rest to the strict loader; upstream loads with ``strict=False`` and accepts any file.

The transformer blocks are ``timm.models.vision_transformer.Block`` (pre-norm, fused qkv with bias, exact GELU,
LayerNorm eps 1e-6 set explicitly), whose state-dict names and numerics are those of the timm 0.4.5 blocks upstream
trained.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._pretrained import PretrainedCfg
from .._registry import register_model, register_pretrained_cfgs
from ..layers import HeadConfig
from ..layers.transformer import vit_blocks
from ._base import AudioClassifier
from .ast import AUDIOSET_STATS, ast_frontend, token_embedding
from .passt import NormLinearHead

__all__ = ["SSAST", "checkpoint_filter_fn", "count_params", "pretraining_grid", "resize_pos_embed"]

_logger = logging.getLogger(__name__)

BLOCK_LN_EPS = 1e-6  # timm 0.4.5 DeiT blocks and final norm
HEAD_LN_EPS = 1e-5  # upstream's mlp_head LayerNorm, torch's default
NUM_PREFIX_TOKENS = 2  # [cls] and [dist]: every release is a DeiT-distilled model
# (fbank mean, fbank std) of the ESC-50 recipe (src/finetune/esc50/run_esc_*.sh); upstream divides by 2 * std.
ESC50_STATS = (-6.6268077, 5.358466)

# Tensors of the release files that only the pretraining objectives use (the builder has stripped ``module.``).
_PRETRAINING_ONLY = ("mask_embed", "cpredlayer.", "gpredlayer.")
_IMAGENET_HEADS = ("v.head.", "v.head_dist.")  # timm DeiT's ImageNet classifiers, never called by SSAST
_INPUT_SIZE_KEYS = ("p_input_fdim", "p_input_tdim")


class CheckpointFamilyError(ValueError):
    """A file that is not an SSAST pretraining release for this variant; the message says what it is instead."""


# ---------------------------------------------------------------------------------------------------------------------
# Positional grid
# ---------------------------------------------------------------------------------------------------------------------
def patch_grid_shape(
    input_fdim: int, input_tdim: int, kernel: tuple[int, int], stride: tuple[int, int]
) -> tuple[int, int]:
    """(frequency rows, time columns) of a valid Conv2d with ``kernel`` and ``stride`` over the input."""
    return (input_fdim - kernel[0]) // stride[0] + 1, (input_tdim - kernel[1]) // stride[1] + 1


def pretraining_grid(input_fdim: int, input_tdim: int, kernel: tuple[int, int]) -> tuple[int, int]:
    """The grid the release files' positions were learned on: non-overlapping patches (stride = kernel), 8 x 64 for
    16x16 patches and 1 x 512 for 128x2 frames over 128 x 1024."""
    return patch_grid_shape(input_fdim, input_tdim, kernel, kernel)


def resize_pos_embed(
    pos_embed: torch.Tensor, old_grid: tuple[int, int], new_grid: tuple[int, int], num_prefix: int = NUM_PREFIX_TOKENS
) -> torch.Tensor:
    """``(1, num_prefix + old_f * old_t, D)`` -> ``(1, num_prefix + new_f * new_t, D)``, upstream's fine-tuning rule.

    The prefix ([cls], [dist]) positions are kept. The patch positions, frequency-major, are laid out as a
    ``(D, old_f, old_t)`` image; an axis that shrinks is cut around its centre (the window starting at
    ``old // 2 - new // 2``), and an axis that grows is resized by bilinear interpolation (``align_corners=False``).
    Upstream resizes time first, to a hard-coded 8 rows, then frequency: for its grids (8 x 64 patch, 1 x 512 frame,
    where 1 row and 8 replicated rows are the same image) that equals this single 2-D resize of the cut grid, and its
    frequency cut (which slices with the time size, a bug no recipe reaches) is written here as intended.
    """
    if pos_embed.dim() != 3 or pos_embed.shape[0] != 1:
        raise ValueError(f"pos_embed must have shape (1, tokens, dim), got {tuple(pos_embed.shape)}")
    (old_f, old_t), (new_f, new_t) = old_grid, new_grid
    prefix, patches = pos_embed[:, :num_prefix], pos_embed[:, num_prefix:]
    if patches.shape[1] != old_f * old_t:
        raise ValueError(f"pos_embed holds {patches.shape[1]} patch positions, not the {old_f} x {old_t} grid's")
    dim = pos_embed.shape[2]
    grid = patches.transpose(1, 2).reshape(1, dim, old_f, old_t)
    if new_t < old_t:
        start = old_t // 2 - new_t // 2
        grid = grid[:, :, :, start : start + new_t]
    if new_f < old_f:
        start = old_f // 2 - new_f // 2
        grid = grid[:, :, start : start + new_f, :]
    if tuple(grid.shape[2:]) != (new_f, new_t):
        grid = F.interpolate(grid, size=(new_f, new_t), mode="bilinear", align_corners=False)
    return torch.cat([prefix, grid.reshape(1, dim, new_f * new_t).transpose(1, 2)], dim=1)


# ---------------------------------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------------------------------
class PatchEmbed(nn.Module):
    """``Conv2d(1, embed_dim, (fshape, tshape), stride)`` kept as ``proj`` (the released name); output
    ``(B, F' * T', D)``, frequency-major."""

    def __init__(self, kernel: tuple[int, int], stride: tuple[int, int], embed_dim: int):
        super().__init__()
        self.proj = nn.Conv2d(1, embed_dim, kernel, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class SSAST(AudioClassifier):
    """SSAST on a Kaldi fbank frontend; ``forward`` returns logits ``(B, num_classes)`` (the embedding when the
    model has no classifier, as released).

    Args:
        pretrained_cfg: the weights' configuration (frontend with ``max_frames``, classes).
        fshape, tshape: the patch kernel, fixed by the pretraining (16 x 16 "patch", 128 x 2 "frame").
        fstride, tstride: the fine-tuning strides (upstream's recipes: 10 x 10 patch, 128 x 1 frame).
        embed_dim, depth, num_heads, mlp_ratio: the transformer (Base 768/12/12, Small 384/12/6, Tiny 192/12/3).
        drop_rate, attn_drop_rate, drop_path_rate: dropout after the position embeddings and in the blocks (0 in
            upstream's fine-tuning).
    """

    def __init__(
        self,
        pretrained_cfg: PretrainedCfg,
        fshape: int = 16,
        tshape: int = 16,
        fstride: int = 10,
        tstride: int = 10,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ):
        super().__init__(pretrained_cfg)
        fe = pretrained_cfg.frontend
        if fe.kind != "kaldi_fbank" or fe.max_frames is None:
            raise ValueError("SSAST needs a kaldi_fbank frontend with max_frames set (its position grid is fixed)")
        if not (0 < fshape <= fe.n_mels and 0 < tshape <= fe.max_frames):
            raise ValueError(
                f"patch {fshape}x{tshape} does not fit the {fe.n_mels} x {fe.max_frames} input (n_mels x max_frames)"
            )
        if fstride < 1 or tstride < 1:
            raise ValueError(f"strides must be positive, got {fstride}x{tstride}")
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.kernel = (fshape, tshape)
        self.stride = (fstride, tstride)
        self.max_frames = fe.max_frames
        self.num_features = self.embed_dim = embed_dim
        self.patch_grid = patch_grid_shape(fe.n_mels, fe.max_frames, self.kernel, self.stride)
        num_patches = self.patch_grid[0] * self.patch_grid[1]

        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.dist_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, NUM_PREFIX_TOKENS + num_patches, embed_dim))
        self.patch_embed = PatchEmbed(self.kernel, self.stride, embed_dim)
        self.pos_drop = nn.Dropout(drop_rate)
        self.blocks = nn.Sequential(
            *vit_blocks(embed_dim, depth, num_heads, mlp_ratio=mlp_ratio, drop_rate=drop_rate,
                        attn_drop_rate=attn_drop_rate, drop_path_rate=drop_path_rate, eps=BLOCK_LN_EPS)
        )  # fmt: skip
        self.norm = nn.LayerNorm(embed_dim, eps=BLOCK_LN_EPS)
        self.head: nn.Module = self._norm_linear_head(pretrained_cfg.num_classes)
        self._init_weights()

    def _norm_linear_head(self, num_classes: int, norm: nn.LayerNorm | None = None) -> nn.Module:
        if num_classes == 0:
            return nn.Identity()
        return NormLinearHead(self.embed_dim, num_classes, norm or nn.LayerNorm(self.embed_dim, eps=HEAD_LN_EPS))

    def _init_weights(self) -> None:
        # timm's ViT initialisation, which upstream's pretraining started from (its pos_embed also trunc_normal 0.02).
        for p in (self.cls_token, self.dist_token, self.pos_embed):
            nn.init.trunc_normal_(p, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    # -- forward ---------------------------------------------------------------------------------------------------
    def _tokens(self, fbank: torch.Tensor) -> torch.Tensor:
        """Normalised filterbanks ``(B, 1, n_mels, frames)`` -> the blocks' input ``(B, 2 + patches, D)``."""
        x = self.patch_embed(fbank)
        expected = self.pos_embed.shape[1] - NUM_PREFIX_TOKENS
        if x.shape[1] != expected:
            raise ValueError(
                f"a {fbank.shape[2]} x {fbank.shape[3]} filterbank gives {x.shape[1]} patches; the position grid "
                f"{self.patch_grid[0]} x {self.patch_grid[1]} has {expected}"
            )
        b = x.shape[0]
        x = torch.cat([self.cls_token.expand(b, -1, -1), self.dist_token.expand(b, -1, -1), x], dim=1)
        return self.pos_drop(x + self.pos_embed)

    def forward_tokens(self, fbank: torch.Tensor) -> torch.Tensor:
        """Normalised filterbanks ``(B, 1, n_mels, frames)`` -> final-norm tokens ``(B, 2 + patches, D)`` ([cls],
        [dist], then the patches frequency-major)."""
        return self.norm(self.blocks(self._tokens(fbank)))

    def forward_features(self, waveform: torch.Tensor) -> torch.Tensor:
        """``(B, T)`` waveform -> final-norm tokens ``(B, 2 + patches, D)``."""
        return self.forward_tokens(self.frontend(waveform))

    def forward_pre_logits(self, features: torch.Tensor) -> torch.Tensor:
        """Tokens -> embedding ``(B, D)``: the mean of every patch token, the two global tokens left out
        (upstream's ``ft_avgtok``, ``x[:, 2:].mean(1)`` after the final norm)."""
        return features[:, NUM_PREFIX_TOKENS:].mean(dim=1)

    # -- embedding points ------------------------------------------------------------------------------------------
    def embedding_blocks(self) -> dict[int, int]:
        """0: the blocks' input (patch embeddings with positions, cls and dist tokens), k: block k's output (before
        the final norm), the numbering of ``embed_frames(layer=k)``; each pooled as the mean of its patch tokens."""
        return dict.fromkeys(range(len(self.blocks) + 1), self.embed_dim)

    def embedding_points(self) -> dict[str, int]:
        """On the final-norm tokens: ``cls``, ``dist``, ``mean`` (of the patch tokens; upstream's ``ft_avgtok``, so
        ``pooled`` and ``pre_logits`` are this same vector)."""
        return dict.fromkeys(("cls", "dist", "mean", "pooled"), self.embed_dim)

    def forward_embedding(self, waveform: torch.Tensor, layer: int | str) -> torch.Tensor:
        if isinstance(layer, int):
            x = self._tokens(self.frontend(waveform))
            for block in self.blocks[:layer]:
                x = block(x)
            return x[:, NUM_PREFIX_TOKENS:].mean(dim=1)
        tokens = self.forward_features(waveform)
        return token_embedding(tokens, "mean" if layer == "pooled" else layer, prefix=NUM_PREFIX_TOKENS)

    @property
    def frame_hop_seconds(self) -> float:
        """Seconds between consecutive rows of ``embed_frames``: ``tstride`` fbank hops (0.1 s patch, 0.01 s frame)."""
        return self.stride[1] * self.frontend_cfg.hop_length / self.sample_rate

    def num_frames_covered(self, num_samples: int) -> int:
        """Rows of ``embed_frames`` for ``num_samples`` of input: the time columns whose patches lie inside the fbank
        frames of the audio itself (at least one), not in the zero padding up to ``max_frames``."""
        fe = self.frontend_cfg
        win = fe.win_length or fe.n_fft
        frames = min(self.max_frames, 1 + (max(num_samples, win) - win) // fe.hop_length)
        return max(1, (frames - self.kernel[1]) // self.stride[1] + 1)

    @torch.no_grad()
    def forward_frame_embeddings(self, waveform: torch.Tensor, layer: int | None = None) -> torch.Tensor:
        """Per-time embeddings ``(B, columns, D)``: one row per time column of the patch grid, its tokens averaged
        over the grid's frequency rows (12 for patch models; frame models have one row, so a row is a token). Row
        ``i`` covers fbank frames ``i * tstride`` to ``i * tstride + tshape - 1``, one row every
        ``frame_hop_seconds``. The whole padded input goes through the model, as upstream feeds it; only the columns
        over the audio itself are returned (``num_frames_covered``).

        ``layer=None`` gives the final-norm tokens; ``layer=k`` the hidden state after block ``k`` instead (0: the
        blocks' input, ``depth``: the last block's output before the final norm; negative counts back).
        """
        waveform = self.prepare_waveform(waveform)
        x = self._tokens(self.frontend(waveform))
        if layer is None:
            x = self.norm(self.blocks(x))
        else:
            depth = len(self.blocks)
            if not -(depth + 1) <= layer <= depth:
                raise ValueError(f"layer must be in -{depth + 1}..{depth} (0: the blocks' input), got {layer}")
            for block in self.blocks[: layer % (depth + 1)]:
                x = block(x)
        tokens = x[:, NUM_PREFIX_TOKENS:]
        b, _, d = tokens.shape
        rows, columns = self.patch_grid
        # Tokens are frequency-major (row by row), so a reshape to (rows, columns) recovers the grid.
        per_column = tokens.reshape(b, rows, columns, d).mean(dim=1)
        return per_column[:, : self.num_frames_covered(waveform.shape[-1])]

    # -- classifier ------------------------------------------------------------------------------------------------
    def reset_classifier(
        self,
        num_classes: int,
        label_names: list[str] | tuple[str, ...] | None = None,
        head: HeadConfig | None = None,
    ) -> None:
        """A new classifier for ``num_classes`` outputs on the pooled embedding.

        Without ``head`` it is upstream's fine-tuning head (``mlp_head``): LayerNorm (eps 1e-5) then a fresh
        Linear; an existing head's LayerNorm is kept. ``0`` gives a pure embedder.
        """
        old = self.get_classifier()
        super().reset_classifier(num_classes, label_names, head)
        if head is None and num_classes > 0:
            norm = old[0] if isinstance(old, NormLinearHead) else None
            new = self._norm_linear_head(num_classes, norm)
            reference = next(old.parameters(), None)
            if reference is None:  # a pure embedder had no head: follow the backbone
                reference = self.norm.weight
            self.head = new.to(device=reference.device, dtype=reference.dtype)

    def checkpoint_filter_fn(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return checkpoint_filter_fn(state_dict, self)


# ---------------------------------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------------------------------
def _kind(kernel: tuple[int, ...]) -> str:
    names = {kernel_: kind for kind, (kernel_, _) in _GEOMETRY.items()}
    return f"{names.get(tuple(kernel), 'custom')} ({kernel[0]}x{kernel[1]})"


def _input_size(state: dict[str, torch.Tensor], key: str) -> int:
    value = state[key]
    if value.dim() != 0 or value.is_floating_point() or value.is_complex():
        raise CheckpointFamilyError(f"{key} should be a 0-d integer tensor (the pretraining input size), got {value}")
    return int(value)


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: SSAST) -> dict[str, torch.Tensor]:
    """An SSAST pretraining release (``module.`` already stripped) -> this model's names; ours passes through.

    The release is checked against the model before anything is dropped: ``p_input_fdim`` must be the frontend's
    mel bands, ``v.patch_embed.proj.weight`` must have the variant's kernel and width, and ``v.pos_embed`` must hold
    the two global positions plus one per patch of the pretraining grid (``pretraining_grid``). Then the tensors of
    the pretraining objectives (``mask_embed``, ``cpredlayer.*``, ``gpredlayer.*``), the input-size records and the
    ImageNet heads of timm's DeiT (``v.head.*``, ``v.head_dist.*``) are dropped, as upstream's fine-tuning model
    never uses them (logged by name), ``v.`` is removed and the positions are resized to the model's grid. Anything
    else that differs is left for the strict loader to name.
    """
    state = dict(state_dict)
    is_release = any(k.startswith("v.") for k in state) or any(k in state for k in _INPUT_SIZE_KEYS)
    if not is_release:
        return state  # save_pretrained's layout (grid already the model's)
    name = model.pretrained_cfg.name
    missing_size = [k for k in _INPUT_SIZE_KEYS if k not in state]
    if missing_size:
        what = (
            "an AST or SSAST fine-tuned model (it has mlp_head.*)"
            if any(k.startswith("mlp_head.") for k in state)
            else "not an SSAST pretraining release"
        )
        raise CheckpointFamilyError(
            f"the checkpoint has v.* tensors but no {', '.join(missing_size)}: {what}. {name} loads the SSAST "
            "pretraining releases (SSAST-*.pth), whose files record the pretraining input size"
        )
    input_fdim, input_tdim = (_input_size(state, k) for k in _INPUT_SIZE_KEYS)
    fe = model.frontend_cfg
    if input_fdim != fe.n_mels:
        raise CheckpointFamilyError(
            f"the checkpoint was pretrained on {input_fdim} mel bands; {name} computes {fe.n_mels}"
        )
    proj = state.get("v.patch_embed.proj.weight")
    if proj is None or proj.dim() != 4:
        found = "absent" if proj is None else f"of shape {tuple(proj.shape)}"
        raise CheckpointFamilyError(
            f"v.patch_embed.proj.weight is {found}; an SSAST release has (dim, 1, fshape, tshape)"
        )
    kernel = tuple(proj.shape[2:])
    if kernel != model.kernel:
        raise CheckpointFamilyError(
            f"the checkpoint is a {_kind(kernel)} SSAST model and {name} takes {_kind(model.kernel)} patches: use the "
            f"ssast_*_{_kind(kernel).split()[0]} model for it"
        )
    if proj.shape[0] != model.embed_dim:
        raise CheckpointFamilyError(
            f"the checkpoint's width is {proj.shape[0]} and {name}'s is {model.embed_dim} (Base 768, Small 384, "
            "Tiny 192): use the model of its size"
        )
    old_grid = pretraining_grid(input_fdim, input_tdim, kernel)  # type: ignore[arg-type]
    pos = state.get("v.pos_embed")
    expected_tokens = NUM_PREFIX_TOKENS + old_grid[0] * old_grid[1]
    if pos is None or pos.dim() != 3 or pos.shape[1] != expected_tokens:
        found = "absent" if pos is None else f"of shape {tuple(pos.shape)}"
        raise CheckpointFamilyError(
            f"v.pos_embed is {found}; a {input_fdim} x {input_tdim} pretraining input with {_kind(kernel)} patches "
            f"gives {old_grid[0]} x {old_grid[1]} positions plus 2, (1, {expected_tokens}, dim)"
        )

    unused = sorted(k for k in state if k.startswith(_PRETRAINING_ONLY + _IMAGENET_HEADS) or k in _INPUT_SIZE_KEYS)
    _logger.info(
        "SSAST release: dropping %d tensors that fine-tuning and embedding never use (pretraining objectives "
        "mask_embed/cpredlayer/gpredlayer, the input-size records p_input_fdim/p_input_tdim, timm DeiT's ImageNet "
        "heads v.head/v.head_dist): %s",
        len(unused),
        ", ".join(unused),
    )
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key in unused:
            continue
        out[key[2:] if key.startswith("v.") else key] = value
    if old_grid != model.patch_grid:
        _logger.info(
            "SSAST release: position grid %d x %d (pretraining) resized to %d x %d (%s at stride %dx%d)",
            *old_grid,
            *model.patch_grid,
            name,
            *model.stride,
        )
        out["pos_embed"] = resize_pos_embed(pos, old_grid, model.patch_grid)
    return out


# ---------------------------------------------------------------------------------------------------------------------
# Pretrained configurations
# ---------------------------------------------------------------------------------------------------------------------
_DROPBOX = "https://www.dropbox.com/s/{}/{}?dl=1"
_SOURCE = (
    "https://github.com/YuanGongND/ssast (BSD-3-Clause), pretrained_model/README.md; Dropbox direct links (OneDrive "
    "and Weiyun mirrors listed there)"
)
_PAPER = (
    "Y. Gong, C.-I. J. Lai, Y.-A. Chung, J. Glass. SSAST: Self-Supervised Audio Spectrogram Transformer. "
    "AAAI 2022. arXiv:2110.09784"
)
_SIZES = {"base": (768, 12), "small": (384, 6), "tiny": (192, 3)}  # embed_dim, heads (depth 12 for all)
_GEOMETRY = {"patch": ((16, 16), (10, 10)), "frame": ((128, 2), (128, 1))}  # kernel, fine-tuning stride


def count_params(
    *, embed_dim: int = 768, depth: int = 12, kernel: tuple[int, int] = (16, 16), grid: tuple[int, int] = (12, 101),
    mlp_ratio: int = 4, num_classes: int = 0,
) -> int:  # fmt: skip
    """Parameters of the embedding model: tokens, positions, patch projection, blocks, final norm (and the
    LayerNorm + Linear head when ``num_classes`` > 0). Upstream's fine-tuning model also keeps timm DeiT's two
    unused ImageNet heads (``2 * (1000 * d + 1000)``, 1,538,000 for Base: its 87.7 M)."""
    d, h = embed_dim, mlp_ratio * embed_dim
    tokens = 2 * d + (NUM_PREFIX_TOKENS + grid[0] * grid[1]) * d
    patch = d * kernel[0] * kernel[1] + d
    block = 2 * d + (3 * d * d + 3 * d) + (d * d + d) + 2 * d + (h * d + h) + (d * h + d)
    head = (2 * d + num_classes * d + num_classes) if num_classes else 0
    return tokens + patch + depth * block + 2 * d + head


def _cfg(
    architecture: str,
    filename: str,
    file_id: str,
    *,
    avg_audio: float,
    avg_speech: float | None,
    tag: str = "ssl",
    esc50: bool = False,
) -> PretrainedCfg:
    size, kind = architecture.split("_")[1:3]
    embed_dim, _ = _SIZES[size]
    kernel, stride = _GEOMETRY[kind]
    frames = 512 if esc50 else 1024
    grid = patch_grid_shape(128, frames, kernel, stride)
    metrics = {"avg_audio": avg_audio}
    if avg_speech is not None:
        metrics["avg_speech"] = avg_speech
    input_note = (
        "ESC-50 fine-tuning input of upstream's run_esc_*.sh: 512 frames (5.12 s), ESC-50 fbank statistics "
        f"(mean {ESC50_STATS[0]}, std {ESC50_STATS[1]}); the 8 x 64 / 1 x 512 pretraining positions are cut around "
        f"the centre in time and interpolated in frequency to {grid[0]} x {grid[1]}."
        if esc50
        else f"Input: 1024 frames (10.24 s; longer files are windowed), AudioSet fbank statistics; {grid[0]} x "
        f"{grid[1]} positions interpolated (bilinear) from the pretraining grid."
    )
    return PretrainedCfg(
        architecture=architecture,
        tag=tag,
        frontend=ast_frontend(frames, *(ESC50_STATS if esc50 else AUDIOSET_STATS)),
        num_classes=0,
        task="multiclass" if esc50 else "multilabel",
        label_names=(),
        url=_DROPBOX.format(file_id, filename),
        sha256=None,
        filename=filename,
        clip_seconds=5.0 if esc50 else 10.0,
        classifier="head",
        license="BSD-3-Clause",
        paper=_PAPER,
        source=_SOURCE,
        metrics=metrics,
        num_params=count_params(embed_dim=embed_dim, kernel=kernel, grid=grid),
        notes=(
            f"{filename}: self-supervised (masked patch classification + reconstruction) on AudioSet-2M + "
            "LibriSpeech-960; no classifier (num_classes 0, an embedder): add one with reset_classifier / audiokit "
            f"finetune. {kind} model, kernel {kernel[0]}x{kernel[1]} at fine-tuning stride {stride[0]}x{stride[1]}. "
            f"{input_note} Metrics: the README's 'avg audio' / 'avg speech' (mean over its downstream benchmarks, as "
            "fractions). No hash is published (sha256 None). num_params leaves out timm DeiT's unused ImageNet heads "
            "(dropped at load time, as are the pretraining-only tensors)."
        ),
    )


_RELEASES = {
    # architecture: (file, Dropbox id, avg audio, avg speech) from pretrained_model/README.md
    "ssast_base_patch": ("SSAST-Base-Patch-400.pth", "ewrzpco95n9jdz6", 0.599, 0.795),
    "ssast_base_frame": ("SSAST-Base-Frame-400.pth", "nx6nl4d4bl71sm8", 0.576, 0.840),
    "ssast_base_patch_250": ("SSAST-Base-Patch-250.pth", "mxrm9qog6aj8hif", 0.586, 0.795),
    "ssast_base_frame_250": ("SSAST-Base-Frame-250.pth", "4e6l7ulhwrfoana", 0.556, 0.816),
    "ssast_small_patch": ("SSAST-Small-Patch-400.pth", "i24w446rl9pkf05", 0.581, 0.782),
    "ssast_tiny_patch": ("SSAST-Tiny-Patch-400.pth", "fkbtf78y94113wz", 0.533, 0.757),
    "ssast_tiny_frame": ("SSAST-Tiny-Frame-400.pth", "rx7g60ruzawffzv", 0.478, None),  # speech: "untested"
}

# fmt: off
default_cfgs: list[PretrainedCfg] = [
    _cfg(arch, file, file_id, avg_audio=audio, avg_speech=speech)
    for arch, (file, file_id, audio, speech) in _RELEASES.items()
] + [
    # The ESC-50 recipes' input (512 frames, ESC-50 statistics) bound to the same weights, so that a fine-tuning
    # config picks it by name rather than through free frontend flags.
    _cfg(arch, *_RELEASES[arch][:2], avg_audio=_RELEASES[arch][2], avg_speech=_RELEASES[arch][3], tag="ssl_esc50",
         esc50=True)
    for arch in ("ssast_base_patch", "ssast_base_frame")
]
# fmt: on
register_pretrained_cfgs(default_cfgs)


# ---------------------------------------------------------------------------------------------------------------------
# Builders
# ---------------------------------------------------------------------------------------------------------------------
def _create(pretrained_cfg: PretrainedCfg, size: str, kind: str, **kwargs: Any) -> SSAST:
    embed_dim, heads = _SIZES[size]
    (fshape, tshape), (fstride, tstride) = _GEOMETRY[kind]
    for key, value in (("fshape", fshape), ("tshape", tshape), ("fstride", fstride), ("tstride", tstride),
                       ("embed_dim", embed_dim), ("num_heads", heads)):  # fmt: skip
        kwargs.setdefault(key, value)
    return SSAST(pretrained_cfg, **kwargs)


@register_model
def ssast_base_patch(pretrained_cfg: PretrainedCfg, **kwargs: Any) -> SSAST:
    """SSAST-Base-Patch-400: 16x16 patches at stride 10, 12 x 101 for 1024 frames (86.2 M parameters)."""
    return _create(pretrained_cfg, "base", "patch", **kwargs)


@register_model
def ssast_base_frame(pretrained_cfg: PretrainedCfg, **kwargs: Any) -> SSAST:
    """SSAST-Base-Frame-400: 128x2 frames at stride 1, 1 x 1023 for 1024 frames (86.0 M parameters)."""
    return _create(pretrained_cfg, "base", "frame", **kwargs)


@register_model
def ssast_base_patch_250(pretrained_cfg: PretrainedCfg, **kwargs: Any) -> SSAST:
    """SSAST-Base-Patch-250 (250 masked patches in pretraining): the ssast_base_patch architecture."""
    return _create(pretrained_cfg, "base", "patch", **kwargs)


@register_model
def ssast_base_frame_250(pretrained_cfg: PretrainedCfg, **kwargs: Any) -> SSAST:
    """SSAST-Base-Frame-250 (250 masked frames in pretraining): the ssast_base_frame architecture."""
    return _create(pretrained_cfg, "base", "frame", **kwargs)


@register_model
def ssast_small_patch(pretrained_cfg: PretrainedCfg, **kwargs: Any) -> SSAST:
    """SSAST-Small-Patch-400: DeiT-S width (384, 6 heads), 16x16 patches at stride 10."""
    return _create(pretrained_cfg, "small", "patch", **kwargs)


@register_model
def ssast_tiny_patch(pretrained_cfg: PretrainedCfg, **kwargs: Any) -> SSAST:
    """SSAST-Tiny-Patch-400: DeiT-Ti width (192, 3 heads), 16x16 patches at stride 10."""
    return _create(pretrained_cfg, "tiny", "patch", **kwargs)


@register_model
def ssast_tiny_frame(pretrained_cfg: PretrainedCfg, **kwargs: Any) -> SSAST:
    """SSAST-Tiny-Frame-400: DeiT-Ti width (192, 3 heads), 128x2 frames at stride 1."""
    return _create(pretrained_cfg, "tiny", "frame", **kwargs)
