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
- our own ``save_pretrained`` layout (passed through);
- ``torchaudio.models.Wav2Vec2Model`` state dicts (the files behind ``torchaudio.pipelines``' Wav2Vec2, HuBERT and
  WavLM bundles, :data:`TORCHAUDIO_BUNDLES`), renamed by :func:`torchaudio_to_transformers`; the CTC head of an ASR
  bundle (``aux.*``) is reported and not used, and the bundle's waveform convention applies (see
  :meth:`Wav2Vec2Classifier.check_checkpoint`).

A transformers directory (``save_pretrained`` of one of :data:`HF_ARCHITECTURES`, with its
``preprocessor_config.json``) is built from its own files by :func:`model_kwargs_from_transformers` and
:func:`frontend_from_transformers`: any conv layout, group or layer feature-encoder norm, post- or pre-LN
(``do_stable_layer_norm``) transformer, weighted layer sum and projector size, and the extractor's ``do_normalize``.
HuBERT and WavLM (``hubert.py``, ``wavlm.py``) reuse this class with their own transformers backbone.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from .._pretrained import FrontendCfg, PretrainedCfg
from .._registry import list_models, register_model, register_pretrained_cfgs
from .._weights import CheckpointMismatchError
from ._base import AudioClassifier

__all__ = [
    "TORCHAUDIO_BUNDLES",
    "Wav2Vec2Classifier",
    "checkpoint_filter_fn",
    "frontend_from_transformers",
    "is_torchaudio_state_dict",
    "model_kwargs_from_transformers",
    "normalize_waveform",
    "torchaudio_to_transformers",
    "wav2vec2_frontend",
]

_logger = logging.getLogger(__name__)

