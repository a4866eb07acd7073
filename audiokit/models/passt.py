"""PaSST, the Patchout faSt Spectrogram Transformer (Koutini, Schlüter, Eghbal-zadeh, Widmer, Interspeech 2022).

A DeiT-style vision transformer over overlapping 16x16 patches of EfficientAT's 128-band Kaldi-mel log spectrogram at
32 kHz, with *disentangled* positional embeddings: one learned vector per frequency row (``freq_new_pos_embed``) and
one per time column (``time_new_pos_embed``) instead of one per patch, so shorter input simply uses the first time
columns. The modules are laid out so that ``state_dict()`` gives exactly the tensor names and shapes of the released
files (kkoutini/PaSST GitHub releases, flat state dicts, also used by ``hear21passt``):

    waveform -> ``frontend`` (pre-emphasis, STFT, Kaldi mel 0-15 kHz, ``(ln(x + 1e-5) + 4.5) / 5``)
    -> ``patch_embed.proj`` (Conv2d 16x16, stride ``fstride`` x ``tstride``) -> + time (cropped) and frequency
    position embeddings -> flatten, frequency-major -> prepend ``cls_token`` and ``dist_token`` (each with its
    ``new_pos_embed`` vector) -> ``blocks`` (timm ViT blocks) -> ``norm`` -> mean of the two token outputs
    (``embed``, ``num_features`` = 768) -> ``head`` (LayerNorm eps 1e-5, Linear): logits.

``embed_frames`` gives one embedding per patch column (the patch tokens of a time column averaged over its frequency
rows), every ``frame_hop_seconds`` = ``tstride`` hops (0.1 s).

``head_dist`` (the distillation head of DeiT) is stored in every release and kept so that those files load
strictly, but forward does not use it, as upstream's inference does not.

The transformer blocks are ``timm.models.vision_transformer.Block``: its state-dict names (``norm1``, ``attn.qkv``,
``attn.proj``, ``norm2``, ``mlp.fc1``, ``mlp.fc2``) and its numerics (pre-norm, fused qkv with bias, exact GELU,
softmax attention scaled by head_dim ** -0.5) are those of the blocks the releases were trained with; LayerNorm eps is
set to 1e-6 explicitly rather than taken from timm's default.

Training mode adds what upstream trains with: structured patchout (``s_patchout_t`` random time columns and
``s_patchout_f`` random frequency rows dropped after the position embeddings are added) and, for input shorter than
the grid, a random offset into the time embedding instead of the first columns. Evaluation is deterministic.

Input length: the time grid holds ``input_tdim // tstride`` columns (99 for the 10 s models). Shorter input crops the
time embedding; longer input is refused with a ``ValueError`` (``max_samples`` is the longest waveform that fits), and
``audiokit.tag``/``embed`` cut longer files into windows of ``max_samples``.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from .._pretrained import FrontendCfg, PretrainedCfg
from .._registry import register_model, register_pretrained_cfgs
from ..layers import HeadConfig
from ..layers.transformer import vit_blocks
from ._base import AudioClassifier
from .ast import token_embedding
from .efficientat import efficientat_frontend

__all__ = ["NormLinearHead", "PaSST", "checkpoint_filter_fn", "count_params", "passt_frontend"]

_logger = logging.getLogger(__name__)

BLOCK_LN_EPS = 1e-6  # blocks and final norm
HEAD_LN_EPS = 1e-5  # head.0, torch's default


# ---------------------------------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------------------------------
class PatchEmbed(nn.Module):
    """``Conv2d(1, embed_dim, patch_size, stride)`` kept as ``proj`` (the released key); output ``(B, D, F', T')``,
    not flattened, so the position embeddings can be added per row and column."""

    def __init__(self, patch_size: int, fstride: int, tstride: int, embed_dim: int, in_chans: int = 1):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, stride=(fstride, tstride))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class NormLinearHead(nn.Sequential):
    """The released classifier: ``0`` LayerNorm (eps 1e-5) then ``1`` Linear. It exposes the Linear's ``weight``,
    ``bias``, ``in_features`` and ``out_features``, so it stands wherever audiokit expects a final Linear layer, while
    the embedding that feeds it stays upstream's features (the mean of the two tokens, before the LayerNorm)."""

    def __init__(self, in_features: int, out_features: int, norm: nn.LayerNorm | None = None):
        super().__init__(norm or nn.LayerNorm(in_features, eps=HEAD_LN_EPS), nn.Linear(in_features, out_features))

    @property
    def weight(self) -> nn.Parameter:
        return self[1].weight

    @property
    def bias(self) -> nn.Parameter:
        return self[1].bias

    @property
    def in_features(self) -> int:
        return self[1].in_features

    @property
    def out_features(self) -> int:
        return self[1].out_features


