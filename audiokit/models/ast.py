"""AST, the Audio Spectrogram Transformer (Gong, Chung, Glass, Interspeech 2021), on the transformers backbone.

The network is a DeiT-base vision transformer over 16x16 patches of a 128-band Kaldi log filterbank at 16 kHz. The
transformer itself is ``transformers.ASTModel`` (not re-implemented here); this module wraps it in the audiokit
contract and adds the classification head of the original code:

    waveform -> ``frontend`` (kaldi_fbank, fixed ``max_frames``) -> ``backbone`` (ASTModel: patch embedding, cls and
    distillation tokens, pre-norm blocks, final LayerNorm) -> mean of the two token outputs -> ``head_norm``
    (LayerNorm, eps 1e-5) -> ``head`` (Linear, the final layer).

``embed()`` returns the ``head_norm`` output, i.e. the input of ``head`` (``num_features`` = 768), so a new head
trained on it sees exactly what the published head saw.

LayerNorm epsilons follow the original (timm 0.4.5 blocks and final norm 1e-6; head 1e-5), not the transformers
default of 1e-12, which moves logits by ~1e-4. A transformers directory (``save_pretrained`` of
``ASTForAudioClassification`` / ``ASTModel``, with its ``preprocessor_config.json``) is built from its own files by
:func:`model_kwargs_from_transformers` and :func:`frontend_from_transformers`: there one ``layer_norm_eps`` serves
blocks, final norm and head, as in transformers, and an ``ASTModel`` has no head LayerNorm (``head_norm=False``).

Checkpoints accepted by :func:`checkpoint_filter_fn` (strict loading afterwards):

- the original ``*.pth`` files (``nn.DataParallel`` state dicts, ``module.v.*`` and ``module.mlp_head.*``), mapped by
  :func:`convert_original_state_dict`; the unused DeiT heads ``v.head``/``v.head_dist`` are dropped;
- Hugging Face ``ASTForAudioClassification`` state dicts (``model.safetensors`` / ``pytorch_model.bin``) in the
  transformers 4.x file names or the 5.x in-memory names, mapped by :func:`convert_hf_state_dict`;
- our own ``save_pretrained`` layout (passed through).
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import nn

from .._pretrained import FrontendCfg, PretrainedCfg
from .._registry import register_model, register_pretrained_cfgs
from ._base import AudioClassifier

__all__ = [
    "AST",
    "ast_frontend",
    "checkpoint_filter_fn",
    "convert_hf_state_dict",
    "convert_original_state_dict",
    "frontend_from_transformers",
    "model_kwargs_from_transformers",
    "token_embedding",
]

BLOCK_LN_EPS = 1e-6  # timm 0.4.5 ViT blocks and final norm
HEAD_LN_EPS = 1e-5  # torch default, used by the original mlp_head LayerNorm

# Dataset statistics of the log filterbanks (mean, std); the original normalises by (x - mean) / (2 * std).
AUDIOSET_STATS = (-4.2677393, 4.5689974)
SPEECHCOMMANDS_STATS = (-6.845978, 5.5654526)


# ---------------------------------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------------------------------
class AST(AudioClassifier):
    """Audio Spectrogram Transformer: ``transformers.ASTModel`` backbone + LayerNorm/Linear head.

    Keys: ``backbone.*`` (the ASTModel's own names, transformers 5.x), ``head_norm.*``, ``head.*`` (final layer).
    The number of time frames is fixed by ``frontend.max_frames`` because the position embeddings are learned for
    one patch grid.
    """

    def __init__(
        self,
        pretrained_cfg: PretrainedCfg,
        fstride: int = 10,
        tstride: int = 10,
        hidden_size: int = 768,
        num_layers: int = 12,
        num_heads: int = 12,
        intermediate_size: int = 3072,
        patch_size: int = 16,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        layer_norm_eps: float = BLOCK_LN_EPS,
        head_norm_eps: float = HEAD_LN_EPS,
        head_norm: bool = True,
        hidden_act: str = "gelu",
        qkv_bias: bool = True,
    ):
        super().__init__(pretrained_cfg)
        from transformers import ASTConfig, ASTModel

        fe = pretrained_cfg.frontend
        if fe.kind != "kaldi_fbank" or fe.max_frames is None:
            raise ValueError("AST needs a kaldi_fbank frontend with max_frames set (its position grid is fixed)")
        self.config = ASTConfig(
            hidden_size=hidden_size,
            num_hidden_layers=num_layers,
            num_attention_heads=num_heads,
            intermediate_size=intermediate_size,
            hidden_act=hidden_act,  # "gelu": exact (erf) GELU, like nn.GELU in the original
            hidden_dropout_prob=drop_rate,
            attention_probs_dropout_prob=attn_drop_rate,
            layer_norm_eps=layer_norm_eps,
            patch_size=patch_size,
            qkv_bias=qkv_bias,
            frequency_stride=fstride,
            time_stride=tstride,
            max_length=fe.max_frames,
            num_mel_bins=fe.n_mels,
        )
        self.backbone = ASTModel(self.config)
        self.num_features = hidden_size
        # ASTModel's pooled output (an embedder saved by transformers) is the token mean without a LayerNorm.
        self.head_norm: nn.Module = nn.LayerNorm(hidden_size, eps=head_norm_eps) if head_norm else nn.Identity()
        n = pretrained_cfg.num_classes
        self.head: nn.Module = nn.Linear(hidden_size, n) if n > 0 else nn.Identity()

    @property
    def patch_grid(self) -> tuple[int, int]:
        """(frequency, time) patches: ``(128 - 16) // 10 + 1 = 12`` by ``(1024 - 16) // 10 + 1 = 101`` for AudioSet."""
        c = self.config
        return (
            (c.num_mel_bins - c.patch_size) // c.frequency_stride + 1,
            (c.max_length - c.patch_size) // c.time_stride + 1,
        )

    def forward_tokens(self, fbank: torch.Tensor) -> torch.Tensor:
        """Normalised filterbanks ``(B, 1, n_mels, frames)`` -> token outputs ``(B, 2 + patches, hidden)``."""
        return self.backbone(input_values=fbank[:, 0].transpose(1, 2)).last_hidden_state

    def forward_features(self, waveform: torch.Tensor) -> torch.Tensor:
        """``(B, T)`` waveform -> final-norm token outputs ``(B, 2 + patches, hidden)`` (cls, distillation, patches)."""
        return self.forward_tokens(self.frontend(waveform))

    def forward_pre_logits(self, features: torch.Tensor) -> torch.Tensor:
        """Token outputs -> embedding ``(B, hidden)``: the mean of the two class tokens through ``head_norm``."""
        return self.head_norm((features[:, 0] + features[:, 1]) / 2)

    # -- embedding points ------------------------------------------------------------------------------------------
    def embedding_blocks(self) -> dict[int, int]:
        """transformers' ``hidden_states``: 0 the embeddings (patches + position, cls and distillation tokens), k the
        output of transformer layer k (before the final LayerNorm); each pooled as the mean of its patch tokens."""
        return dict.fromkeys(range(self.config.num_hidden_layers + 1), self.config.hidden_size)

    def embedding_points(self) -> dict[str, int]:
        """On the final-norm tokens: ``cls`` (token 0), ``dist`` (the distillation token, 1), ``mean`` (the patch
        tokens' mean), ``pooled`` (the mean of cls and dist, the original's pooling; ``pre_logits`` is it after
        ``head_norm``)."""
        return dict.fromkeys(("cls", "dist", "mean", "pooled"), self.config.hidden_size)

    def forward_embedding(self, waveform: torch.Tensor, layer: int | str) -> torch.Tensor:
        if isinstance(layer, int):
            fbank = self.frontend(waveform)
            out = self.backbone(input_values=fbank[:, 0].transpose(1, 2), output_hidden_states=True)
            return out.hidden_states[layer][:, 2:].mean(dim=1)
        return token_embedding(self.forward_features(waveform), layer)

    @torch.no_grad()
    def forward_frame_embeddings(self, waveform: torch.Tensor, layer: int | None = None) -> torch.Tensor:
        """Per time column of the patch grid ``(B, columns, hidden)``: its patch tokens averaged over the grid's
        frequency rows (final-norm tokens; ``layer=k``: transformers' ``hidden_states[k]``). Only the columns whose
        patches lie inside the input are given (the fbank is zero-padded up to ``max_frames``); their mean over time
        is ``embed(layer="mean")`` for a full-length input."""
        waveform = self.prepare_waveform(waveform)
        fbank = self.frontend(waveform)
        if layer is None:
            tokens = self.forward_tokens(fbank)
        else:
            index = self.resolve_embedding_layer(layer)
            if not isinstance(index, int):
                raise ValueError(f"frame embeddings take a block index or None, got {layer!r}")
            out = self.backbone(input_values=fbank[:, 0].transpose(1, 2), output_hidden_states=True)
            tokens = out.hidden_states[index]
        rows, columns = self.patch_grid
        # transformers flattens the (frequency, time) patch grid frequency-major: token 2 + f * columns + t.
        grid = tokens[:, 2:].reshape(tokens.shape[0], rows, columns, -1)
        return grid.mean(dim=1)[:, : self.frame_count(waveform.shape[-1])]

    def frame_count(self, num_samples: int) -> int:
        """Time columns whose patches start inside the real (unpadded) fbank frames of ``num_samples``."""
        c, fe = self.config, self.frontend_cfg
        real = min(1 + (num_samples - (fe.win_length or fe.n_fft)) // fe.hop_length, c.max_length)
        return max(1, min(self.patch_grid[1], (real - c.patch_size) // c.time_stride + 1))

    @property
    def frame_hop_seconds(self) -> float:
        """Seconds between time columns: ``time_stride`` fbank shifts (0.1 s)."""
        return self.config.time_stride * self.frontend_cfg.hop_length / self.sample_rate

    def checkpoint_filter_fn(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return checkpoint_filter_fn(state_dict)


def token_embedding(tokens: torch.Tensor, name: str, prefix: int = 2) -> torch.Tensor:
    """``(B, prefix + patches, D)`` tokens ([cls], [dist] first) -> the ``cls``, ``dist``, ``mean`` (of the patch
    tokens) or ``pooled`` (mean of cls and dist) vector ``(B, D)``; shared by the DeiT-style families."""
    if name == "cls":
        return tokens[:, 0]
    if name == "dist":
        return tokens[:, 1]
    if name == "mean":
        return tokens[:, prefix:].mean(dim=1)
    if name == "pooled":
        return (tokens[:, 0] + tokens[:, 1]) / 2
    raise ValueError(f"no token embedding {name!r}")


# ---------------------------------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------------------------------
_ORIGINAL_DROPPED = ("v.head.", "v.head_dist.")  # DeiT ImageNet heads, present in the files but never used

_ORIGINAL_RENAMES: tuple[tuple[str, str], ...] = (
    (r"^v\.cls_token$", "backbone.embeddings.cls_token"),
    (r"^v\.dist_token$", "backbone.embeddings.distillation_token"),
    (r"^v\.pos_embed$", "backbone.embeddings.position_embeddings"),
    (r"^v\.patch_embed\.proj\.", "backbone.embeddings.patch_embeddings.projection."),
    (r"^v\.blocks\.(\d+)\.norm1\.", r"backbone.layers.\1.layernorm_before."),
    (r"^v\.blocks\.(\d+)\.norm2\.", r"backbone.layers.\1.layernorm_after."),
    (r"^v\.blocks\.(\d+)\.attn\.proj\.", r"backbone.layers.\1.attention.o_proj."),
    (r"^v\.blocks\.(\d+)\.mlp\.fc([12])\.", r"backbone.layers.\1.mlp.fc\2."),
    (r"^v\.norm\.", "backbone.layernorm."),
    (r"^mlp_head\.0\.", "head_norm."),
    (r"^mlp_head\.1\.", "head."),
)
_QKV = re.compile(r"^v\.blocks\.(\d+)\.attn\.qkv\.(weight|bias)$")


def convert_original_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Original YuanGongND/ast keys (``module.`` already stripped) -> ours. Pure: the input is not modified.

    The fused ``qkv`` projection (rows: query, key, value, ``hidden`` each) becomes three tensors; the unused DeiT
    heads are dropped. Keys that match nothing are kept as they are, for the strict loader to report.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if key.startswith(_ORIGINAL_DROPPED):
            continue
        m = _QKV.match(key)
        if m is not None:
            layer, kind = m.groups()
            if value.shape[0] % 3:
                raise ValueError(f"{key}: fused qkv with {value.shape[0]} rows is not divisible by 3")
            for name, part in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0)):
                out[f"backbone.layers.{layer}.attention.{name}.{kind}"] = part.clone()
            continue
        new = key
        for pattern, repl in _ORIGINAL_RENAMES:
            new, hits = re.subn(pattern, repl, key)
            if hits:
                break
        out[new] = value
    return out


_HF_RENAMES: tuple[tuple[str, str], ...] = (
    (r"^audio_spectrogram_transformer\.", "backbone."),
    (r"^classifier\.layernorm\.", "head_norm."),
    (r"^classifier\.dense\.", "head."),
    # transformers 4.x file names -> 5.x in-memory names
    (r"^backbone\.encoder\.layer\.(\d+)\.", r"backbone.layers.\1."),
    (r"\.attention\.attention\.query\.", ".attention.q_proj."),
    (r"\.attention\.attention\.key\.", ".attention.k_proj."),
    (r"\.attention\.attention\.value\.", ".attention.v_proj."),
    (r"\.attention\.output\.dense\.", ".attention.o_proj."),
    (r"\.intermediate\.dense\.", ".mlp.fc1."),
    (r"^(backbone\.layers\.\d+)\.output\.dense\.", r"\1.mlp.fc2."),
)


def convert_hf_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``ASTForAudioClassification`` keys (transformers 4.x files or 5.x in-memory names) -> ours. Pure."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        new = key
        for pattern, repl in _HF_RENAMES:
            new = re.sub(pattern, repl, new)
        out[new] = value
    return out


_HF_PREFIXES = ("audio_spectrogram_transformer.", "classifier.layernorm.", "classifier.dense.")
# A bare ASTModel (transformers' embedder, no classification head) saves its tensors without a prefix.
_HF_BARE_PREFIXES = ("embeddings.", "encoder.", "layers.", "layernorm.")


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Recognise the checkpoint's layout (original, Hugging Face or ours) and return it in our key names."""
    state = dict(state_dict)
    if any(k.startswith(("v.blocks.", "v.patch_embed.", "mlp_head.")) for k in state):
        return convert_original_state_dict(state)
    if any(k.startswith(_HF_PREFIXES) for k in state):
        return convert_hf_state_dict(state)
    if any(k.startswith("embeddings.patch_embeddings.") for k in state):
        bare = {("backbone." + k if k.startswith(_HF_BARE_PREFIXES) else k): v for k, v in state.items()}
        return convert_hf_state_dict(bare)
    return state


# ---------------------------------------------------------------------------------------------------------------------
# Transformers directories (config.json + preprocessor_config.json written by save_pretrained)
# ---------------------------------------------------------------------------------------------------------------------
HF_MODEL_TYPE = "audio-spectrogram-transformer"
# transformers class -> whether it carries the classification head (ASTMLPHead: LayerNorm + Linear).
HF_ARCHITECTURES = {"ASTForAudioClassification": True, "ASTModel": False}
HF_HEAD_PREFIX = "classifier."
HF_EXTRACTOR = "ASTFeatureExtractor"
HF_DEFAULT_ARCHITECTURE = "ast_base"


def model_kwargs_from_transformers(config: Any, with_head: bool) -> dict[str, Any]:
    """An ``ASTConfig`` (parsed and type-checked by transformers) -> this family's architecture arguments.

    transformers uses its one ``layer_norm_eps`` for the blocks, the final norm and the head's LayerNorm alike.
    ``max_length`` and ``num_mel_bins`` shape the input, so they live in the frontend
    (:func:`frontend_from_transformers`). Dropout is a training choice and is left to the caller (``drop_rate=``).
    """
    if isinstance(config.patch_size, (list, tuple)):
        raise ValueError(f"patch_size {config.patch_size!r}: transformers' AST builds square patches from an int")
    return {
        "hidden_size": config.hidden_size,
        "num_layers": config.num_hidden_layers,
        "num_heads": config.num_attention_heads,
        "intermediate_size": config.intermediate_size,
        "patch_size": config.patch_size,
        "fstride": config.frequency_stride,
        "tstride": config.time_stride,
        "layer_norm_eps": config.layer_norm_eps,
        "head_norm_eps": config.layer_norm_eps,
        "head_norm": with_head,
        "hidden_act": config.hidden_act,
        "qkv_bias": config.qkv_bias,
    }


def frontend_from_transformers(extractor: dict[str, Any], config: Any) -> tuple[FrontendCfg, dict[str, Any]]:
    """An ``ASTFeatureExtractor``'s saved settings -> the frontend (and no architecture arguments).

    The extractor runs ``torchaudio.compliance.kaldi.fbank`` with its defaults (25 ms frames every 10 ms, pre-emphasis
    0.97, 20 Hz to Nyquist, no dither) at its ``sampling_rate``, pads or cuts to ``max_length`` frames and, with
    ``do_normalize``, maps ``x -> (x - mean) / (2 std)``. Its frame count and band count must be the ones the
    model's position grid was built for (config.json's ``max_length`` and ``num_mel_bins``).
    """
    from transformers import ASTFeatureExtractor

    fe = ASTFeatureExtractor.from_dict(dict(extractor))
    for name in ("max_length", "num_mel_bins"):
        if getattr(fe, name) != getattr(config, name):
            raise ValueError(
                f"{name} {getattr(fe, name)!r} differs from config.json's {getattr(config, name)!r}, which the "
                "position embeddings were built for"
            )
    if not isinstance(fe.do_normalize, bool):
        raise ValueError(f"do_normalize must be true or false, got {fe.do_normalize!r}")
    rate = fe.sampling_rate
    if isinstance(rate, bool) or not isinstance(rate, int):
        raise ValueError(f"sampling_rate must be an integer, got {rate!r}")
    # The extractor's std is doubled by ast_frontend; without normalisation the features pass unchanged.
    mean, std = (fe.mean, fe.std) if fe.do_normalize else (0.0, 0.5)
    return ast_frontend(fe.max_length, mean, std, sample_rate=rate, n_mels=fe.num_mel_bins), {}


# ---------------------------------------------------------------------------------------------------------------------
# Pretrained configurations
# ---------------------------------------------------------------------------------------------------------------------
_SOURCE = "https://github.com/YuanGongND/ast (BSD-3-Clause; weights on Dropbox, mirrored on the HF hub under MIT/)"
_PAPER = "Y. Gong, Y.-A. Chung, J. Glass. AST: Audio Spectrogram Transformer. Interspeech 2021. arXiv:2104.01778"
_DROPBOX = "https://www.dropbox.com/s/{}/{}?dl=1"


def ast_frontend(max_frames: int, mean: float, std: float, sample_rate: int = 16000, n_mels: int = 128) -> FrontendCfg:
    """The AST input: Kaldi fbank (16 kHz, 25 ms symmetric Hann frames every 10 ms, pre-emphasis 0.97, 128 Kaldi mel
    bands 20 Hz-8 kHz, natural log floored at float32 eps), zero-padded/truncated to ``max_frames`` in the log domain,
    then ``(x - mean) / (2 * std)`` (the factor 2 is folded into the stored ``std``; doubling is exact)."""
    if isinstance(std, bool) or not isinstance(std, (int, float)):
        raise ValueError(f"std must be a number, got {std!r}")
    # Kaldi's frame sizes in samples: int(rate * ms / 1000), the FFT at the next power of two.
    win_length = int(sample_rate * 25 * 0.001)
    return FrontendCfg(
        kind="kaldi_fbank",
        sample_rate=sample_rate,
        n_fft=1 << (win_length - 1).bit_length(),
        win_length=win_length,
        hop_length=int(sample_rate * 10 * 0.001),
        n_mels=n_mels,
        f_min=20.0,
        f_max=None,
        window="hann_symmetric",
        center=False,
        preemphasis=0.97,
        stft="fft",
        mel_scale="kaldi",
        mel_norm=None,
        log="ln",
        mean=mean,
        std=2.0 * std,
        max_frames=max_frames,
    )


# Parameter counts (ASTForAudioClassification layout; the original files hold 1,538,000 more in the unused DeiT
# heads). They differ only in the position-embedding grid and the class count.
_AUDIOSET_PARAMS = {10: 86_594_063, 12: 86_316_047, 14: 86_167_823, 16: 86_056_463}
_SPEECHCOMMANDS_PARAMS = 85_395_491


def _audioset_cfg(
    architecture: str, stride: int, file_id: str, filename: str, hub_id: str, audioset_map: float, notes: str
) -> PretrainedCfg:
    return PretrainedCfg(
        architecture=architecture,
        tag="audioset",
        frontend=ast_frontend(1024, *AUDIOSET_STATS),
        num_classes=527,
        task="multilabel",
        label_set="audioset",
        url=_DROPBOX.format(file_id, filename),
        sha256=None,
        filename=filename,
        hf_hub_id=hub_id,
        clip_seconds=10.0,
        classifier="head",
        license="BSD-3-Clause",
        paper=_PAPER,
        source=_SOURCE,
        metrics={"audioset_map": audioset_map},
        num_params=_AUDIOSET_PARAMS[stride],
        model_kwargs={"fstride": stride, "tstride": stride},
        notes=notes,
    )


default_cfgs: list[PretrainedCfg] = [
    _audioset_cfg(
        "ast_base",
        10,
        "ca0b1v2nlxzyeb4",
        "audioset_10_10_0.4593.pth",
        "MIT/ast-finetuned-audioset-10-10-0.4593",
        0.459,
        "stride 10x10, ImageNet + AudioSet, weight-averaged (epochs 1-5). Input: the first 1024 frames (10.24 s).",
    ),
    _audioset_cfg(
        "ast_base_12x12",
        12,
        "snfhx3tizr4nuc8",
        "audioset_12_12_0.4467.pth",
        "MIT/ast-finetuned-audioset-12-12-0.447",
        0.447,
        "stride 12x12. Input: the first 1024 frames (10.24 s).",
    ),
    _audioset_cfg(
        "ast_base_14x14",
        14,
        "z18s6pemtnxm4k7",
        "audioset_14_14_0.4431.pth",
        "MIT/ast-finetuned-audioset-14-14-0.443",
        0.443,
        "stride 14x14. Input: the first 1024 frames (10.24 s).",
    ),
    _audioset_cfg(
        "ast_base_16x16",
        16,
        "mdsa4t1xmcimia6",
        "audioset_16_16_0.4422.pth",
        "MIT/ast-finetuned-audioset-16-16-0.442",
        0.442,
        "stride 16x16. Input: the first 1024 frames (10.24 s).",
    ),
    PretrainedCfg(
        architecture="ast_base",
        tag="speechcommands_v2",
        frontend=ast_frontend(128, *SPEECHCOMMANDS_STATS),
        num_classes=35,
        task="multiclass",
        label_set="speechcommands35",
        url=_DROPBOX.format("q0tbqpwv44pquwy", "speechcommands_10_10_0.9812.pth"),
        sha256=None,
        filename="speechcommands_10_10_0.9812.pth",
        hf_hub_id="MIT/ast-finetuned-speech-commands-v2",
        clip_seconds=1.0,
        classifier="head",
        license="BSD-3-Clause",
        paper=_PAPER,
        source=_SOURCE,
        metrics={"speechcommands_v2_35_accuracy": 0.9812},
        num_params=_SPEECHCOMMANDS_PARAMS,
        model_kwargs={"fstride": 10, "tstride": 10},
        notes="Speech Commands V2, 35 words (upstream label order). Input: the first 128 frames (1.28 s).",
    ),
]
register_pretrained_cfgs(default_cfgs)


# ---------------------------------------------------------------------------------------------------------------------
# Builders
# ---------------------------------------------------------------------------------------------------------------------
def _create(pretrained_cfg: PretrainedCfg, stride: int, **kwargs: Any) -> AST:
    kwargs.setdefault("fstride", stride)
    kwargs.setdefault("tstride", stride)
    return AST(pretrained_cfg, **kwargs)


@register_model
def ast_base(pretrained_cfg: PretrainedCfg, **kwargs: Any) -> AST:
    """AST-Base (DeiT-B/16 body), patch stride 10x10: 12 x 101 patches for 1024 frames (86.6 M parameters)."""
    return _create(pretrained_cfg, 10, **kwargs)


@register_model
def ast_base_12x12(pretrained_cfg: PretrainedCfg, **kwargs: Any) -> AST:
    """AST-Base, patch stride 12x12: 10 x 85 patches for 1024 frames."""
    return _create(pretrained_cfg, 12, **kwargs)


@register_model
def ast_base_14x14(pretrained_cfg: PretrainedCfg, **kwargs: Any) -> AST:
    """AST-Base, patch stride 14x14: 9 x 73 patches for 1024 frames."""
    return _create(pretrained_cfg, 14, **kwargs)


@register_model
def ast_base_16x16(pretrained_cfg: PretrainedCfg, **kwargs: Any) -> AST:
    """AST-Base, patch stride 16x16: 8 x 64 patches for 1024 frames."""
    return _create(pretrained_cfg, 16, **kwargs)