NORM_EPS = 1e-7  # variance floor of Wav2Vec2FeatureExtractor's zero-mean/unit-variance step
# torchaudio's bundles that normalise do it with layer_norm over the waveform, whose variance floor is LayerNorm's.
TORCHAUDIO_NORM_EPS = 1e-5


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
        normalize_eps: float = NORM_EPS,
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
        self.normalize_eps = normalize_eps
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
        """Frontend (identity) and, with ``do_normalize``, the per-clip zero-mean/unit-variance step (variance floor
        ``normalize_eps``: 1e-7 as transformers' extractor, 1e-5 as torchaudio's bundles)."""
        x = self.frontend(waveform)
        return normalize_waveform(x, self.normalize_eps) if self.do_normalize else x

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

    # -- embedding points ------------------------------------------------------------------------------------------
    def embedding_blocks(self) -> dict[int, int]:
        """transformers' ``hidden_states``: 0 the transformer's input, k the output of layer k; each averaged over
        time (``embed(layer=k)``), or per frame (``embed_frames(layer=k)``)."""
        return dict.fromkeys(range(self.num_layers + 1), self.config.hidden_size)

    def embedding_points(self) -> dict[str, int]:
        """``pooled``: the frame features averaged over time before the projector (the weighted layer sum where the
        model has one); the same vector as ``pre_logits`` when there is no projector."""
        return {"pooled": self.config.hidden_size}

    def forward_embedding(self, waveform: torch.Tensor, layer: int | str) -> torch.Tensor:
        if layer == "pooled":
            return self.forward_features(waveform).mean(dim=1)
        return self.hidden_states(waveform)[int(layer)].mean(dim=1)

    @torch.no_grad()
    def forward_frame_embeddings(self, waveform: torch.Tensor, layer: int | None = None) -> torch.Tensor:
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
        out = checkpoint_filter_fn(
            state_dict, parametrized_pos_conv=uses_parametrizations, model_prefix=self.state_dict_prefix
        )
        embed = getattr(self.backbone, "masked_spec_embed", None)
        if embed is not None and "backbone.masked_spec_embed" not in out and is_torchaudio_state_dict(state_dict):
            # torchaudio's encoder has no mask embedding (only its pre-training model masks); ours is never applied
            # (apply_spec_augment=False), so it keeps its own value rather than failing the strict load.
            out["backbone.masked_spec_embed"] = embed.detach()
        return out

    def check_checkpoint(self, checkpoint: Any, source: str) -> None:
        """A torchaudio bundle file: its CTC head is reported as not used, and its waveform convention applies.

        torchaudio's bundles normalise the waveform exactly when the feature encoder is layer-normalised (the
        LV-60K, XLS-R and large HuBERT/WavLM models; layer_norm over the waveform, variance floor 1e-5) and pass it
        unchanged otherwise. Under a name registered for these bundles (``*.torchaudio*``) that convention is
        already the registered one, and ``do_normalize=`` given by the caller stands. Under another name (one
        registered for Hugging Face's conversion of the same weights, whose extractor may normalise) the file's
        convention replaces it, with a warning when that changes ``do_normalize``.
        """
        if not isinstance(checkpoint, Mapping):
            return  # the loader reports what is not a state dict
        state = checkpoint
        for wrapper in ("state_dict", "model", "model_state_dict"):
            if isinstance(state.get(wrapper), Mapping):
                state = state[wrapper]
                break
        if not is_torchaudio_state_dict(state):
            return
        state = _strip_wrapper(state)
        layer_norm_file = any(k.startswith(_TORCHAUDIO_LAYER_NORM_CONV) for k in state)
        if layer_norm_file != (self.config.feat_extract_norm == "layer"):
            kind = "layer" if layer_norm_file else "group"
            raise CheckpointMismatchError(
                f"{source}: a torchaudio bundle file with a {kind}-normalised feature encoder, not the "
                f"{self.config.feat_extract_norm}-normalised one of {self.pretrained_cfg.architecture}; torchaudio's "
                f"{'large LV-60K, XLS-R and large HuBERT/WavLM' if layer_norm_file else 'base and LibriSpeech large'} "
                f"bundles have it (audiokit's names: {', '.join(_bundle_architectures(layer_norm_file))})"
            )
        head = {k: tuple(v.shape) for k, v in state.items() if k.startswith(_TORCHAUDIO_CTC_HEAD)}
        if head:
            _logger.warning(
                "%s: %s not used: the CTC (speech recognition) head of a torchaudio ASR bundle; audiokit builds the "
                "encoder, an embedder (num_classes=N puts a new classification head on it)",
                source,
                ", ".join(f"{k} {shape}" for k, shape in head.items()),
            )
        if _is_torchaudio_cfg(self.pretrained_cfg):
            return
        normalise = self.config.feat_extract_norm == "layer"
        if self.do_normalize != normalise:
            names = list_models(f"{self.pretrained_cfg.architecture}.torchaudio*")
            _logger.warning(
                "%s is a torchaudio bundle file: the waveform is %s, as torchaudio's bundles of this architecture do "
                "(%s registers do_normalize=%s for the Hugging Face conversion); to choose, load it as %s with "
                "do_normalize=",
                source,
                "normalised" if normalise else "not normalised",
                self.pretrained_cfg.name,
                self.do_normalize,
                names[0] if names else f"a {self.pretrained_cfg.architecture}.torchaudio* name",
            )
        self.do_normalize = normalise
        self.normalize_eps = TORCHAUDIO_NORM_EPS
        # save_pretrained records what the model now computes.
        self.model_kwargs.update(do_normalize=normalise, normalize_eps=TORCHAUDIO_NORM_EPS)


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


# torchaudio.models.Wav2Vec2Model (and its HuBERT and WavLM variants) nests the transformer one level deeper than
# transformers and keeps the feature projection inside the encoder; its ASR bundles add a CTC head ``aux``, and the
# bundles that normalise their input wrap the model (``model.``) when built by ``bundle.get_model()``.
_TORCHAUDIO_TRANSFORMER = "encoder.transformer."
_TORCHAUDIO_PROJECTION = "encoder.feature_projection."
_TORCHAUDIO_CTC_HEAD = "aux."
_TORCHAUDIO_WRAPPER = "model."
_TORCHAUDIO_IN_PROJ = ".attention.attention.in_proj_"  # WavLM: q, k and v stacked in one nn.MultiheadAttention
_TORCHAUDIO_OUT_PROJ = ".attention.attention.out_proj."
# The first convolution is normalised in both layouts; the second only in the layer-normalised one.
_TORCHAUDIO_LAYER_NORM_CONV = "feature_extractor.conv_layers.1.layer_norm."


def _strip_wrapper(state: Mapping[str, Any]) -> Mapping[str, Any]:
    if state and all(k.startswith(_TORCHAUDIO_WRAPPER) for k in state):
        return {k[len(_TORCHAUDIO_WRAPPER) :]: v for k, v in state.items()}
    return state


