"""HuBERT (Hsu et al. 2021) on raw 16 kHz audio, with ``transformers.HubertModel`` as the backbone.

HuBERT's network is wav2vec 2.0's encoder (convolutional feature encoder, feature projection, convolutional position
embedding, transformer) trained by masked prediction of cluster targets instead of a contrastive loss over quantized
features, so it has no quantizer. The audiokit side (per-clip normalisation, weighted layer sum, projector, time-mean,
classifier, embeddings per layer and per frame) is :class:`~audiokit.models.wav2vec2.Wav2Vec2Classifier`'s; this
module swaps the backbone and adds HuBERT's two encoder options:

- ``feat_proj_layer_norm``: the LayerNorm over the CNN features before the projection (always there in wav2vec 2.0);
- ``conv_pos_batch_norm``: a BatchNorm before the positional convolution, which then has no weight norm.

Checkpoints: ``HubertForSequenceClassification`` (``hubert.*``, ``projector.*``, ``classifier.*``,
``layer_weights``), bare ``HubertModel`` state dicts and ``HubertForCTC`` ones (``lm_head.*`` dropped, logged), the
positional-convolution weight norm in either naming, our own ``save_pretrained`` layout, and torchaudio's HuBERT
bundle files (``torchaudio.pipelines.HUBERT_*``: torchaudio builds HuBERT as its Wav2Vec2Model, whose feature
projection always has the LayerNorm, ``feat_proj_layer_norm=True``; registered as ``hubert_*.torchaudio*``).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .._pretrained import PretrainedCfg
from .._registry import register_model, register_pretrained_cfgs
from .wav2vec2 import Wav2Vec2Classifier, torchaudio_cfgs, wav2vec2_frontend
from .wav2vec2 import frontend_from_transformers as frontend_from_transformers
from .wav2vec2 import model_kwargs_from_transformers as _wav2vec2_kwargs

__all__ = ["HubertClassifier", "frontend_from_transformers", "model_kwargs_from_transformers"]


# ---------------------------------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------------------------------
class HubertClassifier(Wav2Vec2Classifier):
    """``transformers.HubertModel`` backbone + (optional) weighted layer sum, projector, time-mean, classifier.

    Keys: ``backbone.*`` (the HubertModel's own names), ``layer_weights``, ``projector.*``, ``classifier.*``.
    """

    state_dict_prefix = "hubert."

    def __init__(
        self,
        pretrained_cfg: PretrainedCfg,
        feat_proj_layer_norm: bool = True,
        conv_pos_batch_norm: bool = False,
        **kwargs: Any,
    ):
        # Read by backbone_config during the base class's construction, hence set before it (a plain attribute,
        # which nn.Module allows before its __init__).
        self._hubert_options = {
            "feat_proj_layer_norm": feat_proj_layer_norm,
            "conv_pos_batch_norm": conv_pos_batch_norm,
        }
        super().__init__(pretrained_cfg, **kwargs)

    def backbone_config(self, **options: Any) -> Any:
        from transformers import HubertConfig

        return HubertConfig(**options, **self._hubert_options)

    def backbone_model(self, config: Any) -> nn.Module:
        from transformers import HubertModel

        return HubertModel(config)


# ---------------------------------------------------------------------------------------------------------------------
# Transformers directories (config.json + preprocessor_config.json written by save_pretrained)
# ---------------------------------------------------------------------------------------------------------------------
HF_MODEL_TYPE = "hubert"
HF_ARCHITECTURES = {"HubertForSequenceClassification": True, "HubertModel": False, "HubertForCTC": False}
HF_HEAD_PREFIX = "classifier."
HF_EXTRACTOR = "Wav2Vec2FeatureExtractor"  # HuBERT directories ship wav2vec 2.0's extractor
HF_DEFAULT_ARCHITECTURE = "hubert_base"


def model_kwargs_from_transformers(config: Any, with_head: bool) -> dict[str, Any]:
    """A ``HubertConfig`` -> this family's architecture arguments: wav2vec 2.0's, plus HuBERT's encoder options."""
    return {
        **_wav2vec2_kwargs(config, with_head),
        "feat_proj_layer_norm": config.feat_proj_layer_norm,
        "conv_pos_batch_norm": config.conv_pos_batch_norm,
    }


# ---------------------------------------------------------------------------------------------------------------------
# Pretrained configurations
# ---------------------------------------------------------------------------------------------------------------------
_PAPER = (
    "W.-N. Hsu, B. Bolte, Y.-H. H. Tsai, K. Lakhotia, R. Salakhutdinov, A. Mohamed. HuBERT: Self-Supervised Speech "
    "Representation Learning by Masked Prediction of Hidden Units. IEEE/ACM TASLP 2021. arXiv:2106.07447"
)
# transformers 5.x HubertModel with the base config, masked_spec_embed included: the same layout and count as
# wav2vec 2.0 Base (measured here by building it).
_BASE_PARAMS = 94_371_712

default_cfgs: list[PretrainedCfg] = [
    PretrainedCfg(
        architecture="hubert_base",
        tag="librispeech",
        frontend=wav2vec2_frontend(),
        num_classes=0,
        task="multiclass",
        label_names=(),
        url=None,
        hf_hub_id="facebook/hubert-base-ls960",  # metadata: audiokit downloads from `url` only
        clip_seconds=None,
        classifier="classifier",
        license="Apache-2.0",
        paper=_PAPER,
        source=(
            "https://huggingface.co/facebook/hubert-base-ls960 (Apache-2.0; self-supervised on LibriSpeech 960 h, "
            "no fine-tuning; original: fairseq examples/hubert). No metric: an embedder has no classification "
            "result of its own."
        ),
        metrics={},
        num_params=_BASE_PARAMS,
        model_kwargs={"classifier_proj_size": None, "use_weighted_layer_sum": False, "do_normalize": True},
        notes=(
            "Pure embedder (num_classes 0): the time-mean of the last hidden state (768); embed(layer=k) gives other "
            "layers. Weights are not downloaded automatically: pass checkpoint_path= the Hugging Face directory "
            "(its config.json and preprocessor_config.json decide the architecture and do_normalize; without the "
            "latter do_normalize=True is assumed, not checked against the hub file here). torchaudio's file of the "
            "same weights (hubert_fairseq_base_ls960.pth, hubert_base.torchaudio) loads too, and runs as torchaudio "
            "runs it: without normalisation."
        ),
    ),
]
# Encoders of torchaudio's bundles as built here (no masked_spec_embed), equal to torchaudio 2.11's count for each
# bundle's _params without the CTC head (both measured on the meta device).
_TA_PARAMS = {"hubert_base": 94_370_944, "hubert_large": 315_434_112, "hubert_xlarge": 962_492_544}
default_cfgs += torchaudio_cfgs("hubert_base", _TA_PARAMS["hubert_base"], _PAPER, layer_norm_encoder=False)
default_cfgs += torchaudio_cfgs("hubert_large", _TA_PARAMS["hubert_large"], _PAPER, layer_norm_encoder=True)
default_cfgs += torchaudio_cfgs("hubert_xlarge", _TA_PARAMS["hubert_xlarge"], _PAPER, layer_norm_encoder=True)
register_pretrained_cfgs(default_cfgs)


# ---------------------------------------------------------------------------------------------------------------------
# Builders
# ---------------------------------------------------------------------------------------------------------------------
@register_model
def hubert_base(pretrained_cfg: PretrainedCfg, **kwargs: Any) -> HubertClassifier:
    """HuBERT-Base: wav2vec 2.0 Base's encoder (7 convolutions, stride 320; 12 post-LN layers, 768 wide, 12 heads)."""
    return HubertClassifier(pretrained_cfg, **kwargs)


@register_model
def hubert_large(
    pretrained_cfg: PretrainedCfg,
    hidden_size: int = 1024,
    num_layers: int = 24,
    num_heads: int = 16,
    intermediate_size: int = 4096,
    feat_extract_norm: str = "layer",
    do_stable_layer_norm: bool = True,
    **kwargs: Any,
) -> HubertClassifier:
    """HuBERT-Large: layer-normalised feature encoder (unbiased convolutions) and a pre-LN
    transformer, 24 layers 1024 wide with 16 heads."""
    return HubertClassifier(
        pretrained_cfg,
        hidden_size=hidden_size,
        num_layers=num_layers,
        num_heads=num_heads,
        intermediate_size=intermediate_size,
        feat_extract_norm=feat_extract_norm,
        do_stable_layer_norm=do_stable_layer_norm,
        **kwargs,
    )


@register_model
def hubert_xlarge(
    pretrained_cfg: PretrainedCfg,
    hidden_size: int = 1280,
    num_layers: int = 48,
    num_heads: int = 16,
    intermediate_size: int = 5120,
    feat_extract_norm: str = "layer",
    do_stable_layer_norm: bool = True,
    **kwargs: Any,
) -> HubertClassifier:
    """HuBERT-XLarge: layer-normalised feature encoder (unbiased convolutions) and a pre-LN
    transformer, 48 layers 1280 wide with 16 heads."""
    return HubertClassifier(
        pretrained_cfg,
        hidden_size=hidden_size,
        num_layers=num_layers,
        num_heads=num_heads,
        intermediate_size=intermediate_size,
        feat_extract_norm=feat_extract_norm,
        do_stable_layer_norm=do_stable_layer_norm,
        **kwargs,
    )
