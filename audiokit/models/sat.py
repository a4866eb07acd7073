"""SAT, Streaming Audio Transformers (Dinkel, Yan, Wang, Zhang, Wang, Wang; arXiv 2305.17834, 2023), and the
non-streaming ViT baselines released with them.

A ViT over non-overlapping 16x16 patches of a 64-band 16 kHz log-mel spectrogram (dB, floored 120 dB below each
clip's peak, then a BatchNorm over the mel bins with trained statistics), with one learned position vector per
frequency row and one per time column. The streaming models see at most ``target_length`` frames (1.92 s or 0.96 s) at
a time and attend to a *memory*: for every layer, the last ``4 * (cache_length // 16)`` tokens that entered that layer
before, so the past keeps informing the present at a fixed cost. The modules are laid out so that ``state_dict()``
has the tensor names and shapes of the zenodo release (record 7964975)::

    waveform -> ``frontend`` (periodic Hann STFT 512/160, power, HTK mel 0-8 kHz without normalisation,
    10 log10(max(x, 1e-10)), floor at peak - 120 dB) -> ``init_bn.1`` (BatchNorm2d over the 64 mel bins)
    -> ``patch_embed.proj`` (Conv2d 16x16, stride 16: 4 rows x t columns) + ``time_pos_embed[..., :t]``
    + ``freq_pos_embed`` -> tokens frequency-major -> (``cls_token`` + ``token_pos_embed`` first, token pooling)
    -> ``blocks`` -> ``norm`` -> mean of the tokens, or the class token (``embed``) -> ``outputlayer``
    (LayerNorm eps 1e-5, Linear): logits.

Streaming blocks (``MemoryBlock``) take queries from the current piece and keys/values from ``norm1`` of the memory
followed by ``norm1`` of the piece, with no mask. Upstream re-adds ``time_pos_embed[..., -m:] + freq_pos_embed`` to
the first layer's memory (``m`` its time columns) every time it is used, on top of the embedding it already carries;
that is reproduced. The baselines (``sat_vit_*``) are plain pre-norm ViT blocks with a fused ``attn.qkv``, the layout
of ``timm``'s ``Block``, which is used for them.

Clips longer than one piece (``target_length`` frames) are computed as upstream: one spectrogram over the whole
clip, cut into pieces of ``target_length`` frames; the streaming models drop a shorter last piece and carry the
memory from piece to piece (starting empty); the baselines batch the pieces without memory, zero-pad a shorter last
piece (after ``init_bn``) and, as upstream does, drop the last piece when it is exactly full (the clip is a whole
multiple of 1012 frames). Upstream's output is the mean of the pieces' sigmoid probabilities. Since that is not the
sigmoid of any mean of logits, ``forward`` returns the logit of that mean (computed stably from the pieces' logits),
so that ``predict_proba`` and ``audiokit tag``, which apply the sigmoid to ``forward``, report exactly upstream's
numbers; a one-piece clip's logits are the head's own. ``embed`` is the mean over the pieces of the pooled features
before ``outputlayer``; ``embed_frames`` the per-piece rows, one every ``frame_hop_seconds``. A fine-tuned
softmax head gets ``log`` of the mean of the pieces' softmax (so softmax of ``forward`` is that mean), a pure embedder
the mean of the pieces' embeddings.

``model.stream()`` is upstream's ``inference.py``: a memory primed once with ``cache_length`` frames of silence, then
every ``push(chunk)`` computes that chunk's own spectrogram (its own reflect padding and 120 dB floor) and returns the
probabilities after it; of a 2 s chunk's 201 frames the 192 of one piece are used, as upstream uses them. Unlike
upstream's command line, which keeps one memory across all the files it is given, a stream belongs to one recording.

Release files are ``{'model': state_dict, 'config': {...training config...}}`` (``averaged.pt`` of upstream's
training) or bare state dicts. Upstream loads them with ``strict=False``; here loading is strict.
``check_release_config`` compares the ``config`` of a file with the variant it is loaded into (the upstream model
name and any architecture argument in ``model_args``); the stored frontend buffers (the Hann window and torchaudio's
mel matrix) are compared with the ones audiokit computes and then dropped, since the frontend is rebuilt from the cfg.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._pretrained import FrontendCfg, PretrainedCfg
from .._registry import register_model, register_pretrained_cfgs
from .._weights import load_weights
from ..layers import HeadConfig
from ..layers.transformer import drop_path_rates, vit_blocks
from ._base import AudioClassifier
from .passt import NormLinearHead, PatchEmbed

__all__ = [
    "SAT",
    "MemoryAttention",
    "MemoryBlock",
    "SATStream",
    "check_release_config",
    "checkpoint_filter_fn",
    "load_release_checkpoint",
    "sat_frontend",
]

_logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
HOP_LENGTH = 160
N_MELS = 64
PATCH = 16
BLOCK_LN_EPS = 1e-6
HEAD_LN_EPS = 1e-5
# Stored by torchaudio's MelSpectrogram inside the release files; compared with audiokit's frontend, then dropped.
FRONTEND_BUFFERS = ("front_end.0.spectrogram.window", "front_end.0.mel_scale.fb")
# Architecture arguments an upstream entry point takes whose value fixes the tensors or the numerics.
_ARCHITECTURE_ARGS = ("embed_dim", "depth", "num_heads", "mlp_ratio", "target_length", "cache_length", "pooling",
                      "patch_size", "patch_stride", "n_mels", "n_fft", "hop_size", "win_size", "f_min", "f_max",
                      "init_bn", "center", "pad_last", "eval_avg")  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------------
# Blocks
# ---------------------------------------------------------------------------------------------------------------------
class MelAsChannels(nn.Module):
    """``(B, 1, n_mels, T)`` <-> ``(B, n_mels, 1, T)``: lets a BatchNorm2d normalise each mel bin (``init_bn``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(1, 2)


class MemoryAttention(nn.Module):
    """Multi-head attention whose keys and values cover the memory and the piece: ``to_q`` reads the piece, ``to_kv``
    (keys, then values) the memory followed by the piece; no mask, scale ``head_dim ** -0.5``."""

    def __init__(self, dim: int, num_heads: int, attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.to_q = nn.Linear(dim, dim)
        self.to_kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.attn_drop = attn_drop
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """``x`` ``(B, N, D)`` attends to ``context`` ``(B, M + N, D)``."""
        b, n, d = x.shape
        h = self.num_heads
        q = self.to_q(x).reshape(b, n, h, d // h).transpose(1, 2)
        k, v = self.to_kv(context).reshape(b, context.shape[1], 2, h, d // h).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(b, n, d)))


class MemoryBlock(nn.Module):
    """Pre-norm transformer block whose attention also sees a memory of earlier tokens.

    timm's ``Block`` does not fit: its attention has one fused ``qkv`` projection of the block's own input (the
    release has separate ``to_q`` and ``to_kv``, and keys/values must come from more tokens than the queries), and it
    takes no second input. ``norm1`` normalises the memory and the piece alike, as the keys were trained on.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, drop: float = 0.0, attn_drop: float = 0.0,
                 drop_path: float = 0.0):  # fmt: skip
        super().__init__()
        from timm.layers import DropPath, Mlp

        self.norm1 = nn.LayerNorm(dim, eps=BLOCK_LN_EPS)
        self.attn = MemoryAttention(dim, num_heads, attn_drop=attn_drop, proj_drop=drop)
        self.norm2 = nn.LayerNorm(dim, eps=BLOCK_LN_EPS)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU, drop=drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, memory: torch.Tensor | None = None) -> torch.Tensor:
        h = self.norm1(x)
        context = h if memory is None or memory.shape[1] == 0 else torch.cat([self.norm1(memory), h], dim=1)
        x = x + self.drop_path(self.attn(h, context))
        return x + self.drop_path(self.mlp(self.norm2(x)))


# ---------------------------------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------------------------------
Memory = list[torch.Tensor] | None


class SAT(AudioClassifier):
    """SAT or its ViT baseline; ``forward`` returns logits ``(B, num_classes)`` (see the module docstring for clips
    longer than one piece).

    Args:
        pretrained_cfg: the weights' configuration (frontend, classes).
        embed_dim, depth, num_heads, mlp_ratio: the transformer (SAT-T 192/12/3, SAT-S 384/12/6, SAT-B 768/12/12).
        target_length: frames in one piece (192 or 96 for the streaming models, 1012 for the baselines).
        cache_length: frames of memory (streaming models: 192 or 96); 0 for the baselines, which have none. The time
            grid has ``(target_length + cache_length) // 16`` columns.
        pooling: ``"mean"`` over all tokens or ``"token"`` (a class token, SAT-S and the ViT-S baseline).
        streaming: memory blocks (``to_q``/``to_kv``) and upstream's streaming piece rules; False: the baselines'
            fused-``qkv`` blocks and their piece rules.
        chunk_seconds: chunk length ``audiokit tag --stream`` uses by default (the delay the weights were made for).
        drop_rate, attn_drop_rate, drop_path_rate: dropout in training.
    """

    def __init__(
        self,
        pretrained_cfg: PretrainedCfg,
        embed_dim: int = 192,
        depth: int = 12,
        num_heads: int = 3,
        mlp_ratio: float = 4.0,
        target_length: int = 192,
        cache_length: int = 192,
        pooling: str = "mean",
        streaming: bool = True,
        chunk_seconds: float = 2.0,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ):
        super().__init__(pretrained_cfg)
        fe = pretrained_cfg.frontend
        if fe.kind != "logmel" or fe.n_mels % PATCH or fe.hop_length != HOP_LENGTH or fe.sample_rate != SAMPLE_RATE:
            raise ValueError(f"SAT needs its own 16 kHz logmel frontend (see sat_frontend), got {fe}")
        if pooling not in ("mean", "token"):
            raise ValueError(f"pooling must be 'mean' or 'token', got {pooling!r}")
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        if target_length < PATCH or cache_length < 0 or (cache_length and not streaming):
            raise ValueError(
                f"target_length {target_length} must be at least {PATCH} frames and cache_length {cache_length} "
                "0 or more (0 for the non-streaming baselines)"
            )
        if not (isinstance(chunk_seconds, (int, float)) and 0 < chunk_seconds <= 3600):
            raise ValueError(f"chunk_seconds must be a number of seconds in (0, 3600], got {chunk_seconds!r}")
        self.embed_dim = self.num_features = embed_dim
        self.target_length, self.cache_length = target_length, cache_length
        self.pooling, self.streaming, self.chunk_seconds = pooling, streaming, float(chunk_seconds)
        rows = fe.n_mels // PATCH
        columns = (target_length + cache_length) // PATCH
        # Tokens of memory per layer: the cache's frames as whole patch columns, all rows.
        self.memory_tokens = rows * (cache_length // PATCH)

        if pooling == "token":
            self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
            self.token_pos_embed = nn.Parameter(torch.zeros(1, embed_dim))
        self.time_pos_embed = nn.Parameter(torch.zeros(1, embed_dim, 1, columns))
        self.freq_pos_embed = nn.Parameter(torch.zeros(1, embed_dim, rows, 1))
        self.init_bn = nn.Sequential(MelAsChannels(), nn.BatchNorm2d(fe.n_mels, momentum=0.01), MelAsChannels())
        self.patch_embed = PatchEmbed(PATCH, PATCH, PATCH, embed_dim)
        self.pos_drop = nn.Dropout(drop_rate)
        if streaming:
            self.blocks = nn.ModuleList(
                MemoryBlock(embed_dim, num_heads, mlp_ratio, drop_rate, attn_drop_rate, rate)
                for rate in drop_path_rates(depth, drop_path_rate)
            )
        else:
            self.blocks = nn.ModuleList(
                vit_blocks(embed_dim, depth, num_heads, mlp_ratio=mlp_ratio, drop_rate=drop_rate,
                           attn_drop_rate=attn_drop_rate, drop_path_rate=drop_path_rate, eps=BLOCK_LN_EPS)
            )  # fmt: skip
        self.norm = nn.LayerNorm(embed_dim, eps=BLOCK_LN_EPS)
        n = pretrained_cfg.num_classes
        self.outputlayer: nn.Module = NormLinearHead(embed_dim, n) if n > 0 else nn.Identity()
        self._init_weights()

    def _init_weights(self) -> None:
        nn.init.trunc_normal_(self.time_pos_embed, std=0.02)
        nn.init.trunc_normal_(self.freq_pos_embed, std=0.02)
        if self.pooling == "token":
            nn.init.normal_(self.cls_token, std=1e-6)
            nn.init.trunc_normal_(self.token_pos_embed, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    # -- geometry --------------------------------------------------------------------------------------------------
    @property
    def patch_grid(self) -> tuple[int, int]:
        """(frequency rows, time columns) of the positional grid: (4, 24) for the 2 s models, (4, 63) for the ViTs."""
        return self.freq_pos_embed.shape[2], self.time_pos_embed.shape[3]

    @property
    def min_samples(self) -> int:
        """One patch column, 16 frames (2400 samples, 0.15 s); shorter input is zero-padded."""
        return max(self.frontend_cfg.min_samples, (PATCH - 1) * HOP_LENGTH)

    @property
    def frame_hop_seconds(self) -> float:
        """Seconds between the starts of consecutive pieces (the rows of ``embed_frames``): 1.92, 0.96 or 10.12."""
        return self.target_length * HOP_LENGTH / SAMPLE_RATE

    # -- the network -----------------------------------------------------------------------------------------------
    def normalized_logmel(self, waveform: torch.Tensor) -> torch.Tensor:
        """``(B, T)`` -> log-mel after ``init_bn``, ``(B, 1, n_mels, frames)``."""
        return self.init_bn(self.frontend(waveform))

    def forward_piece(
        self, logmel: torch.Tensor, memory: Memory = None, hidden_states: list[torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, Memory]:
        """One piece ``(B, 1, n_mels, frames <= the grid)`` and the memory -> final-norm tokens ``(B, N, D)`` (class
        token first when pooling by token) and the memory for the next piece (None for the baselines).

        A list given as ``hidden_states`` receives the ``depth + 1`` hidden states of the piece: the blocks' input,
        then each block's output (before the final norm)."""
        x = self.patch_embed(logmel)  # (B, D, rows, t)
        b, d, rows, t = x.shape
        columns = self.patch_grid[1]
        if t == 0 or t > columns:
            raise ValueError(
                f"{logmel.shape[-1]} frames give {t} patch columns; {self.pretrained_cfg.name} takes 1 to {columns} "
                f"at a time (upstream fails the same way at {columns + 1})"
            )
        x = x + self.time_pos_embed[..., :t] + self.freq_pos_embed
        tokens = x.flatten(2).transpose(1, 2)  # frequency-major: row by row
        if memory is not None and memory[0].shape[1] > 0:
            first = memory[0]
            m = first.shape[1] // rows
            grid = first.reshape(b, rows, m, d).permute(0, 3, 1, 2)
            grid = grid + self.time_pos_embed[..., columns - m :] + self.freq_pos_embed
            memory = [grid.permute(0, 2, 3, 1).reshape(b, rows * m, d), *memory[1:]]
        if self.pooling == "token":
            cls = self.cls_token.expand(b, -1, -1) + self.token_pos_embed
            tokens = torch.cat([cls, tokens], dim=1)
        tokens = self.pos_drop(tokens)
        if not self.streaming:
            for block in self.blocks:
                if hidden_states is not None:
                    hidden_states.append(tokens)
                tokens = block(tokens)
            if hidden_states is not None:
                hidden_states.append(tokens)
            return self.norm(tokens), None
        inputs = []
        for i, block in enumerate(self.blocks):
            inputs.append(tokens)
            tokens = block(tokens, None if memory is None else memory[i])
        if hidden_states is not None:
            hidden_states += [*inputs, tokens]
        if memory is None:
            memory = [tokens.new_zeros(b, 0, d)] * len(inputs)
        keep = self.memory_tokens
        new_memory = [torch.cat([old, new], dim=1)[:, max(0, old.shape[1] + new.shape[1] - keep) :].detach()
                      for old, new in zip(memory, inputs)]  # fmt: skip
        return self.norm(tokens), new_memory

    def pool(self, tokens: torch.Tensor) -> torch.Tensor:
        """Final-norm tokens -> the piece's embedding ``(B, D)``: mean over tokens or the class token."""
        return tokens[:, 0] if self.pooling == "token" else tokens.mean(dim=1)

    def split_pieces(self, logmel: torch.Tensor) -> list[torch.Tensor]:
        """Upstream's pieces of a clip's normalised log-mel (see the module docstring)."""
        frames = logmel.shape[-1]
        if self.streaming:
            if frames <= self.target_length:
                return [logmel]
            return [p for p in logmel.split(self.target_length, dim=-1) if p.shape[-1] == self.target_length]
        if frames <= self.target_length + PATCH - 1:
            return [logmel]
        pieces = list(logmel.split(self.target_length, dim=-1))
        last = pieces.pop()
        if last.shape[-1] < self.target_length:
            pieces.append(F.pad(last, (0, self.target_length - last.shape[-1])))
        # else: a clip of whole pieces loses its last one, as upstream's AudioTransformer does.
        return pieces

    def forward_pieces(self, logmel: torch.Tensor, memory: Memory = None) -> tuple[torch.Tensor, Memory]:
        """Normalised log-mel -> per-piece embeddings ``(B, pieces, D)`` and the memory after the last piece."""
        pieces = self.split_pieces(logmel)
        if not self.streaming:  # no memory: all pieces at once, as a batch
            b = logmel.shape[0]
            tokens, _ = self.forward_piece(torch.cat(pieces, dim=0))
            return self.pool(tokens).reshape(len(pieces), b, -1).transpose(0, 1), None
        embeddings = []
        for piece in pieces:
            tokens, memory = self.forward_piece(piece, memory)
            embeddings.append(self.pool(tokens))
        return torch.stack(embeddings, dim=1), memory

    def forward_pieces_hidden(self, logmel: torch.Tensor, index: int) -> torch.Tensor:
        """Normalised log-mel -> hidden state ``index`` (0: the blocks' input) of each piece pooled as the mean of its
        patch tokens (the class token left out), ``(B, pieces, D)``; the memory runs as in ``forward_pieces``."""
        skip = 1 if self.pooling == "token" else 0
        pieces = self.split_pieces(logmel)
        if not self.streaming:
            b = logmel.shape[0]
            states: list[torch.Tensor] = []
            self.forward_piece(torch.cat(pieces, dim=0), hidden_states=states)
            return states[index][:, skip:].mean(dim=1).reshape(len(pieces), b, -1).transpose(0, 1)
        memory: Memory = None
        pooled = []
        for piece in pieces:
            states = []
            _, memory = self.forward_piece(piece, memory, hidden_states=states)
            pooled.append(states[index][:, skip:].mean(dim=1))
        return torch.stack(pooled, dim=1)

    # -- embedding points ------------------------------------------------------------------------------------------
    def embedding_blocks(self) -> dict[int, int]:
        """0: the blocks' input (patches with positions), k: block k's output (before the final norm); each piece's
        patch tokens averaged, then the pieces averaged, as ``embed`` averages them."""
        return dict.fromkeys(range(len(self.blocks) + 1), self.embed_dim)

    def embedding_points(self) -> dict[str, int]:
        """``pooled``: the pieces' mean of the pooled final-norm tokens (token mean, or the class token for the
        token-pooling variants), which ``outputlayer`` (LayerNorm, Linear) takes: the same vector as ``pre_logits``."""
        return {"pooled": self.embed_dim}

    def forward_embedding(self, waveform: torch.Tensor, layer: int | str) -> torch.Tensor:
        if layer == "pooled":
            return self.forward_pre_logits(self.forward_features(waveform))
        return self.forward_pieces_hidden(self.normalized_logmel(waveform), int(layer)).mean(dim=1)

    def forward_features(self, waveform: torch.Tensor) -> torch.Tensor:
        """``(B, T)`` waveform -> per-piece embeddings ``(B, pieces, D)`` (memory starting empty)."""
        return self.forward_pieces(self.normalized_logmel(waveform))[0]

    def forward_pre_logits(self, features: torch.Tensor) -> torch.Tensor:
        """Per-piece embeddings -> clip embedding ``(B, D)``: their mean."""
        return features.mean(dim=1)

    def piece_outputs(self, features: torch.Tensor) -> torch.Tensor:
        """Per-piece embeddings ``(B, P, D)`` -> the classifier's output for each piece ``(B, P, C)``."""
        b, p, d = features.shape
        return self.get_classifier()(features.reshape(b * p, d)).reshape(b, p, -1)

    def combine_pieces(self, outputs: torch.Tensor) -> torch.Tensor:
        """``(B, P, C)`` per-piece logits -> clip logits whose activation is the mean of the pieces' activations.

        Sigmoid: ``logit(mean sigmoid(z))`` = ``logsumexp(logsigmoid(z)) - logsumexp(logsigmoid(-z))`` (no overflow at
        probabilities near 0 or 1). Softmax: ``log(mean softmax(z))``. Any other output (a pure embedder, log-softmax,
        identity): the mean over pieces.
        """
        if outputs.shape[1] == 1:
            return outputs[:, 0]
        if isinstance(self.get_classifier(), nn.Identity):
            return outputs.mean(dim=1)
        if self.output_activation == "sigmoid":
            return torch.logsumexp(F.logsigmoid(outputs), dim=1) - torch.logsumexp(F.logsigmoid(-outputs), dim=1)
        if self.output_activation == "softmax":
            return torch.logsumexp(F.log_softmax(outputs, dim=-1), dim=1) - math.log(outputs.shape[1])
        return outputs.mean(dim=1)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        """``(B, T)`` waveform at 16 kHz -> logits ``(B, num_classes)`` (one-piece clips: the head's logits; longer
        clips: logits whose sigmoid is the mean of the pieces' probabilities, upstream's output)."""
        features = self.forward_features(self.prepare_waveform(waveform))
        return self.combine_pieces(self.piece_outputs(features))

    @torch.no_grad()
    def forward_frame_embeddings(self, waveform: torch.Tensor, layer: int | None = None) -> torch.Tensor:
        """Per-piece embeddings ``(B, pieces, D)``, one every ``frame_hop_seconds``; row ``i`` covers frames
        ``i * target_length`` to ``(i + 1) * target_length - 1``. ``layer`` is not supported."""
        if layer is not None:
            raise ValueError("SAT's frame embeddings are the last block's (layer must be None)")
        return self.forward_features(self.prepare_waveform(waveform))

    # -- streaming -------------------------------------------------------------------------------------------------
    def silence_memory(self) -> Memory:
        """The memory after ``cache_length`` frames of silence (``cache_length * 160`` zero samples), which upstream's
        ``inference.py`` starts every run with; None for the baselines."""
        if not self.streaming:
            return None
        param = self.time_pos_embed
        silence = torch.zeros(1, self.cache_length * HOP_LENGTH, device=param.device, dtype=torch.float32)
        with torch.no_grad():
            return self.forward_pieces(self.normalized_logmel(silence))[1]

    def stream(self) -> SATStream:
        """A new stream over one recording: ``push(chunk)`` returns the probabilities after each chunk."""
        return SATStream(self)

    # -- classifier ------------------------------------------------------------------------------------------------
    def reset_classifier(
        self,
        num_classes: int,
        label_names: list[str] | tuple[str, ...] | None = None,
        head: HeadConfig | None = None,
    ) -> None:
        """A new classifier for ``num_classes`` outputs; without ``head`` it has the released form, the current
        ``outputlayer.0`` LayerNorm kept and a fresh Linear. ``0`` gives a pure embedder."""
        old = self.get_classifier()
        super().reset_classifier(num_classes, label_names, head)
        if head is None and num_classes > 0:
            norm = old[0] if isinstance(old, NormLinearHead) else None
            new = NormLinearHead(self.embed_dim, num_classes, norm)
            reference = next(self.get_classifier().parameters(), None)
            if reference is not None:
                new = new.to(device=reference.device, dtype=reference.dtype)
            self.outputlayer = new

    def check_checkpoint(self, checkpoint: Any, source: str) -> None:
        """A release file's ``config`` must name this variant: SAT-S 1 s and 2 s share every tensor shape, so only the
        config tells them apart."""
        if isinstance(checkpoint, Mapping) and "model" in checkpoint:
            check_release_config(checkpoint.get("config"), self, source=source)

    def checkpoint_filter_fn(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return checkpoint_filter_fn(state_dict, self)


class SATStream:
    """Upstream's streaming inference over one recording (``inference.py``): the memory is primed once with silence,
    then each ``push`` runs one chunk (its own spectrogram) with the memory and keeps the memory it leaves.

    A chunk longer than one piece is cut as a clip is (a 2 s chunk's 201 frames: one piece of 192, the rest unused);
    a chunk shorter than 0.15 s is zero-padded to it (with a warning). Batch size 1.
    """

    def __init__(self, model: SAT):
        self.model = model
        self.memory = model.silence_memory()
        self.samples_seen = 0

    @torch.no_grad()
    def push(self, chunk: torch.Tensor) -> torch.Tensor:
        """``(n,)`` or ``(1, n)`` samples at 16 kHz -> probabilities ``(num_classes,)`` after this chunk."""
        model = self.model
        if model.num_classes == 0:
            raise ValueError("this model has no classifier (num_classes=0): a stream reports probabilities")
        if not isinstance(chunk, torch.Tensor) or not chunk.is_floating_point():
            raise TypeError("a chunk is a floating-point torch.Tensor of samples in [-1, 1]")
        if chunk.dim() == 1:
            chunk = chunk[None]
        if chunk.dim() != 2 or chunk.shape[0] != 1:
            raise ValueError(f"a chunk is (samples,) or (1, samples) of one recording, got {tuple(chunk.shape)}")
        self.samples_seen += chunk.shape[-1]
        param = model.time_pos_embed
        wave = model.prepare_waveform(chunk.to(device=param.device, dtype=torch.float32))
        features, self.memory = model.forward_pieces(model.normalized_logmel(wave), self.memory)
        logits = model.combine_pieces(model.piece_outputs(features))
        return model.activate(logits)[0]


# ---------------------------------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------------------------------
def check_release_config(config: Any, model: SAT, source: str = "checkpoint") -> None:
    """Refuse a release file whose training ``config`` names another model than ``model``'s variant.

    Checked: ``config['model']`` (upstream's entry point, e.g. ``SAT_T_2s``) against the variant's, and every
    architecture argument in ``config['model_args']`` against the model's. A file without a config is not checked.
    """
    if config is None:
        return
    if not isinstance(config, Mapping):
        raise ValueError(f"{source}: its 'config' is a {type(config).__name__}, not a mapping")
    name = model.pretrained_cfg.name
    expected = UPSTREAM_NAMES.get(model.pretrained_cfg.architecture)
    theirs = config.get("model")
    if expected is not None and theirs is not None and theirs != expected:
        known = {v: k for k, v in UPSTREAM_NAMES.items()}
        hint = f" (audiokit's {known[theirs]})" if theirs in known else ""
        raise ValueError(
            f"{source} holds upstream's {theirs}{hint}, trained as config model={theirs!r}; {name} is upstream's "
            f"{expected}: load it under its own name"
        )
    args = config.get("model_args") or {}
    if not isinstance(args, Mapping):
        raise ValueError(f"{source}: config model_args is a {type(args).__name__}, not a mapping")
    first = model.blocks[0] if len(model.blocks) else None
    ours = {
        "embed_dim": model.embed_dim,
        "depth": len(model.blocks),
        "num_heads": first.attn.num_heads if first is not None else None,
        "mlp_ratio": first.mlp.fc1.out_features / model.embed_dim if first is not None else None,
        "target_length": model.target_length,
        "cache_length": model.cache_length,
        "pooling": model.pooling,
        "patch_size": PATCH,
        "patch_stride": PATCH,
        "n_mels": model.frontend_cfg.n_mels,
    }
    for key in _ARCHITECTURE_ARGS:
        if key in args and (key not in ours or args[key] != ours[key]):
            raise ValueError(
                f"{source}: its config sets model_args {key}={args[key]!r}, which {name} "
                + (f"has as {ours[key]!r}" if key in ours else "does not support")
            )


def load_release_checkpoint(model: SAT, path: str | os.PathLike[str]) -> None:
    """Load a release file (``{'model': ..., 'config': ...}`` or a bare state dict) into an existing model strictly,
    its ``config`` checked against the model's variant (``check_release_config``), as ``create_model(name,
    checkpoint_path=...)`` does."""
    from .._hub import load_state_dict_file

    load_weights(model, load_state_dict_file(path), source=str(path))


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: SAT) -> dict[str, torch.Tensor]:
    """The release's names are this module's; its torchaudio frontend buffers are checked against audiokit's frontend
    (a file made for another frontend is refused) and dropped; a time grid of another length is named as another
    delay's file rather than left to a bare shape error. Anything else is left for the strict loader."""
    state = dict(state_dict)
    window_key, fb_key = FRONTEND_BUFFERS
    ours = {window_key: model.frontend.window, fb_key: model.frontend.mel_fb}
    found = [k for k in FRONTEND_BUFFERS if k in state]
    for key in found:
        stored = state.pop(key)
        if stored.shape != ours[key].shape or not torch.allclose(stored.float().cpu(), ours[key].cpu(), atol=1e-6):
            raise ValueError(
                f"{key} {tuple(stored.shape)} in the checkpoint is not the frontend of {model.pretrained_cfg.name} "
                f"(periodic Hann 512, HTK mel 0-8 kHz, 257 x 64): a file for another model?"
            )
    if found:
        _logger.info(
            "checkpoint frontend buffers %s equal audiokit's frontend: not loaded (rebuilt from the cfg)", found
        )
    stored_time = state.get("time_pos_embed")
    if stored_time is not None and stored_time.dim() == 4 and stored_time.shape[1] == model.embed_dim:
        columns, theirs = model.patch_grid[1], stored_time.shape[-1]
        if theirs != columns:
            raise ValueError(
                f"time_pos_embed has {theirs} time columns ({theirs * PATCH} frames of piece and memory); "
                f"{model.pretrained_cfg.name} has {columns} ({model.target_length} + {model.cache_length} frames): "
                "a file of another delay or of a baseline?"
            )
    return state


# ---------------------------------------------------------------------------------------------------------------------
# Pretrained configurations
# ---------------------------------------------------------------------------------------------------------------------
_ZENODO = "https://zenodo.org/record/7964975/files/"
_SOURCE = (
    "https://github.com/RicherMans/SAT (code GPL-3.0; not used by audiokit, which re-implements it), weights on zenodo "
    "record 7964975"
)
_PAPER = (
    "H. Dinkel, Z. Yan, Y. Wang, J. Zhang, Y. Wang, B. Wang. Streaming Audio Transformers for Online Audio Tagging. "
    "arXiv:2305.17834, 2023"
)
_LICENSE = "not stated (zenodo record 7964975; the code is GPL-3.0)"

# audiokit architecture -> upstream entry point (models/audiotransformer.py), as the release config names it.
UPSTREAM_NAMES = {
    "sat_tiny_2s": "SAT_T_2s", "sat_tiny_1s": "SAT_T_1s", "sat_small_2s": "SAT_S_2s", "sat_small_1s": "SAT_S_1s",
    "sat_base_2s": "SAT_B_2s", "sat_base_1s": "SAT_B_1s", "sat_vit_tiny": "audiotransformer_tiny",
    "sat_vit_small": "audiotransformer_small", "sat_vit_base": "audiotransformer_base",
}  # fmt: skip


def sat_frontend() -> FrontendCfg:
    """SAT's input: torchaudio ``MelSpectrogram(16000, n_fft=512, win_length=512, hop_length=160, f_min=0,
    f_max=8000, n_mels=64)`` (centred, reflect padding, periodic Hann, power 2, HTK mel without normalisation) and
    ``AmplitudeToDB(top_db=120)`` taken per clip (``floor_below_peak``); ``init_bn`` is part of the model."""
    return FrontendCfg(
        kind="logmel",
        sample_rate=SAMPLE_RATE,
        n_fft=512,
        win_length=512,
        hop_length=HOP_LENGTH,
        n_mels=N_MELS,
        f_min=0.0,
        f_max=8000.0,
        window="hann",
        center=True,
        pad_mode="reflect",
        mel_scale="htk",
        mel_norm=None,
        log="db",
        amin=1e-10,
        top_db=120.0,
    )


def count_params(
    *, embed_dim: int, depth: int = 12, columns: int = 24, pooling: str = "mean", rows: int = 4,
    num_classes: int = 527, n_mels: int = N_MELS, mlp_ratio: int = 4,
) -> int:  # fmt: skip
    """nn.Parameters of the released layout (upstream's count: BatchNorm affine included, buffers not)."""
    d, h = embed_dim, mlp_ratio * embed_dim
    tokens = 2 * d if pooling == "token" else 0  # cls_token, token_pos_embed
    grid = d * columns + d * rows
    stem = 2 * n_mels + d * PATCH * PATCH + d  # init_bn affine, patch_embed
    block = 2 * d + (3 * d * d + 3 * d) + (d * d + d) + 2 * d + (h * d + h) + (d * h + d)
    head = 2 * d + 2 * d + d * num_classes + num_classes  # norm, outputlayer.0, outputlayer.1
    return tokens + grid + stem + depth * block + head


def _cfg(architecture: str, file: str, *, audioset_map: float, notes: str, **model_kwargs: Any) -> PretrainedCfg:
    dims = {"tiny": 192, "small": 384, "base": 768}
    size = architecture.split("_")[-1] if architecture.startswith("sat_vit") else architecture.split("_")[1]
    target = model_kwargs.get("target_length", 192)
    cache = model_kwargs.get("cache_length", 0 if model_kwargs.get("streaming") is False else 192)
    return PretrainedCfg(
        architecture=architecture,
        tag="audioset",
        frontend=sat_frontend(),
        num_classes=527,
        task="multilabel",
        label_set="audioset",
        url=f"{_ZENODO}{file}?download=1",
        sha256=None,
        filename=file,
        clip_seconds=10.0,
        classifier="outputlayer",
        license=_LICENSE,
        paper=_PAPER,
        source=_SOURCE,
        metrics={"audioset_map": audioset_map},
        num_params=count_params(
            embed_dim=dims[size], columns=(target + cache) // PATCH, pooling=model_kwargs.get("pooling", "mean")
        ),
        model_kwargs={},
        notes=notes + " Zenodo lists an md5 for each file of the record, not recorded here (it could not be read "
        "offline): the sha256 of the first download is pinned in the cache and later uses are checked against it. "
        "The licence of the weights is not stated in the repository or on the record.",
    )


default_cfgs: list[PretrainedCfg] = [
    _cfg("sat_tiny_2s", "SAT_T_stream2s_mAP_43_34.pt", audioset_map=0.433,
         notes="upstream SAT_T_2s (inference.py's default): 2 s delay, 192-frame pieces, 192 frames of memory; "
         "README mAP 43.3 with 2 s chunks (file name 43.34)."),
    _cfg("sat_tiny_1s", "SAT_T_stream1s_mAP_40_11.pt", audioset_map=0.401, target_length=96, cache_length=96,
         notes="upstream SAT_T_1s: 1 s delay, 96-frame pieces and memory; README mAP 40.1 with 1 s chunks."),
    _cfg("sat_small_2s", "SAT_S_stream2s_mAP_43_37.pt", audioset_map=0.434, pooling="token",
         notes="upstream SAT_S_2s: class-token pooling (the paper says mean; upstream's code comment admits the "
         "defaults used the token); README mAP 43.4."),
    _cfg("sat_small_1s", "SAT_S_stream1s_mAP_40_55.pt", audioset_map=0.402, pooling="token",
         notes="upstream SAT_S_1s: the same 192-frame pieces and memory as SAT_S_2s in upstream's code, trained on "
         "2 s chunks, for 1 s chunks (tag --stream's default); README mAP 40.2."),
    _cfg("sat_base_2s", "SAT_B_stream2s_mAP_45_29.pt", audioset_map=0.451,
         notes="upstream SAT_B_2s; README mAP 45.1 (file name 45.29)."),
    _cfg("sat_base_1s", "SAT_B_stream1s_mAP_41_37.pt", audioset_map=0.414, target_length=96, cache_length=96,
         notes="upstream SAT_B_1s; README mAP 41.4."),
    _cfg("sat_vit_tiny", "audiotransformer_tiny_mAP_44_15.pt", audioset_map=0.4415, streaming=False,
         target_length=1012,
         notes="upstream audiotransformer_tiny, the non-streaming ViT-T baseline: 1012-frame pieces, no memory; "
         "mAP 44.15 from the file name (10 s clips; README: 39.1 with 2 s chunks, 33.0 with 1 s)."),
    _cfg("sat_vit_small", "audiotransformer_small_mAP_45_68.pt", audioset_map=0.4568, streaming=False,
         target_length=1012, pooling="token",
         notes="upstream audiotransformer_small (ViT-S baseline, class-token pooling, the class default); mAP 45.68 "
         "from the file name (README: 40.9 with 2 s chunks, 34.9 with 1 s)."),
    _cfg("sat_vit_base", "audiotransformer_base_mAP_47_40.pt", audioset_map=0.474, streaming=False,
         target_length=1012,
         notes="upstream audiotransformer_base (ViT-B baseline, the teacher of SAT's pseudo-labels); mAP 47.40 "
         "(file name and README text; README: 41.5 with 2 s chunks, 34.2 with 1 s)."),
]  # fmt: skip
register_pretrained_cfgs(default_cfgs)


# ---------------------------------------------------------------------------------------------------------------------
# Builders
# ---------------------------------------------------------------------------------------------------------------------
_SIZES = {"tiny": (192, 3), "small": (384, 6), "base": (768, 12)}


def _create(pretrained_cfg: PretrainedCfg, size: str, **kwargs: Any) -> SAT:
    dim, heads = _SIZES[size]
    kwargs.setdefault("embed_dim", dim)
    kwargs.setdefault("num_heads", heads)
    return SAT(pretrained_cfg, **kwargs)


def _one_second(kwargs: dict[str, Any], frames: int = 96) -> dict[str, Any]:
    kwargs.setdefault("target_length", frames)
    kwargs.setdefault("cache_length", frames)
    kwargs.setdefault("chunk_seconds", 1.0)
    return kwargs


def _baseline(kwargs: dict[str, Any], pooling: str = "mean") -> dict[str, Any]:
    kwargs.setdefault("streaming", False)
    kwargs.setdefault("target_length", 1012)
    kwargs.setdefault("cache_length", 0)
    kwargs.setdefault("pooling", pooling)
    return kwargs


@register_model
def sat_tiny_2s(pretrained_cfg: PretrainedCfg, **kwargs: Any) -> SAT:
    """SAT-T, 2 s delay: 192/12/3, 192-frame pieces with 192 frames of memory (5.50 M parameters)."""
    return _create(pretrained_cfg, "tiny", **kwargs)


@register_model
def sat_tiny_1s(pretrained_cfg: PretrainedCfg, **kwargs: Any) -> SAT:
    """SAT-T, 1 s delay: 96-frame pieces and memory (5.49 M)."""
    return _create(pretrained_cfg, "tiny", **_one_second(kwargs))


@register_model
def sat_small_2s(pretrained_cfg: PretrainedCfg, **kwargs: Any) -> SAT:
    """SAT-S, 2 s delay: 384/12/6, class-token pooling (21.6 M)."""
    kwargs.setdefault("pooling", "token")
    return _create(pretrained_cfg, "small", **kwargs)


@register_model
def sat_small_1s(pretrained_cfg: PretrainedCfg, **kwargs: Any) -> SAT:
    """SAT-S for 1 s chunks: upstream gives it SAT-S 2 s's 192-frame pieces and memory; class-token pooling."""
    kwargs.setdefault("pooling", "token")
    kwargs.setdefault("chunk_seconds", 1.0)
    return _create(pretrained_cfg, "small", **kwargs)


@register_model
def sat_base_2s(pretrained_cfg: PretrainedCfg, **kwargs: Any) -> SAT:
    """SAT-B, 2 s delay: 768/12/12."""
    return _create(pretrained_cfg, "base", **kwargs)


@register_model
def sat_base_1s(pretrained_cfg: PretrainedCfg, **kwargs: Any) -> SAT:
    """SAT-B, 1 s delay: 96-frame pieces and memory."""
    return _create(pretrained_cfg, "base", **_one_second(kwargs))


@register_model
def sat_vit_tiny(pretrained_cfg: PretrainedCfg, **kwargs: Any) -> SAT:
    """ViT-T baseline of SAT (upstream audiotransformer_tiny): 1012-frame pieces, no memory, mean pooling."""
    return _create(pretrained_cfg, "tiny", **_baseline(kwargs))


@register_model
def sat_vit_small(pretrained_cfg: PretrainedCfg, **kwargs: Any) -> SAT:
    """ViT-S baseline (upstream audiotransformer_small): class-token pooling."""
    return _create(pretrained_cfg, "small", **_baseline(kwargs, "token"))


@register_model
def sat_vit_base(pretrained_cfg: PretrainedCfg, **kwargs: Any) -> SAT:
    """ViT-B baseline (upstream audiotransformer_base), the teacher of SAT's pseudo-labels."""
    return _create(pretrained_cfg, "base", **_baseline(kwargs))
