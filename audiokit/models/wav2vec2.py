"""Wav2Vec2 (Baevski et al. 2020) on raw 16 kHz audio, with ``transformers.Wav2Vec2Model`` as the backbone.

Two heads share one class:

- a pure embedder (``classifier_proj_size=None``): the embedding is the time-mean of the last hidden state;
- the ``Wav2Vec2ForSequenceClassification`` head (SUPERB-style): an optional softmax-weighted sum over the hidden
  states of every layer (``layer_weights``), a ``projector`` Linear, the time-mean, and the final ``classifier``.

Input: per-utterance normalisation ``(x - mean) / sqrt(var + 1e-7)`` (population variance) inside
``forward_features``, one clip at a time, so that a clip's result never depends on its batch. No padding or attention
mask is involved: audiokit batches only clips of equal length, so the time-mean is the plain mean over all frames
(which is what transformers computes without an attention mask).

Checkpoints accepted by :func:`checkpoint_filter_fn`:

- ``Wav2Vec2ForSequenceClassification`` state dicts (``wav2vec2.*``, ``projector.*``, ``classifier.*``,
  ``layer_weights``);
- bare ``Wav2Vec2Model`` state dicts (no prefix) and ``Wav2Vec2ForPreTraining`` / ``Wav2Vec2ForCTC`` ones, whose
  pre-training heads (``quantizer.*``, ``project_q.*``, ``project_hid.*``) and CTC head (``lm_head.*``) are dropped;
- the positional-convolution weight norm stored either as ``weight_g`` / ``weight_v`` (older files) or as
  ``parametrizations.weight.original0`` / ``original1`` (newer files), mapped to the names the model in memory uses;
- our own ``save_pretrained`` layout (passed through).

A transformers directory (``save_pretrained`` of one of :data:`HF_ARCHITECTURES`, with its
``preprocessor_config.json``) is built from its own files by :func:`model_kwargs_from_transformers` and
:func:`frontend_from_transformers`: any conv layout, group or layer feature-encoder norm, post- or pre-LN
(``do_stable_layer_norm``) transformer, weighted layer sum and projector size, and the extractor's ``do_normalize``.
HuBERT and WavLM (``hubert.py``, ``wavlm.py``) reuse this class with their own transformers backbone.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .._pretrained import FrontendCfg, PretrainedCfg
from .._registry import register_model, register_pretrained_cfgs
from ._base import AudioClassifier

__all__ = [
    "Wav2Vec2Classifier",
    "checkpoint_filter_fn",
    "frontend_from_transformers",
    "model_kwargs_from_transformers",
    "normalize_waveform",
    "wav2vec2_frontend",
]

_logger = logging.getLogger(__name__)

NORM_EPS = 1e-7  # variance floor of Wav2Vec2FeatureExtractor's zero-mean/unit-variance step


def normalize_waveform(waveform: torch.Tensor, eps: float = NORM_EPS) -> torch.Tensor:
    """Each row of ``(B, T)`` to zero mean and unit (population) variance, in float32."""
    x = waveform.float()
    mean = x.mean(dim=-1, keepdim=True)
    var = x.var(dim=-1, keepdim=True, unbiased=False)
    return (x - mean) / torch.sqrt(var + eps)


# ---------------------------------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------------------------------
class Wav2Vec2Classifier(AudioClassifier):
    """``transformers.Wav2Vec2Model`` backbone + (optional) weighted layer sum, projector, time-mean, classifier.

    Keys: ``backbone.*`` (the Wav2Vec2Model's own names), ``layer_weights`` (with ``use_weighted_layer_sum``),
    ``projector.*`` (unless ``classifier_proj_size`` is None), ``classifier.*`` (the final layer).

    SpecAugment-style masking is switched off (``apply_spec_augment=False``) and LayerDrop defaults to 0, so that
    training a new head on top is deterministic apart from dropout; ``backbone.masked_spec_embed`` is still created
    (the published checkpoints carry it; ``masked_spec_embed=False`` for directories saved without it) but is unused.
    """

    def __init__(
        self,
        pretrained_cfg: PretrainedCfg,
        hidden_size: int = 768,
        num_layers: int = 12,
        num_heads: int = 12,
        intermediate_size: int = 3072,
        conv_dim: Sequence[int] = (512, 512, 512, 512, 512, 512, 512),
        conv_kernel: Sequence[int] = (10, 3, 3, 3, 3, 2, 2),
        conv_stride: Sequence[int] = (5, 2, 2, 2, 2, 2, 2),
        conv_bias: bool = False,
        feat_extract_norm: str = "group",
        do_stable_layer_norm: bool = False,
        num_conv_pos_embeddings: int = 128,
        num_conv_pos_embedding_groups: int = 16,
        layer_norm_eps: float = 1e-5,
        use_weighted_layer_sum: bool = False,
        classifier_proj_size: int | None = 256,
        do_normalize: bool = True,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        layerdrop: float = 0.0,
        hidden_act: str = "gelu",
        feat_extract_activation: str = "gelu",
        masked_spec_embed: bool = True,
    ):
        super().__init__(pretrained_cfg)
        fe = pretrained_cfg.frontend
        if fe.kind != "waveform":
            raise ValueError(f"Wav2Vec2 takes raw samples: it needs a 'waveform' frontend, got {fe.kind!r}")
        if not (len(conv_dim) == len(conv_kernel) == len(conv_stride)):
            raise ValueError("conv_dim, conv_kernel and conv_stride must have one entry per convolution")
        self.config = self.backbone_config(
            hidden_size=hidden_size,
            num_hidden_layers=num_layers,
            num_attention_heads=num_heads,
            intermediate_size=intermediate_size,
            hidden_act=hidden_act,
            conv_dim=tuple(conv_dim),
            conv_kernel=tuple(conv_kernel),
            conv_stride=tuple(conv_stride),
            conv_bias=conv_bias,
            feat_extract_norm=feat_extract_norm,
            feat_extract_activation=feat_extract_activation,
            do_stable_layer_norm=do_stable_layer_norm,
            num_conv_pos_embeddings=num_conv_pos_embeddings,
            num_conv_pos_embedding_groups=num_conv_pos_embedding_groups,
            layer_norm_eps=layer_norm_eps,
            hidden_dropout=drop_rate,
            activation_dropout=drop_rate,
            feat_proj_dropout=drop_rate,
            final_dropout=drop_rate,
            attention_dropout=attn_drop_rate,
            layerdrop=layerdrop,
            # transformers creates masked_spec_embed only when a masking probability is > 0; the published files
            # carry it, a directory saved with both probabilities at 0 does not.
            mask_time_prob=0.05 if masked_spec_embed else 0.0,
            mask_feature_prob=0.0,
            apply_spec_augment=False,
            use_weighted_layer_sum=use_weighted_layer_sum,
        )
        self.backbone = self.backbone_model(self.config)
        self.do_normalize = do_normalize
        self.use_weighted_layer_sum = use_weighted_layer_sum
        if use_weighted_layer_sum:
            self.layer_weights = nn.Parameter(torch.full((num_layers + 1,), 1.0 / (num_layers + 1)))
        self.projector: nn.Module | None = None
        if classifier_proj_size is not None:
            self.projector = nn.Linear(hidden_size, classifier_proj_size)
            self.num_features = classifier_proj_size
        else:
            self.num_features = hidden_size
        n = pretrained_cfg.num_classes
        self.classifier: nn.Module = nn.Linear(self.num_features, n) if n > 0 else nn.Identity()

    # transformers' prefix for the encoder inside its sequence classifier, in its state dicts (HuBERT: "hubert.").
    state_dict_prefix = "wav2vec2."

    def backbone_config(self, **options: Any) -> Any:
        """The transformers config of the encoder (subclasses for encoders with the same layout: HuBERT)."""
        from transformers import Wav2Vec2Config

        return Wav2Vec2Config(**options)

    def backbone_model(self, config: Any) -> nn.Module:
        from transformers import Wav2Vec2Model

        return Wav2Vec2Model(config)

    # -- geometry ------------------------------------------------------------------------------------------------------
    @property
    def receptive_field(self) -> int:
        """Samples seen by one output frame of the convolutional encoder (400 for the base model)."""
        field, jump = 1, 1
        for kernel, stride in zip(self.config.conv_kernel, self.config.conv_stride):
            field += (kernel - 1) * jump
            jump *= stride
        return field

    @property
    def hop(self) -> int:
        """Samples between output frames (320 for the base model: 49 frames per second at 16 kHz)."""
        hop = 1
        for stride in self.config.conv_stride:
            hop *= stride
        return hop

    @property
    def min_samples(self) -> int:
        """One encoder frame: shorter input is zero-padded to this length (before the normalisation)."""
        return max(self.receptive_field, self.frontend_cfg.min_samples)

    @property
    def num_layers(self) -> int:
        return self.config.num_hidden_layers

    # -- forward -------------------------------------------------------------------------------------------------------
    def prepare_input(self, waveform: torch.Tensor) -> torch.Tensor:
        """Frontend (identity) and, with ``do_normalize``, the per-clip zero-mean/unit-variance step."""
        x = self.frontend(waveform)
        return normalize_waveform(x) if self.do_normalize else x

    def hidden_states(self, waveform: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``(B, T)`` waveform -> ``num_layers + 1`` hidden states ``(B, frames, hidden)``, as transformers numbers
        them: index 0 is the transformer's input (projected CNN features plus the positional convolution, after the
        encoder LayerNorm for the post-LN base model), index ``num_layers`` the last layer's output."""
        out = self.backbone(self.prepare_input(waveform), output_hidden_states=True)
        return tuple(out.hidden_states)

    def forward_features(self, waveform: torch.Tensor) -> torch.Tensor:
        """``(B, T)`` waveform -> frame features ``(B, frames, hidden)``: the softmax-weighted sum of all hidden
        states with ``use_weighted_layer_sum``, else the last hidden state."""
        if self.use_weighted_layer_sum:
            stacked = torch.stack(self.hidden_states(waveform), dim=1)  # (B, L + 1, frames, hidden)
            weights = torch.softmax(self.layer_weights, dim=-1)
            return (stacked * weights.view(-1, 1, 1)).sum(dim=1)
        return self.backbone(self.prepare_input(waveform)).last_hidden_state

    def forward_pre_logits(self, features: torch.Tensor) -> torch.Tensor:
        """Frame features -> embedding ``(B, num_features)``: the projector (if any), then the mean over frames."""
        if self.projector is not None:
            features = self.projector(features)
        return features.mean(dim=1)

    @torch.no_grad()
    def embed(self, waveform: torch.Tensor, layer: int | None = None) -> torch.Tensor:
        """Embedding ``(B, num_features)``; with ``layer=k`` instead the time-mean of hidden state ``k``
        ``(B, hidden_size)`` (0: the transformer's input, ``num_layers``: the last layer; negative counts back)."""
        if layer is None:
            return super().embed(waveform)
        n = self.num_layers + 1
        if not -n <= layer < n:
            raise ValueError(f"layer must be in [{-n}, {n - 1}] for a {self.num_layers}-layer model, got {layer}")
        return self.hidden_states(self.prepare_waveform(waveform))[layer].mean(dim=1)

    @torch.no_grad()
    def embed_frames(self, waveform: torch.Tensor, layer: int | None = None) -> torch.Tensor:
        """Frame-level embeddings ``(B, frames, hidden_size)``, one every ``hop`` samples (20 ms for the base model):
        hidden state ``layer`` (default: the last), not pooled."""
        states = self.hidden_states(self.prepare_waveform(waveform))
        index = self.num_layers if layer is None else layer
        n = self.num_layers + 1
        if not -n <= index < n:
            raise ValueError(f"layer must be in [{-n}, {n - 1}] for a {self.num_layers}-layer model, got {layer}")
        return states[index]

    @property
    def frame_hop_seconds(self) -> float:
        return self.hop / self.sample_rate

    def checkpoint_filter_fn(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        uses_parametrizations = any(".parametrizations.weight." in k for k in self.backbone.state_dict())
        return checkpoint_filter_fn(
            state_dict, parametrized_pos_conv=uses_parametrizations, model_prefix=self.state_dict_prefix
        )


# ---------------------------------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------------------------------
_DROPPED_PREFIXES = ("quantizer.", "project_q.", "project_hid.", "lm_head.")  # pre-training and CTC heads
_BARE_PREFIXES = ("feature_extractor.", "feature_projection.", "encoder.", "adapter.", "masked_spec_embed")
_HEAD_PREFIXES = ("projector.", "classifier.", "layer_weights")
_POS_CONV = "encoder.pos_conv_embed.conv."
_WEIGHT_NORM_NAMES = (
    ("weight_g", "parametrizations.weight.original0"),
    ("weight_v", "parametrizations.weight.original1"),
)


def checkpoint_filter_fn(
    state_dict: dict[str, torch.Tensor], parametrized_pos_conv: bool = True, model_prefix: str = "wav2vec2."
) -> dict[str, torch.Tensor]:
    """Hugging Face Wav2Vec2 keys (any of the layouts in the module docstring) or ours -> ours. Pure.

    ``parametrized_pos_conv`` says which weight-norm names the model in memory uses for the positional convolution
    (``parametrizations.weight.original0/1`` with current torch, else ``weight_g/v``); ``model_prefix`` is the
    encoder's prefix in transformers' task models. Keys that match nothing are kept, for the strict loader to report.
    """
    state = dict(state_dict)
    out: dict[str, torch.Tensor] = {}
    dropped = sorted({k.split(".", 1)[0] for k in state if k.startswith(_DROPPED_PREFIXES)})
    if dropped:
        _logger.info(
            "unused checkpoint tensors %s: pre-training (quantizer, project_q/hid) and CTC (lm_head) heads; audiokit "
            "builds the encoder and, where the checkpoint has one, the sequence-classification head",
            ", ".join(f"{name}.*" for name in dropped),
        )
    for key, value in state.items():
        if key.startswith(model_prefix):
            key = "backbone." + key[len(model_prefix) :]
        elif key.startswith(_DROPPED_PREFIXES):
            continue
        elif key.startswith(_BARE_PREFIXES):
            key = "backbone." + key
        if key.startswith("backbone." + _POS_CONV):
            for old, new in _WEIGHT_NORM_NAMES:
                src, dst = (old, new) if parametrized_pos_conv else (new, old)
                if key.endswith("." + src):
                    key = key[: -len(src)] + dst
        out[key] = value
    return out


# ---------------------------------------------------------------------------------------------------------------------
# Transformers directories (config.json + preprocessor_config.json written by save_pretrained)
# ---------------------------------------------------------------------------------------------------------------------
HF_MODEL_TYPE = "wav2vec2"
# transformers class -> whether it carries the sequence-classification head. The pre-training and CTC models are
# the same encoder with a head audiokit does not use: they load as embedders.
HF_ARCHITECTURES = {
    "Wav2Vec2ForSequenceClassification": True,
    "Wav2Vec2Model": False,
    "Wav2Vec2ForPreTraining": False,
    "Wav2Vec2ForCTC": False,
}
HF_HEAD_PREFIX = "classifier."
HF_EXTRACTOR = "Wav2Vec2FeatureExtractor"
HF_DEFAULT_ARCHITECTURE = "wav2vec2_base"


def model_kwargs_from_transformers(config: Any, with_head: bool) -> dict[str, Any]:
    """A ``Wav2Vec2Config`` (or a config of the same encoder layout, HuBERT's; parsed and type-checked by
    transformers) -> this family's architecture arguments.

    Without the head (``Wav2Vec2Model``) there are no layer weights, projector or classifier: the embedding is the
    time-mean of the last hidden state. Dropout and LayerDrop are training choices left to the caller.
    """
    if getattr(config, "add_adapter", False):
        raise ValueError("add_adapter is true: audiokit has no path for the adapter layers after the encoder")
    if getattr(config, "adapter_attn_dim", None) is not None:
        raise ValueError("adapter_attn_dim is set: audiokit has no path for attention adapters (MMS)")
    return {
        "hidden_size": config.hidden_size,
        "num_layers": config.num_hidden_layers,
        "num_heads": config.num_attention_heads,
        "intermediate_size": config.intermediate_size,
        "hidden_act": config.hidden_act,
        "conv_dim": tuple(config.conv_dim),
        "conv_kernel": tuple(config.conv_kernel),
        "conv_stride": tuple(config.conv_stride),
        "conv_bias": config.conv_bias,
        "feat_extract_norm": config.feat_extract_norm,
        "feat_extract_activation": config.feat_extract_activation,
        "do_stable_layer_norm": config.do_stable_layer_norm,
        "num_conv_pos_embeddings": config.num_conv_pos_embeddings,
        "num_conv_pos_embedding_groups": config.num_conv_pos_embedding_groups,
        "layer_norm_eps": config.layer_norm_eps,
        "masked_spec_embed": config.mask_time_prob > 0 or config.mask_feature_prob > 0,
        "use_weighted_layer_sum": bool(with_head and config.use_weighted_layer_sum),
        "classifier_proj_size": config.classifier_proj_size if with_head else None,
    }


def frontend_from_transformers(extractor: dict[str, Any], config: Any) -> tuple[FrontendCfg, dict[str, Any]]:
    """A ``Wav2Vec2FeatureExtractor``'s saved settings -> the frontend and ``do_normalize``.

    The extractor passes samples at ``sampling_rate`` through unchanged apart from, with ``do_normalize``, the
    per-clip zero-mean/unit-variance step that the model applies here. ``return_attention_mask`` changes nothing for
    audiokit: clips are never padded within a batch, and an all-ones mask gives transformers' unmasked result.
    """
    from transformers import Wav2Vec2FeatureExtractor

    fe = Wav2Vec2FeatureExtractor.from_dict(dict(extractor))
    if fe.feature_size != 1:
        raise ValueError(f"feature_size {fe.feature_size!r}: Wav2Vec2 takes one sample per step")
    if not isinstance(fe.do_normalize, bool):
        raise ValueError(f"do_normalize must be true or false, got {fe.do_normalize!r}")
    rate = fe.sampling_rate
    if isinstance(rate, bool) or not isinstance(rate, int):
        raise ValueError(f"sampling_rate must be an integer, got {rate!r}")
    return wav2vec2_frontend(rate), {"do_normalize": fe.do_normalize}


# ---------------------------------------------------------------------------------------------------------------------
# Pretrained configurations
# ---------------------------------------------------------------------------------------------------------------------
_PAPER = (
    "A. Baevski, H. Zhou, A. Mohamed, M. Auli. wav2vec 2.0: A Framework for Self-Supervised Learning of Speech "
    "Representations. NeurIPS 2020. arXiv:2006.11477"
)
_SUPERB_PAPER = (
    _PAPER + "; S. Yang et al. SUPERB: Speech processing Universal PERformance Benchmark. Interspeech 2021. "
    "arXiv:2105.01051"
)


def wav2vec2_frontend(sample_rate: int = 16000) -> FrontendCfg:
    """Raw samples (identity frontend); the per-clip normalisation lives in the model (``do_normalize``)."""
    return FrontendCfg(kind="waveform", sample_rate=sample_rate)


# Parameter counts of the full-size models built here (transformers 5.x Wav2Vec2Model, masked_spec_embed included).
_BASE_PARAMS = 94_371_712  # Wav2Vec2Model base, no head
_SUPERB_KS_PARAMS = 94_571_673  # + layer_weights (13) + projector 768->256 + classifier 256->12 (models.md: 94.57 M)

default_cfgs: list[PretrainedCfg] = [
    PretrainedCfg(
        architecture="wav2vec2_base",
        tag="librispeech",
        frontend=wav2vec2_frontend(),
        num_classes=0,
        task="multiclass",
        label_names=(),
        url=None,
        hf_hub_id="facebook/wav2vec2-base",  # metadata: audiokit downloads from `url` only
        clip_seconds=None,
        classifier="classifier",
        license="Apache-2.0",
        paper=_SUPERB_PAPER,
        source=(
            "https://huggingface.co/facebook/wav2vec2-base (Apache-2.0; self-supervised on LibriSpeech 960 h, no "
            "fine-tuning). No metric: an embedder has no classification result of its own (SUPERB keyword spotting "
            "with this frozen upstream reaches 0.9623, see wav2vec2_base.superb_ks)."
        ),
        metrics={},
        num_params=_BASE_PARAMS,
        model_kwargs={"classifier_proj_size": None, "use_weighted_layer_sum": False, "do_normalize": True},
        notes=(
            "Pure embedder (num_classes 0): the time-mean of the last hidden state (768); embed(layer=k) gives other "
            "layers. Weights are not downloaded automatically: pass checkpoint_path= a Hugging Face directory "
            "(config.json + model.safetensors/pytorch_model.bin) of facebook/wav2vec2-base; its quantizer/project_* "
            "pre-training heads are dropped. Hub id: facebook/wav2vec2-base. do_normalize=True follows its "
            "preprocessor_config (not re-checked here)."
        ),
    ),
    PretrainedCfg(
        architecture="wav2vec2_base",
        tag="superb_ks",
        frontend=wav2vec2_frontend(),
        num_classes=12,
        task="multiclass",
        label_set="superb_ks12",
        url=None,
        hf_hub_id="superb/wav2vec2-base-superb-ks",  # metadata: audiokit downloads from `url` only
        clip_seconds=1.0,
        classifier="classifier",
        license="Apache-2.0",
        paper=_SUPERB_PAPER,
        source=(
            "https://huggingface.co/superb/wav2vec2-base-superb-ks (Apache-2.0; port of S3PRL's SUPERB keyword-"
            "spotting head on facebook/wav2vec2-base). Metric: test accuracy of the transformers port from the model "
            "card (S3PRL: 0.9623). Labels: S3PRL downstream/speech_commands CLASSES order."
        ),
        metrics={"speechcommands_v1_12_accuracy": 0.9643},
        num_params=_SUPERB_KS_PARAMS,
        model_kwargs={"classifier_proj_size": 256, "use_weighted_layer_sum": True, "do_normalize": True},
        notes=(
            "SUPERB KS: Speech Commands v1.0, ten words + _unknown_ + _silence_. Weights are not downloaded "
            "automatically: pass checkpoint_path= the Hugging Face model directory (hub id "
            "superb/wav2vec2-base-superb-ks). The label order is S3PRL's; the hub config.json id2label and the "
            "use_weighted_layer_sum / do_normalize flags were not checked against the real files (no hub access here)."
        ),
    ),
]
register_pretrained_cfgs(default_cfgs)


# ---------------------------------------------------------------------------------------------------------------------
# Builders
# ---------------------------------------------------------------------------------------------------------------------
@register_model
def wav2vec2_base(pretrained_cfg: PretrainedCfg, **kwargs: Any) -> Wav2Vec2Classifier:
    """Wav2Vec2-Base: 7-conv feature encoder (stride 320, 400-sample receptive field) + 12 post-LN transformer layers
    (768 wide, 12 heads); 49 frames per second at 16 kHz."""
    return Wav2Vec2Classifier(pretrained_cfg, **kwargs)
