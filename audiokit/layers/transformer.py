"""The DeiT-style transformer stack PaSST, SSAST and SAT's baselines were trained with, built from timm's ViT ``Block``
(pre-norm, fused qkv with bias, exact GELU, softmax attention scaled by head_dim ** -0.5), whose state-dict names
(``norm1``, ``attn.qkv``, ``attn.proj``, ``norm2``, ``mlp.fc1``, ``mlp.fc2``) are those of the releases."""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

__all__ = ["drop_path_rates", "vit_blocks"]


def drop_path_rates(depth: int, drop_path_rate: float) -> list[float]:
    """Stochastic depth rising linearly from 0 at the first block to ``drop_path_rate`` at the last (timm's rule)."""
    return torch.linspace(0, drop_path_rate, depth, device="cpu").tolist() if depth else []


def vit_blocks(
    embed_dim: int,
    depth: int,
    num_heads: int,
    *,
    mlp_ratio: float,
    drop_rate: float,
    attn_drop_rate: float,
    drop_path_rate: float,
    eps: float,
) -> list[nn.Module]:
    """``depth`` timm ViT blocks with LayerNorm ``eps`` given explicitly (the releases use 1e-6; timm's default may
    differ between versions) and the stochastic depth of ``drop_path_rates``."""
    from timm.models.vision_transformer import Block

    return [
        Block(
            embed_dim,
            num_heads,
            mlp_ratio=mlp_ratio,
            qkv_bias=True,
            proj_drop=drop_rate,
            attn_drop=attn_drop_rate,
            drop_path=rate,
            norm_layer=partial(nn.LayerNorm, eps=eps),
            act_layer=nn.GELU,
        )
        for rate in drop_path_rates(depth, drop_path_rate)
    ]
