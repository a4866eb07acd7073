"""WavLM (Chen et al. 2022) on raw 16 kHz audio, with ``transformers.WavLMModel`` as the backbone.

WavLM keeps wav2vec 2.0's encoder layout (convolutional feature encoder, feature projection, convolutional position
embedding, transformer) and adds a gated relative position bias to self-attention: bucketed relative distances
(``num_buckets``, up to ``max_bucket_distance``) index a learned bias table held by the first layer
(``rel_attn_embed``) and shared by every layer, each layer scaling it by a gate computed from its queries
(``gru_rel_pos_linear``, ``gru_rel_pos_const``). The audiokit side (per-clip normalisation, weighted layer sum,
projector, time-mean, classifier, embeddings per layer and per frame) is
:class:`~audiokit.models.wav2vec2.Wav2Vec2Classifier`'s; this module swaps the backbone and adds the two bias
sizes.

Checkpoints: ``WavLMForSequenceClassification`` (``wavlm.*``, ``projector.*``, ``classifier.*``, ``layer_weights``),
bare ``WavLMModel`` state dicts and ``WavLMForCTC`` ones (``lm_head.*`` dropped, logged), the positional-convolution
weight norm in either naming, our own ``save_pretrained`` layout, and torchaudio's WavLM bundle files
(``torchaudio.pipelines.WAVLM_*``, registered as ``wavlm_*.torchaudio*``; their ``nn.MultiheadAttention`` stacks q, k
and v in one ``in_proj``, split on load).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .._pretrained import PretrainedCfg
from .._registry import register_model, register_pretrained_cfgs
from .wav2vec2 import Wav2Vec2Classifier, torchaudio_cfgs, wav2vec2_frontend
from .wav2vec2 import frontend_from_transformers as frontend_from_transformers
from .wav2vec2 import model_kwargs_from_transformers as _wav2vec2_kwargs

__all__ = ["WavLMClassifier", "frontend_from_transformers", "model_kwargs_from_transformers"]


# ---------------------------------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------------------------------
class WavLMClassifier(Wav2Vec2Classifier):
    """``transformers.WavLMModel`` backbone + (optional) weighted layer sum, projector, time-mean, classifier.

    Keys: ``backbone.*`` (the WavLMModel's own names), ``layer_weights``, ``projector.*``, ``classifier.*``.
    """

    state_dict_prefix = "wavlm."

    def __init__(
        self,
        pretrained_cfg: PretrainedCfg,
        num_buckets: int = 320,
        max_bucket_distance: int = 800,
        **kwargs: Any,
    ):
        # Read by backbone_config during the base class's construction, hence set before it (a plain attribute,
        # which nn.Module allows before its __init__).
        self._wavlm_options = {"num_buckets": num_buckets, "max_bucket_distance": max_bucket_distance}
        super().__init__(pretrained_cfg, **kwargs)

    def backbone_config(self, **options: Any) -> Any:
        from transformers import WavLMConfig

        return WavLMConfig(**options, **self._wavlm_options)

    def backbone_model(self, config: Any) -> nn.Module:
        from transformers import WavLMModel

        return WavLMModel(config)


# ---------------------------------------------------------------------------------------------------------------------
# Transformers directories (config.json + preprocessor_config.json written by save_pretrained)
# ---------------------------------------------------------------------------------------------------------------------
HF_MODEL_TYPE = "wavlm"
HF_ARCHITECTURES = {"WavLMForSequenceClassification": True, "WavLMModel": False, "WavLMForCTC": False}
HF_HEAD_PREFIX = "classifier."
HF_EXTRACTOR = "Wav2Vec2FeatureExtractor"  # WavLM directories ship wav2vec 2.0's extractor
HF_DEFAULT_ARCHITECTURE = "wavlm_base"


def model_kwargs_from_transformers(config: Any, with_head: bool) -> dict[str, Any]:
    """A ``WavLMConfig`` -> this family's architecture arguments: wav2vec 2.0's, plus the relative-bias sizes."""
    return {
        **_wav2vec2_kwargs(config, with_head),
        "num_buckets": config.num_buckets,
        "max_bucket_distance": config.max_bucket_distance,
    }


# ---------------------------------------------------------------------------------------------------------------------
# Pretrained configurations
# ---------------------------------------------------------------------------------------------------------------------
_PAPER = (
    "S. Chen, C. Wang, Z. Chen, Y. Wu, S. Liu, Z. Chen, J. Li, N. Kanda, T. Yoshioka, X. Xiao, J. Wu, L. Zhou, S. Ren, "
    "Y. Qian, Y. Qian, J. Wu, M. Zeng, X. Yu, F. Wei. WavLM: Large-Scale Self-Supervised Pre-Training for Full Stack "
    "Speech Processing. IEEE JSTSP 2022. arXiv:2110.13900"
)
# transformers 5.x WavLMModel with the base config, masked_spec_embed included (measured here by building it).
_BASE_PARAMS = 94_381_936

default_cfgs: list[PretrainedCfg] = [
    PretrainedCfg(
        architecture="wavlm_base",
        tag="librispeech",
        frontend=wav2vec2_frontend(),
        num_classes=0,
        task="multiclass",
        label_names=(),
        url=None,
        hf_hub_id="microsoft/wavlm-base",  # metadata: audiokit downloads from `url` only
        clip_seconds=None,
        classifier="classifier",
        license="MIT",
        paper=_PAPER,
        source=(
            "https://huggingface.co/microsoft/wavlm-base (self-supervised on LibriSpeech 960 h, no fine-tuning; "
            "original: microsoft/unilm wavlm, MIT; the hub card's licence was not checked here). No metric: an "
            "embedder has no classification result of its own."
        ),
        metrics={},
        num_params=_BASE_PARAMS,
        model_kwargs={"classifier_proj_size": None, "use_weighted_layer_sum": False, "do_normalize": True},
        notes=(
            "Pure embedder (num_classes 0): the time-mean of the last hidden state (768); embed(layer=k) gives other "
            "layers. Weights are not downloaded automatically: pass checkpoint_path= the Hugging Face directory "
            "(its config.json and preprocessor_config.json decide the architecture and do_normalize; without the "
            "latter do_normalize=True is assumed, not checked against the hub file here)."
        ),
    ),
]
# Encoders of torchaudio's bundles as built here (no masked_spec_embed), equal to torchaudio 2.11's count for each
# bundle's _params without the CTC head (both measured on the meta device).
_TA_PARAMS = {"wavlm_base": 94_381_168, "wavlm_large": 315_452_096}
default_cfgs += torchaudio_cfgs("wavlm_base", _TA_PARAMS["wavlm_base"], _PAPER, layer_norm_encoder=False)
default_cfgs += torchaudio_cfgs("wavlm_large", _TA_PARAMS["wavlm_large"], _PAPER, layer_norm_encoder=True)
register_pretrained_cfgs(default_cfgs)


# ---------------------------------------------------------------------------------------------------------------------
# Builders
# ---------------------------------------------------------------------------------------------------------------------
@register_model
def wavlm_base(pretrained_cfg: PretrainedCfg, **kwargs: Any) -> WavLMClassifier:
    """WavLM-Base: wav2vec 2.0 Base's encoder (7 convolutions, stride 320; 12 post-LN layers, 768 wide, 12 heads)
    with gated relative position bias (320 buckets, distances up to 800 frames)."""
    return WavLMClassifier(pretrained_cfg, **kwargs)


@register_model
def wavlm_large(
    pretrained_cfg: PretrainedCfg,
    hidden_size: int = 1024,
    num_layers: int = 24,
    num_heads: int = 16,
    intermediate_size: int = 4096,
    feat_extract_norm: str = "layer",
    do_stable_layer_norm: bool = True,
    **kwargs: Any,
) -> WavLMClassifier:
    """WavLM-Large: layer-normalised feature encoder (unbiased convolutions) and a pre-LN
    transformer, 24 layers 1024 wide with 16 heads."""
    return WavLMClassifier(
        pretrained_cfg,
        hidden_size=hidden_size,
        num_layers=num_layers,
        num_heads=num_heads,
        intermediate_size=intermediate_size,
        feat_extract_norm=feat_extract_norm,
        do_stable_layer_norm=do_stable_layer_norm,
        **kwargs,
    )