def _keep_random(size: int, drop: int) -> torch.Tensor:
    """Sorted indices of ``size - drop`` positions (at least one) chosen at random."""
    keep = max(1, size - drop)
    return torch.randperm(size)[:keep].sort().values


class PaSST(AudioClassifier):
    """PaSST on a log-mel frontend; ``forward`` returns logits ``(B, num_classes)``.

    Args:
        pretrained_cfg: the weights' configuration (frontend, classes).
        fstride, tstride: patch strides over frequency and time (10, 12, 14 or 16 in the releases).
        input_tdim: frames the positional grid was made for (998 for 10 s at hop 320); the grid has
            ``n_mels // fstride`` rows and ``input_tdim // tstride`` columns, upstream's rule.
        patch_size, embed_dim, depth, num_heads, mlp_ratio: the transformer (PaSST-S: 16, 768, 12, 12, 4).
        drop_rate, attn_drop_rate, drop_path_rate: dropout after the position embeddings and in the blocks.
        s_patchout_t, s_patchout_f: structured patchout in training mode (time columns, frequency rows dropped).
    """

    def __init__(
        self,
        pretrained_cfg: PretrainedCfg,
        fstride: int = 10,
        tstride: int = 10,
        input_tdim: int = 998,
        patch_size: int = 16,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        s_patchout_t: int = 0,
        s_patchout_f: int = 0,
    ):
        super().__init__(pretrained_cfg)
        fe = pretrained_cfg.frontend
        if fe.kind != "logmel" or not fe.center:
            raise ValueError("PaSST needs a centred logmel frontend (see passt_frontend)")
        if fe.n_mels < patch_size or input_tdim < patch_size:
            raise ValueError(f"n_mels {fe.n_mels} and input_tdim {input_tdim} must be at least patch_size {patch_size}")
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        if s_patchout_t < 0 or s_patchout_f < 0:
            raise ValueError("s_patchout_t and s_patchout_f must be >= 0")
        self.patch_size = patch_size
        self.fstride, self.tstride = fstride, tstride
        self.input_tdim = input_tdim
        self.s_patchout_t, self.s_patchout_f = s_patchout_t, s_patchout_f
        self.num_features = self.embed_dim = embed_dim
        grid_f, grid_t = fe.n_mels // fstride, input_tdim // tstride

        # Registration order = the released files' tensor order.
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.dist_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.new_pos_embed = nn.Parameter(torch.zeros(1, 2, embed_dim))
        self.freq_new_pos_embed = nn.Parameter(torch.zeros(1, embed_dim, grid_f, 1))
        self.time_new_pos_embed = nn.Parameter(torch.zeros(1, embed_dim, 1, grid_t))
        self.patch_embed = PatchEmbed(patch_size, fstride, tstride, embed_dim)
        self.pos_drop = nn.Dropout(drop_rate)
        self.blocks = nn.Sequential(
            *vit_blocks(embed_dim, depth, num_heads, mlp_ratio=mlp_ratio, drop_rate=drop_rate,
                        attn_drop_rate=attn_drop_rate, drop_path_rate=drop_path_rate, eps=BLOCK_LN_EPS)
        )  # fmt: skip
        self.norm = nn.LayerNorm(embed_dim, eps=BLOCK_LN_EPS)
        n = pretrained_cfg.num_classes
        self.head: nn.Module = self._linear_head(n)
        self.head_dist: nn.Module = nn.Linear(embed_dim, n) if n > 0 else nn.Identity()  # stored, never used
        self._init_weights()

    def _linear_head(self, num_classes: int, norm: nn.LayerNorm | None = None) -> nn.Module:
        return NormLinearHead(self.embed_dim, num_classes, norm) if num_classes > 0 else nn.Identity()

    def _init_weights(self) -> None:
        for p in (
            self.cls_token,
            self.dist_token,
            self.new_pos_embed,
            self.freq_new_pos_embed,
            self.time_new_pos_embed,
        ):
            nn.init.trunc_normal_(p, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    # -- geometry --------------------------------------------------------------------------------------------------
    @property
    def patch_grid(self) -> tuple[int, int]:
        """(frequency rows, time columns) of the positional grid: (12, 99) for PaSST-S at stride 10."""
        return self.freq_new_pos_embed.shape[2], self.time_new_pos_embed.shape[3]

    def _frames_to_samples(self, frames: int) -> int:
        """Most waveform samples that give at most ``frames`` frames (centred STFT; pre-emphasis drops a sample)."""
        fe = self.frontend_cfg
        return frames * fe.hop_length - 1 + (1 if fe.preemphasis else 0)

    @property
    def max_samples(self) -> int:
        """Longest waveform whose patch columns fit the time grid: ``grid_t * tstride + patch - 1`` frames (1005 frames,
        321600 samples = 10.05 s for the 10 s models); longer input must be windowed."""
        frames = self.time_new_pos_embed.shape[3] * self.tstride + self.patch_size - 1
        return self._frames_to_samples(frames)

    @property
    def min_samples(self) -> int:
        """Shortest waveform that gives one patch column (``patch_size`` frames); shorter input is zero-padded."""
        fe = self.frontend_cfg
        needed = (self.patch_size - 1) * fe.hop_length + (1 if fe.preemphasis else 0)
        return max(fe.min_samples, needed)

    # -- forward ---------------------------------------------------------------------------------------------------
    def input_tokens(self, logmel: torch.Tensor) -> torch.Tensor:
        """Normalised log-mel ``(B, 1, n_mels, frames)`` -> the blocks' input ``(B, 2 + patches, D)``: patches with
        their time and frequency position embeddings, frequency-major, after the cls and dist tokens."""
        x = self.patch_embed(logmel)  # (B, D, F', T')
        b, _, n_f, n_t = x.shape
        grid_f, grid_t = self.patch_grid
        if n_f != grid_f:
            raise ValueError(f"{logmel.shape[2]} mel bands give {n_f} patch rows; the model's grid has {grid_f}")
        if n_t > grid_t:
            fe = self.frontend_cfg
            raise ValueError(
                f"{logmel.shape[3]} frames give {n_t} patch columns, more than the {grid_t} of "
                f"{self.pretrained_cfg.name}'s time grid: at most {self.max_samples} samples "
                f"({self.max_samples / fe.sample_rate:.3f} s at {fe.sample_rate} Hz) fit. Split longer audio into "
                "windows (audiokit tag/embed do this themselves) or crop it"
            )
        time_pos = self.time_new_pos_embed
        if n_t < grid_t:
            offset = int(torch.randint(grid_t - n_t + 1, (1,))) if self.training else 0
            time_pos = time_pos[:, :, :, offset : offset + n_t]
        x = x + time_pos + self.freq_new_pos_embed
        if self.training and self.s_patchout_t:
            x = x[:, :, :, _keep_random(n_t, self.s_patchout_t).to(x.device)]
        if self.training and self.s_patchout_f:
            x = x[:, :, _keep_random(n_f, self.s_patchout_f).to(x.device), :]
        x = x.flatten(2).transpose(1, 2)  # (B, F' * T', D), frequency-major
        cls = self.cls_token.expand(b, -1, -1) + self.new_pos_embed[:, :1]
        dist = self.dist_token.expand(b, -1, -1) + self.new_pos_embed[:, 1:]
        return self.pos_drop(torch.cat([cls, dist, x], dim=1))

    def forward_tokens(self, logmel: torch.Tensor) -> torch.Tensor:
        """Normalised log-mel ``(B, 1, n_mels, frames)`` -> final-norm tokens ``(B, 2 + patches, D)`` (cls, dist,
        then the patches frequency-major)."""
        return self.norm(self.blocks(self.input_tokens(logmel)))

    def forward_features(self, waveform: torch.Tensor) -> torch.Tensor:
        """``(B, T)`` waveform -> final-norm tokens ``(B, 2 + patches, D)``."""
        return self.forward_tokens(self.frontend(waveform))

    def forward_pre_logits(self, features: torch.Tensor) -> torch.Tensor:
        """Tokens -> embedding ``(B, D)``: the mean of the cls and distillation token outputs (upstream's features)."""
        return (features[:, 0] + features[:, 1]) / 2

    # -- embedding points ------------------------------------------------------------------------------------------
    def embedding_blocks(self) -> dict[int, int]:
        """0: the blocks' input (patch embeddings with positions, cls and dist tokens), k: block k's output (before
        the final norm); each pooled as the mean of its patch tokens."""
        return dict.fromkeys(range(len(self.blocks) + 1), self.embed_dim)

    def embedding_points(self) -> dict[str, int]:
        """On the final-norm tokens: ``cls``, ``dist``, ``mean`` (of the patch tokens) and ``pooled`` (the mean of cls
        and dist: upstream's features, which is also ``pre_logits``, the head's LayerNorm being part of ``head``)."""
        return dict.fromkeys(("cls", "dist", "mean", "pooled"), self.embed_dim)

    def forward_embedding(self, waveform: torch.Tensor, layer: int | str) -> torch.Tensor:
        if isinstance(layer, int):
            x = self.input_tokens(self.frontend(waveform))
            for block in self.blocks[:layer]:
                x = block(x)
            return x[:, 2:].mean(dim=1)
        return token_embedding(self.forward_features(waveform), layer)

    @property
    def frame_hop_seconds(self) -> float:
        """Seconds between consecutive patch columns (the rows of ``embed_frames``): ``tstride`` STFT hops, 0.1 s."""
        return self.tstride * self.frontend_cfg.hop_length / self.sample_rate

    @torch.no_grad()
    def forward_frame_embeddings(self, waveform: torch.Tensor, layer: int | None = None) -> torch.Tensor:
        """Per-time embeddings ``(B, columns, D)``: the final-norm patch tokens of each time column averaged over its
        frequency rows, one row every ``frame_hop_seconds``; row ``i`` covers STFT frames ``i * tstride`` to
        ``i * tstride + patch_size - 1`` (0.1 s steps, 0.16 s wide at hop 320). PaSST has no per-time output of its
        own (its logits come from the two global tokens); this is the patch-level view that transfer work on it uses.
        ``layer`` is not supported (the last block's output, after the final norm)."""
        if layer is not None:
            raise ValueError("PaSST's frame embeddings are the last block's (layer must be None)")
        if self.training and (self.s_patchout_t or self.s_patchout_f):
            raise ValueError("embed_frames needs the whole patch grid: call model.eval() (patchout is on in training)")
        tokens = self.forward_features(self.prepare_waveform(waveform))[:, 2:]
        b, n, d = tokens.shape
        rows = self.patch_grid[0]
        # Tokens are frequency-major (row by row), so a reshape to (rows, columns) recovers the grid.
        return tokens.reshape(b, rows, n // rows, d).mean(dim=1)

    # -- classifier ------------------------------------------------------------------------------------------------
    def reset_classifier(
        self,
        num_classes: int,
        label_names: list[str] | tuple[str, ...] | None = None,
        head: HeadConfig | None = None,
    ) -> None:
        """A new classifier for ``num_classes`` outputs.

        Without ``head`` the new classifier has the released form, LayerNorm + a fresh Linear, keeping the current
        LayerNorm (as upstream fine-tuning keeps ``head.0`` and replaces ``head.1``); ``head_dist`` is resized with
        it so that the model always has the layout of one built for ``num_classes``. ``0`` gives a pure embedder.
        """
        old = self.get_classifier()
        super().reset_classifier(num_classes, label_names, head)
        reference = next(self.get_classifier().parameters(), None)
        if head is None and num_classes > 0:
            norm = old[0] if isinstance(old, NormLinearHead) else None
            new = self._linear_head(num_classes, norm)
            if reference is not None:
                new = new.to(device=reference.device, dtype=reference.dtype)
            self.head = new
        dist: nn.Module = nn.Linear(self.embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        if reference is not None:
            dist = dist.to(device=reference.device, dtype=reference.dtype)
        self.head_dist = dist

    def checkpoint_filter_fn(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return checkpoint_filter_fn(state_dict, self)


# ---------------------------------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------------------------------
def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: PaSST) -> dict[str, torch.Tensor]:
    """The released files are flat state dicts in this module's names (the builder has unwrapped ``{'model': ...}``):
    passed through, except the unused ``head_dist``, which takes the model's own fresh tensors when its shape or
    presence differs (a new class count, a pure embedder), as upstream drops it together with the classifier.
    Anything else that differs is left for the strict loader to name."""
    state = dict(state_dict)
    own = {k: v for k, v in model.state_dict().items() if k.startswith("head_dist.")}
    theirs = [k for k in state if k.startswith("head_dist.")]
    if any(k not in own or state[k].shape != own[k].shape for k in theirs) or (theirs and set(theirs) != set(own)):
        _logger.info("head_dist (unused by forward) re-initialised for %d classes", model.num_classes)
        for k in theirs:
            del state[k]
        state.update({k: v.detach().clone() for k, v in own.items()})
    return state


# ---------------------------------------------------------------------------------------------------------------------
# Pretrained configurations
# ---------------------------------------------------------------------------------------------------------------------
_RELEASE = "https://github.com/kkoutini/PaSST/releases/download/"
_SOURCE = "https://github.com/kkoutini/PaSST (GitHub releases; Apache-2.0; also served by hear21passt)"
_PAPER = (
    "K. Koutini, J. Schlüter, H. Eghbal-zadeh, G. Widmer. Efficient Training of Audio Transformers with Patchout. "
    "Interspeech 2022. arXiv:2110.05069"
)


def passt_frontend(hop_length: int = 320) -> FrontendCfg:
    """PaSST's evaluation frontend (``AugmentMelSTFT`` in eval mode), 32 kHz: the same module and settings as
    EfficientAT's (both come from the same authors' code), so it is ``efficientat_frontend`` with 128 mel bands.
    Training-mode jitter of the band edges and masking are not applied.
    """
    return efficientat_frontend(hop_length=hop_length, n_mels=128)


def count_params(
    *, stride: int = 10, input_tdim: int = 998, depth: int = 12, embed_dim: int = 768, n_mels: int = 128,
    patch_size: int = 16, num_classes: int = 527, mlp_ratio: int = 4,
) -> int:  # fmt: skip
    """Parameters of the released layout (159 tensors for depth 12), head_dist included."""
    d, h = embed_dim, mlp_ratio * embed_dim
    tokens = 2 * d + 2 * d  # cls_token, dist_token, new_pos_embed
    grid = d * (n_mels // stride) + d * (input_tdim // stride)
    patch = d * patch_size * patch_size + d
    block = 2 * d + (3 * d * d + 3 * d) + (d * d + d) + 2 * d + (h * d + h) + (d * h + d)
    heads = 2 * d + 2 * (d * num_classes + num_classes) + 2 * d  # norm, head.0, head.1, head_dist
    return tokens + grid + patch + depth * block + heads


def _cfg(
    architecture: str,
    release: str,
    *,
    audioset_map: float,
    tag: str = "audioset",
    stride: int = 10,
    input_tdim: int = 998,
    depth: int = 12,
    hop_length: int = 320,
    clip_seconds: float = 10.0,
    model_kwargs: dict[str, Any] | None = None,
    notes: str,
) -> PretrainedCfg:
    return PretrainedCfg(
        architecture=architecture,
        tag=tag,
        frontend=passt_frontend(hop_length),
        num_classes=527,
        task="multilabel",
        label_set="audioset",
        url=_RELEASE + release,
        sha256=None,  # upstream publishes none
        clip_seconds=clip_seconds,
        classifier="head",
        license="Apache-2.0",
        paper=_PAPER,
        source=_SOURCE,
        metrics={"audioset_map": audioset_map},
        num_params=count_params(stride=stride, input_tdim=input_tdim, depth=depth),
        model_kwargs=dict(model_kwargs or {}),
        notes=notes,
    )


_V2 = "v0.0.2-audioset/passt-s-f128-p16-"

default_cfgs: list[PretrainedCfg] = [
    _cfg(
        "passt_s",
        "v0.0.1-audioset/passt-s-f128-p16-s10-ap.476-swa.pt",
        audioset_map=0.476,
        notes="upstream passt_s_swa_p16_128_ap476 (hear21passt's default): stride 10, weight-averaged (SWA).",
    ),
    _cfg(
        "passt_s",
        "v.0.0.9/passt-s-kd-ap.486.pt",
        tag="audioset_kd",
        audioset_map=0.486,
        notes="upstream passt_s_kd_p16_128_ap486: stride 10, trained with knowledge distillation.",
    ),
    _cfg(
        "passt_s",
        _V2 + "s10-ap.472.pt",
        tag="audioset_noswa",
        audioset_map=0.472,
        notes="upstream passt_s_p16_128_ap472: stride 10, without weight averaging.",
    ),
    _cfg(
        "passt_s",
        "v0.0.3-audioset/passt-s-f128-stfthop100-p16-s10-ap.473-swa.pt",
        tag="audioset_hop100",
        audioset_map=0.473,
        input_tdim=3200,
        hop_length=100,
        model_kwargs={"input_tdim": 3200},
        notes="upstream passt_s_swa_f128_stfthop100_p16_s10_ap473: STFT hop 100 (3.125 ms), 320 time columns.",
    ),
    _cfg(
        "passt_s",
        "v0.0.3-audioset/passt-s-f128-stfthop160-p16-s10-ap.473-swa.pt",
        tag="audioset_hop160",
        audioset_map=0.473,
        input_tdim=2000,
        hop_length=160,
        model_kwargs={"input_tdim": 2000},
        notes="upstream passt_s_swa_f128_stfthop160_p16_s10_ap473: STFT hop 160 (5 ms), 200 time columns.",
    ),
    *(
        _cfg(
            f"passt_s_s{stride}",
            _V2 + f"s{stride}-ap.{swa}-swa.pt",
            audioset_map=swa / 1000,
            stride=stride,
            notes=f"upstream passt_s_swa_p16_s{stride}_128_ap{swa}: patch stride {stride}, weight-averaged (SWA).",
        )
        for stride, swa in ((12, 473), (14, 471), (16, 473))
    ),
    *(
        _cfg(
            f"passt_s_s{stride}",
            _V2 + f"s{stride}-ap.{plain}.pt",
            tag="audioset_noswa",
            audioset_map=plain / 1000,
            stride=stride,
            notes=f"upstream passt_s_p16_s{stride}_128_ap{plain}: patch stride {stride}, without weight averaging"
            + (" (hear21passt's stride-16 model)." if stride == 16 else "."),
        )
        for stride, plain in ((12, 470), (14, 469), (16, 468))
    ),
    _cfg(
        "passt_s_20s",
        "v0.0.5/passt-s-f128-20sec-p16-s10-ap.474-swa.pt",
        audioset_map=0.474,
        input_tdim=2000,
        clip_seconds=20.0,
        notes="upstream passt-s-f128-20sec-p16-s10-ap474-swa (hear21passt passt_20sec): 20 s input, 200 columns.",
    ),
    _cfg(
        "passt_s_30s",
        "v0.0.5/passt-s-f128-30sec-p16-s10-ap.473-swa.pt",
        audioset_map=0.473,
        input_tdim=3000,
        clip_seconds=30.0,
        notes="upstream passt-s-f128-30sec-p16-s10-ap473-swa (hear21passt passt_30sec): 30 s input, 300 columns "
        "(a 30 s clip fills 299).",
    ),
    _cfg(
        "passt_l",
        "v.0.0.10/passt-l-kd-ap.47.pt",
        tag="audioset_kd",
        audioset_map=0.47,
        depth=7,
        notes="upstream passt_l_kd_p16_128_ap47: PaSST-S with 7 blocks, stride 10, knowledge distillation "
        "(mAP .47 from the file name; upstream's loader message says .4708).",
    ),
]
register_pretrained_cfgs(default_cfgs)


# ---------------------------------------------------------------------------------------------------------------------
# Builders
# ---------------------------------------------------------------------------------------------------------------------
def _create(pretrained_cfg: PretrainedCfg, stride: int, **kwargs: Any) -> PaSST:
    kwargs.setdefault("fstride", stride)
    kwargs.setdefault("tstride", stride)
    return PaSST(pretrained_cfg, **kwargs)


@register_model
def passt_s(pretrained_cfg: PretrainedCfg, **kwargs: Any) -> PaSST:
    """PaSST-S, patch stride 10: 12 x 99 patches for 10 s (86.2 M parameters)."""
    return _create(pretrained_cfg, 10, **kwargs)


@register_model
def passt_s_s12(pretrained_cfg: PretrainedCfg, **kwargs: Any) -> PaSST:
    """PaSST-S, patch stride 12: 10 x 83 grid for 10 s."""
    return _create(pretrained_cfg, 12, **kwargs)


@register_model
def passt_s_s14(pretrained_cfg: PretrainedCfg, **kwargs: Any) -> PaSST:
    """PaSST-S, patch stride 14: 9 x 71 grid for 10 s."""
    return _create(pretrained_cfg, 14, **kwargs)


@register_model
def passt_s_s16(pretrained_cfg: PretrainedCfg, **kwargs: Any) -> PaSST:
    """PaSST-S, patch stride 16: 8 x 62 grid for 10 s."""
    return _create(pretrained_cfg, 16, **kwargs)


@register_model
def passt_s_20s(pretrained_cfg: PretrainedCfg, **kwargs: Any) -> PaSST:
    """PaSST-S, patch stride 10, 20 s input: 12 x 200 grid."""
    kwargs.setdefault("input_tdim", 2000)
    return _create(pretrained_cfg, 10, **kwargs)


@register_model
def passt_s_30s(pretrained_cfg: PretrainedCfg, **kwargs: Any) -> PaSST:
    """PaSST-S, patch stride 10, 30 s input: 12 x 300 grid."""
    kwargs.setdefault("input_tdim", 3000)
    return _create(pretrained_cfg, 10, **kwargs)


@register_model
def passt_l(pretrained_cfg: PretrainedCfg, **kwargs: Any) -> PaSST:
    """PaSST-L ("light" in upstream's words: PaSST-S cut to 7 blocks), patch stride 10, 12 x 99 grid (50.7 M)."""
    kwargs.setdefault("depth", 7)
    return _create(pretrained_cfg, 10, **kwargs)