def is_torchaudio_state_dict(state: Mapping[str, Any]) -> bool:
    """Whether ``state`` is in ``torchaudio.models.Wav2Vec2Model``'s layout (its transformer layers sit under
    ``encoder.transformer.``; transformers' directly under ``encoder.``)."""
    return any(k.startswith(_TORCHAUDIO_TRANSFORMER) for k in _strip_wrapper(state))


def torchaudio_to_transformers(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torchaudio Wav2Vec2 / HuBERT / WavLM keys -> those of transformers' ``Wav2Vec2Model`` / ``HubertModel`` /
    ``WavLMModel`` (no prefix). Pure.

    The CTC head ``aux.*`` is left out (the model's ``check_checkpoint`` reports it); the positional convolution's
    weight norm keeps the naming it came with (``weight_g/v`` or ``parametrizations.weight.original0/1``) for
    :func:`checkpoint_filter_fn` to map; WavLM's stacked ``in_proj`` is split into ``q_proj``, ``k_proj``,
    ``v_proj`` in that order (``nn.MultiheadAttention``'s).
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in _strip_wrapper(state).items():
        if key.startswith(_TORCHAUDIO_CTC_HEAD):
            continue
        if key.startswith(_TORCHAUDIO_PROJECTION):
            key = key[len("encoder.") :]
        elif key.startswith(_TORCHAUDIO_TRANSFORMER):
            key = "encoder." + key[len(_TORCHAUDIO_TRANSFORMER) :]
        if _TORCHAUDIO_IN_PROJ in key:
            stem, kind = key.split(_TORCHAUDIO_IN_PROJ, 1)
            for name, part in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0)):
                out[f"{stem}.attention.{name}.{kind}"] = part
            continue
        out[key.replace(_TORCHAUDIO_OUT_PROJ, ".attention.out_proj.")] = value
    return out


def checkpoint_filter_fn(
    state_dict: dict[str, torch.Tensor], parametrized_pos_conv: bool = True, model_prefix: str = "wav2vec2."
) -> dict[str, torch.Tensor]:
    """Hugging Face Wav2Vec2 keys (any of the layouts in the module docstring), torchaudio's, or ours -> ours. Pure.

    ``parametrized_pos_conv`` says which weight-norm names the model in memory uses for the positional convolution
    (``parametrizations.weight.original0/1`` with current torch, else ``weight_g/v``); ``model_prefix`` is the
    encoder's prefix in transformers' task models. Keys that match nothing are kept, for the strict loader to report.
    """
    state = torchaudio_to_transformers(state_dict) if is_torchaudio_state_dict(state_dict) else dict(state_dict)
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
            "preprocessor_config (not re-checked here). torchaudio's file of the same weights "
            "(wav2vec2_fairseq_base_ls960.pth, wav2vec2_base.torchaudio) loads too, and runs as torchaudio runs it: "
            "without normalisation."
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

# ---------------------------------------------------------------------------------------------------------------------
# torchaudio bundles (torchaudio.pipelines): one registered name per bundle, under the architecture its _params build
# ---------------------------------------------------------------------------------------------------------------------
TORCHAUDIO_URL = "https://download.pytorch.org/torchaudio/models/"
_FAIRSEQ_W2V = "https://github.com/pytorch/fairseq/blob/ce6c9eeae163ac04b79539c78e74f292f29eaa18/examples/wav2vec"
_FAIRSEQ_HUBERT = "https://github.com/pytorch/fairseq/blob/ce6c9eeae163ac04b79539c78e74f292f29eaa18/examples/hubert"
_XLSR = (
    "https://github.com/facebookresearch/fairseq/tree/30c912b73c0f88d41171879b2f03226a171004ef/examples/wav2vec/xlsr"
)
_VOXPOPULI = "https://github.com/facebookresearch/voxpopuli/tree/160e4d7915bad9f99b2c35b1d3833e51fd30abf2"
_WAVLM = "https://github.com/microsoft/unilm/tree/65f15af2a307ebb64cfb25adf54375b002e6fe8d/wavlm"
_LS960 = "LibriSpeech 960 h"
_LL60K = "Libri-Light 60k h"
_XLSR53_DATA = "56k h of MLS, CommonVoice and BABEL (53 languages)"
_XLSR128_DATA = "436k h of MLS, CommonVoice, VoxLingua107, BABEL and VoxPopuli (128 languages)"
_VP10K = "VoxPopuli 10k h (23 languages)"
_WAVLM_PLUS_DATA = "Libri-Light 60k h, GigaSpeech 10k h and VoxPopuli 24k h"


@dataclasses.dataclass(frozen=True)
class TorchaudioBundle:
    """One of ``torchaudio.pipelines``' Wav2Vec2-family bundles: where its file is and what it was trained on."""

    bundle: str  # the torchaudio.pipelines name
    name: str  # the audiokit registry name (architecture.tag)
    filename: str  # under TORCHAUDIO_URL
    pretraining: str
    fine_tuning: str | None  # the CTC (ASR) fine-tuning data, None for a pre-trained-only bundle
    source: str
    license: str = "MIT"

    @property
    def url(self) -> str:
        return TORCHAUDIO_URL + self.filename


def _bundles(*rows: tuple[Any, ...]) -> dict[str, TorchaudioBundle]:
    return {row[0]: TorchaudioBundle(*row) for row in rows}


# Facts from torchaudio 2.11's pipelines/_wav2vec2/impl.py (file, _params, _normalize_waveform, docstrings). No hash
# of these files is published (torchaudio downloads them without a check).
TORCHAUDIO_BUNDLES: dict[str, TorchaudioBundle] = _bundles(
    ("WAV2VEC2_BASE", "wav2vec2_base.torchaudio", "wav2vec2_fairseq_base_ls960.pth", _LS960, None, _FAIRSEQ_W2V),
    ("WAV2VEC2_ASR_BASE_10M", "wav2vec2_base.torchaudio_asr_10m", "wav2vec2_fairseq_base_ls960_asr_ll10m.pth",
     _LS960, "Libri-Light 10 min", _FAIRSEQ_W2V),
    ("WAV2VEC2_ASR_BASE_100H", "wav2vec2_base.torchaudio_asr_100h", "wav2vec2_fairseq_base_ls960_asr_ls100.pth",
     _LS960, "LibriSpeech train-clean-100", _FAIRSEQ_W2V),
    ("WAV2VEC2_ASR_BASE_960H", "wav2vec2_base.torchaudio_asr_960h", "wav2vec2_fairseq_base_ls960_asr_ls960.pth",
     _LS960, _LS960, _FAIRSEQ_W2V),
    ("WAV2VEC2_LARGE", "wav2vec2_large.torchaudio", "wav2vec2_fairseq_large_ls960.pth", _LS960, None, _FAIRSEQ_W2V),
    ("WAV2VEC2_ASR_LARGE_10M", "wav2vec2_large.torchaudio_asr_10m", "wav2vec2_fairseq_large_ls960_asr_ll10m.pth",
     _LS960, "Libri-Light 10 min", _FAIRSEQ_W2V),
    ("WAV2VEC2_ASR_LARGE_100H", "wav2vec2_large.torchaudio_asr_100h", "wav2vec2_fairseq_large_ls960_asr_ls100.pth",
     _LS960, "LibriSpeech train-clean-100", _FAIRSEQ_W2V),
    ("WAV2VEC2_ASR_LARGE_960H", "wav2vec2_large.torchaudio_asr_960h", "wav2vec2_fairseq_large_ls960_asr_ls960.pth",
     _LS960, _LS960, _FAIRSEQ_W2V),
    ("WAV2VEC2_LARGE_LV60K", "wav2vec2_large_lv60k.torchaudio", "wav2vec2_fairseq_large_lv60k.pth", _LL60K, None,
     _FAIRSEQ_W2V),
    ("WAV2VEC2_ASR_LARGE_LV60K_10M", "wav2vec2_large_lv60k.torchaudio_asr_10m",
     "wav2vec2_fairseq_large_lv60k_asr_ll10m.pth", _LL60K, "Libri-Light 10 min", _FAIRSEQ_W2V),
    ("WAV2VEC2_ASR_LARGE_LV60K_100H", "wav2vec2_large_lv60k.torchaudio_asr_100h",
     "wav2vec2_fairseq_large_lv60k_asr_ls100.pth", _LL60K, "LibriSpeech train-clean-100", _FAIRSEQ_W2V),
    ("WAV2VEC2_ASR_LARGE_LV60K_960H", "wav2vec2_large_lv60k.torchaudio_asr_960h",
     "wav2vec2_fairseq_large_lv60k_asr_ls960.pth", _LL60K, _LS960, _FAIRSEQ_W2V),
    ("WAV2VEC2_XLSR53", "wav2vec2_large_lv60k.torchaudio_xlsr53", "wav2vec2_fairseq_large_xlsr53.pth", _XLSR53_DATA,
     None, _FAIRSEQ_W2V),
    ("WAV2VEC2_XLSR_300M", "wav2vec2_large_lv60k.torchaudio_xlsr_300m", "wav2vec2_xlsr_300m.pth", _XLSR128_DATA,
     None, _XLSR),
    ("WAV2VEC2_XLSR_1B", "wav2vec2_xlsr_1b.torchaudio", "wav2vec2_xlsr_1b.pth", _XLSR128_DATA, None, _XLSR),
    ("WAV2VEC2_XLSR_2B", "wav2vec2_xlsr_2b.torchaudio", "wav2vec2_xlsr_2b.pth", _XLSR128_DATA, None, _XLSR),
    *[
        (f"VOXPOPULI_ASR_BASE_10K_{lang.upper()}", f"wav2vec2_base.torchaudio_voxpopuli_asr_{lang}",
         f"wav2vec2_voxpopuli_base_10k_asr_{lang}.pt", _VP10K, f"VoxPopuli {lang} ({hours} h)", _VOXPOPULI,
         "CC-BY-NC-4.0")
        for lang, hours in (("de", 282), ("en", 543), ("es", 166), ("fr", 211), ("it", 91))
    ],
    ("HUBERT_BASE", "hubert_base.torchaudio", "hubert_fairseq_base_ls960.pth", _LS960, None, _FAIRSEQ_HUBERT),
    ("HUBERT_LARGE", "hubert_large.torchaudio", "hubert_fairseq_large_ll60k.pth", _LL60K, None, _FAIRSEQ_HUBERT),
    ("HUBERT_XLARGE", "hubert_xlarge.torchaudio", "hubert_fairseq_xlarge_ll60k.pth", _LL60K, None, _FAIRSEQ_HUBERT),
    ("HUBERT_ASR_LARGE", "hubert_large.torchaudio_asr_960h", "hubert_fairseq_large_ll60k_asr_ls960.pth", _LL60K,
     _LS960, _FAIRSEQ_HUBERT),
    ("HUBERT_ASR_XLARGE", "hubert_xlarge.torchaudio_asr_960h", "hubert_fairseq_xlarge_ll60k_asr_ls960.pth", _LL60K,
     _LS960, _FAIRSEQ_HUBERT),
    ("WAVLM_BASE", "wavlm_base.torchaudio", "wavlm_base.pth", _LS960, None, _WAVLM),
    ("WAVLM_BASE_PLUS", "wavlm_base.torchaudio_plus", "wavlm_base_plus.pth", _WAVLM_PLUS_DATA, None, _WAVLM),
    ("WAVLM_LARGE", "wavlm_large.torchaudio", "wavlm_large.pth", _WAVLM_PLUS_DATA, None, _WAVLM),
)  # fmt: skip


def _bundle_architectures(layer_norm: bool) -> list[str]:
    """The architectures of torchaudio's bundles whose feature encoder is (not) layer-normalised, ``*.torchaudio*``."""
    from .._registry import get_pretrained_cfg

    archs = dict.fromkeys(b.name.split(".")[0] for b in TORCHAUDIO_BUNDLES.values())
    return [
        f"{a}.torchaudio*"
        for a in archs
        if get_pretrained_cfg(f"{a}.torchaudio").model_kwargs["do_normalize"] is layer_norm
    ]


def _is_torchaudio_cfg(cfg: PretrainedCfg) -> bool:
    return cfg.tag == "torchaudio" or cfg.tag.startswith("torchaudio_")


def torchaudio_cfgs(
    architecture: str, num_params: int, paper: str, layer_norm_encoder: bool, **model_kwargs: Any
) -> list[PretrainedCfg]:
    """The registered configurations of ``architecture``'s torchaudio bundles.

    ``layer_norm_encoder``: the architecture's feature encoder is layer-normalised, and torchaudio's bundles of it
    normalise the waveform (``_normalize_waveform``), as fairseq trained them; the others take it unchanged.
    """
    cfgs = []
    for b in TORCHAUDIO_BUNDLES.values():
        arch, tag = b.name.split(".")
        if arch != architecture:
            continue
        trained = f"self-supervised on {b.pretraining}" + (
            f", CTC fine-tuned on {b.fine_tuning} (that head is not used)" if b.fine_tuning else ", not fine-tuned"
        )
        cfgs.append(
            PretrainedCfg(
                architecture=architecture,
                tag=tag,
                frontend=wav2vec2_frontend(),
                num_classes=0,
                task="multiclass",
                label_names=(),
                # Not downloaded by audiokit (yet): tests/test_registry.py asks a published result of every
                # downloadable entry, and none is published for these encoders as embedders. The file is b.url.
                url=None,
                sha256=None,
                filename=b.filename,
                clip_seconds=None,
                classifier="classifier",
                license=b.license,
                paper=paper,
                source=f"{b.url} (torchaudio.pipelines.{b.bundle}; {trained}; original: {b.source})",
                metrics={},
                num_params=num_params,
                model_kwargs={
                    "classifier_proj_size": None,
                    "use_weighted_layer_sum": False,
                    "do_normalize": layer_norm_encoder,
                    "normalize_eps": TORCHAUDIO_NORM_EPS,
                    "masked_spec_embed": False,  # torchaudio's encoder has none
                    **model_kwargs,
                },
                notes=(
                    f"Pure embedder (num_classes 0) with torchaudio.pipelines.{b.bundle}'s weights: pass "
                    f"checkpoint_path= the bundle's file {b.filename} ({b.url}; torchaudio keeps it in "
                    "torch.hub's cache, <torch.hub.get_dir()>/checkpoints/). No hash is published. The waveform "
                    + (
                        "is normalised as torchaudio does (per clip here, variance floor 1e-5)"
                        if layer_norm_encoder
                        else "is not normalised, as torchaudio's bundle (do_normalize=True opts in)"
                    )
                    + "; embed_frames() is torchaudio's encoder output (the model's output without the CTC "
                    "head), embed_frames(layer=k) its extract_features(...)[k - 1]"
                    + (
                        " for k < num_layers (the last is taken after the final LayerNorm of the pre-LN encoder)."
                        if model_kwargs.get("do_stable_layer_norm", layer_norm_encoder)
                        else "."
                    )
                ),
            )
        )
    return cfgs


# Parameter counts of the torchaudio bundles' encoders as built here (no masked_spec_embed; transformers 5.x, on the
# meta device), equal to those of torchaudio 2.11's model built from each bundle's _params without its CTC head.
_TA_PARAMS = {
    "wav2vec2_base": 94_370_944,
    "wav2vec2_large": 315_427_968,
    "wav2vec2_large_lv60k": 315_437_696,
    "wav2vec2_xlsr_1b": 962_496_128,
    "wav2vec2_xlsr_2b": 2_159_257_728,
}
_XLSR_PAPER = (
    "A. Conneau, A. Baevski, R. Collobert, A. Mohamed, M. Auli. Unsupervised Cross-lingual Representation Learning "
    "for Speech Recognition. Interspeech 2021. arXiv:2006.13979; A. Babu et al. XLS-R: Self-supervised Cross-lingual "
    "Speech Representation Learning at Scale. Interspeech 2022. arXiv:2111.09296"
)
_VOXPOPULI_PAPER = (
    "C. Wang et al. VoxPopuli: A Large-Scale Multilingual Speech Corpus for Representation Learning, Semi-Supervised "
    "Learning and Interpretation. ACL 2021. arXiv:2101.00390"
)
default_cfgs += [
    cfg.replace(paper=_VOXPOPULI_PAPER) if "voxpopuli" in cfg.tag else cfg
    for cfg in torchaudio_cfgs("wav2vec2_base", _TA_PARAMS["wav2vec2_base"], _PAPER, layer_norm_encoder=False)
]
default_cfgs += torchaudio_cfgs("wav2vec2_large", _TA_PARAMS["wav2vec2_large"], _PAPER, layer_norm_encoder=False)
default_cfgs += [
    cfg.replace(paper=_XLSR_PAPER) if "xlsr" in cfg.tag else cfg
    for cfg in torchaudio_cfgs(
        "wav2vec2_large_lv60k", _TA_PARAMS["wav2vec2_large_lv60k"], _PAPER, layer_norm_encoder=True
    )
]
default_cfgs += torchaudio_cfgs("wav2vec2_xlsr_1b", _TA_PARAMS["wav2vec2_xlsr_1b"], _XLSR_PAPER, True)
default_cfgs += torchaudio_cfgs("wav2vec2_xlsr_2b", _TA_PARAMS["wav2vec2_xlsr_2b"], _XLSR_PAPER, True)
register_pretrained_cfgs(default_cfgs)


# ---------------------------------------------------------------------------------------------------------------------
# Builders
# ---------------------------------------------------------------------------------------------------------------------
@register_model
def wav2vec2_base(pretrained_cfg: PretrainedCfg, **kwargs: Any) -> Wav2Vec2Classifier:
    """Wav2Vec2-Base: 7-conv feature encoder (stride 320, 400-sample receptive field) + 12 post-LN transformer layers
    (768 wide, 12 heads); 49 frames per second at 16 kHz."""
    return Wav2Vec2Classifier(pretrained_cfg, **kwargs)


@register_model
def wav2vec2_large(
    pretrained_cfg: PretrainedCfg,
    hidden_size: int = 1024,
    num_layers: int = 24,
    num_heads: int = 16,
    intermediate_size: int = 4096,
    **kwargs: Any,
) -> Wav2Vec2Classifier:
    """Wav2Vec2-Large (LibriSpeech): the base model's group-normalised feature encoder and post-LN transformer, 24
    layers 1024 wide with 16 heads."""
    return Wav2Vec2Classifier(
        pretrained_cfg,
        hidden_size=hidden_size,
        num_layers=num_layers,
        num_heads=num_heads,
        intermediate_size=intermediate_size,
        **kwargs,
    )


@register_model
def wav2vec2_large_lv60k(
    pretrained_cfg: PretrainedCfg,
    hidden_size: int = 1024,
    num_layers: int = 24,
    num_heads: int = 16,
    intermediate_size: int = 4096,
    conv_bias: bool = True,
    feat_extract_norm: str = "layer",
    do_stable_layer_norm: bool = True,
    **kwargs: Any,
) -> Wav2Vec2Classifier:
    """Wav2Vec2-Large as trained on Libri-Light and by XLSR-53 / XLS-R 300M: layer-normalised feature encoder with
    biased convolutions and a pre-LN transformer (24 layers, 1024 wide, 16 heads)."""
    return Wav2Vec2Classifier(
        pretrained_cfg,
        hidden_size=hidden_size,
        num_layers=num_layers,
        num_heads=num_heads,
        intermediate_size=intermediate_size,
        conv_bias=conv_bias,
        feat_extract_norm=feat_extract_norm,
        do_stable_layer_norm=do_stable_layer_norm,
        **kwargs,
    )


@register_model
def wav2vec2_xlsr_1b(
    pretrained_cfg: PretrainedCfg,
    hidden_size: int = 1280,
    num_layers: int = 48,
    num_heads: int = 16,
    intermediate_size: int = 5120,
    conv_bias: bool = True,
    feat_extract_norm: str = "layer",
    do_stable_layer_norm: bool = True,
    **kwargs: Any,
) -> Wav2Vec2Classifier:
    """XLS-R 1B: wav2vec2_large_lv60k's layout with 48 layers 1280 wide (16 heads)."""
    return Wav2Vec2Classifier(
        pretrained_cfg,
        hidden_size=hidden_size,
        num_layers=num_layers,
        num_heads=num_heads,
        intermediate_size=intermediate_size,
        conv_bias=conv_bias,
        feat_extract_norm=feat_extract_norm,
        do_stable_layer_norm=do_stable_layer_norm,
        **kwargs,
    )


@register_model
def wav2vec2_xlsr_2b(
    pretrained_cfg: PretrainedCfg,
    hidden_size: int = 1920,
    num_layers: int = 48,
    num_heads: int = 16,
    intermediate_size: int = 7680,
    conv_bias: bool = True,
    feat_extract_norm: str = "layer",
    do_stable_layer_norm: bool = True,
    **kwargs: Any,
) -> Wav2Vec2Classifier:
    """XLS-R 2B: wav2vec2_large_lv60k's layout with 48 layers 1920 wide (16 heads)."""
    return Wav2Vec2Classifier(
        pretrained_cfg,
        hidden_size=hidden_size,
        num_layers=num_layers,
        num_heads=num_heads,
        intermediate_size=intermediate_size,
        conv_bias=conv_bias,
        feat_extract_norm=feat_extract_norm,
        do_stable_layer_norm=do_stable_layer_norm,
        **kwargs,
    )
