"""Any transformers audio-classification checkpoint audiokit has no native family for (Whisper's encoder,
Data2VecAudio, SEW, SEW-D, UniSpeech, UniSpeech-SAT, Wav2Vec2-BERT, Wav2Vec2-Conformer, ...), behind the
AudioClassifier contract.

The model is transformers' own ``AutoModelForAudioClassification.from_config`` (the config parsed by its config
class; code shipped with a model is never run) and the input is its own feature extractor's, run as transformers'
audio-classification pipeline runs it: numpy waveforms in, the extractor's tensors (``input_values`` or
``input_features``, and ``attention_mask`` where it returns one) to the model. Only the final layer is taken out of
the transformers model, so that ``embed`` (its input: the pooled, projected features), ``reset_classifier`` and
fine-tuning work as for every other family; the transformers model's own ``classifier`` is an identity.

Native families (AST, Wav2Vec2, HuBERT, WavLM) keep their own path: they fold BatchNorm, stream, and run their
preprocessing in torch on the model's device. This adapter is the route for everything else: the extractor runs in
numpy on the host, one batch at a time.

``forward`` also takes a list of 1-D waveforms of different lengths: they are padded as the extractor pads them
(with the attention mask where it returns one), which is how transformers batches clips of different lengths.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from .._pretrained import MAX_N_FFT, MAX_N_MELS, FrontendCfg, PretrainedCfg
from .._registry import register_model
from ._base import AudioClassifier

__all__ = [
    "ARCHITECTURE",
    "TransformersAudioClassifier",
    "checkpoint_filter_fn",
    "generic_model_types",
    "parse_extractor",
    "parse_transformers_config",
]

_logger = logging.getLogger(__name__)

ARCHITECTURE = "transformers_audio"
CLASSIFIER = "classifier"  # the final Linear of every transformers audio-classification model (ASTMLPHead aside)

# Every integer in a config is a size, a count or a token id: transformers' largest audio models stay far below
# this, and a model sized beyond it is never built (some sizes are allocated for real before the weights' shapes
# can be compared, e.g. masked_spec_embed through the legacy torch.Tensor(hidden_size)).
MAX_CONFIG_INT = 1 << 20
# Sample counts an extractor pads or cuts to (Whisper: 30 s at 16 kHz is 480000); 2^26 samples is 256 MB a clip.
MAX_EXTRACTOR_INT = 1 << 26
_FFT_KEYS = ("n_fft", "fft_window_size", "win_length", "window_length")
_MEL_KEYS = ("feature_size", "num_mel_bins", "n_mels")


def generic_model_types(native: Sequence[str] = ()) -> list[str]:
    """transformers ``model_type``s with an audio-classification model, those in ``native`` left out."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING_NAMES

    return sorted(t for t in MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING_NAMES if t not in native)


def _check_ints(value: Any, limit: int, where: str) -> None:
    if isinstance(value, Mapping):
        for k, v in value.items():
            _check_ints(v, limit, f"{where}.{k}" if where else str(k))
    elif isinstance(value, (list, tuple)):
        if len(value) > limit:
            raise ValueError(f"{where} has {len(value)} entries")
        for v in value:
            _check_ints(v, limit, where)
    elif isinstance(value, int) and not isinstance(value, bool) and abs(value) > limit:
        raise ValueError(f"{where}={value} exceeds {limit}")


def parse_transformers_config(config: Mapping[str, Any]) -> Any:
    """A ``config.json`` mapping -> transformers' own config object, for a model_type transformers has an
    audio-classification model for. Code shipped with a model (``auto_map``) is refused, never run."""
    from transformers import CONFIG_MAPPING
    from transformers.models.auto.modeling_auto import MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING_NAMES

    if config.get("auto_map"):
        raise ValueError(
            "asks for code shipped with the model (auto_map); audiokit never runs a directory's code "
            "(trust_remote_code is never enabled)"
        )
    model_type = config.get("model_type")
    if model_type not in MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING_NAMES:
        raise ValueError(
            f"model_type {model_type!r} has no audio-classification model in transformers (those that do: "
            f"{', '.join(generic_model_types())})"
        )
    _check_ints(config, MAX_CONFIG_INT, "")
    return CONFIG_MAPPING[model_type].from_dict(dict(config))


def parse_extractor(extractor: Mapping[str, Any], model_type: str) -> Any:
    """A feature extractor's saved settings -> transformers' extractor object (an audio ``SequenceFeatureExtractor``
    of transformers' own; the model type's default class where the file names none)."""
    from transformers import SequenceFeatureExtractor
    from transformers.models.auto.feature_extraction_auto import (
        FEATURE_EXTRACTOR_MAPPING_NAMES,
        feature_extractor_class_from_name,
    )

    if extractor.get("auto_map"):
        raise ValueError(
            "asks for code shipped with the model (auto_map); audiokit never runs a directory's code "
            "(trust_remote_code is never enabled)"
        )
    name = extractor.get("feature_extractor_type") or FEATURE_EXTRACTOR_MAPPING_NAMES.get(model_type)
    cls = feature_extractor_class_from_name(name) if isinstance(name, str) else None
    if not (isinstance(cls, type) and issubclass(cls, SequenceFeatureExtractor)):
        raise ValueError(f"feature_extractor_type {name!r} is not one of transformers' audio feature extractors")
    _check_ints(extractor, MAX_EXTRACTOR_INT, "")
    for keys, limit in ((_FFT_KEYS, MAX_N_FFT), (_MEL_KEYS, MAX_N_MELS)):
        for key in keys:
            value = extractor.get(key)
            if isinstance(value, int) and not 0 < value <= limit:
                raise ValueError(f"{key}={value} is outside 1..{limit}")
    fe = cls.from_dict(dict(extractor))
    # What the extractor derives from its settings (Whisper's n_samples = chunk_length * sampling_rate) is what it
    # pads every clip to.
    for key, value in vars(fe).items():
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_EXTRACTOR_INT:
            raise ValueError(f"{key}={value} (derived from the settings) exceeds {MAX_EXTRACTOR_INT}")
    rate = fe.sampling_rate
    if isinstance(rate, bool) or not isinstance(rate, int):
        raise ValueError(f"sampling_rate must be an integer, got {rate!r}")
    return fe


def fixed_input_samples(fe: Any) -> int | None:
    """Samples an extractor pads or cuts every clip to (Whisper: ``n_samples``), None where it keeps the length."""
    default = inspect.signature(type(fe).__call__).parameters.get("padding")
    if default is not None and default.default == "max_length" and isinstance(getattr(fe, "n_samples", None), int):
        return fe.n_samples
    return None


def frontend_cfg(fe: Any) -> FrontendCfg:
    """Raw samples at the extractor's rate: the extractor itself runs inside the model."""
    return FrontendCfg(kind="waveform", sample_rate=fe.sampling_rate)


# ---------------------------------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------------------------------
class TransformersAudioClassifier(AudioClassifier):
    """``AutoModelForAudioClassification`` + its feature extractor behind the AudioClassifier contract.

    Keys: ``backbone.*`` (the transformers model's own names, its classifier aside) and ``classifier.*`` (its final
    Linear, ``num_features`` -> ``num_classes``).
    """

    def __init__(
        self,
        pretrained_cfg: PretrainedCfg,
        hf_config: dict[str, Any] | None = None,
        extractor: dict[str, Any] | None = None,
    ):
        super().__init__(pretrained_cfg)
        if not isinstance(hf_config, Mapping) or not isinstance(extractor, Mapping):
            raise ValueError(
                f"{ARCHITECTURE} is built from a transformers directory (create_model('local-dir:DIR') or "
                "'hf-hub:ORG/NAME'): it needs hf_config and extractor"
            )
        from transformers import AutoModelForAudioClassification

        self.config = parse_transformers_config(hf_config)
        self.feature_extractor = parse_extractor(extractor, self.config.model_type)
        if self.feature_extractor.sampling_rate != pretrained_cfg.sample_rate:
            raise ValueError(
                f"the extractor runs at {self.feature_extractor.sampling_rate} Hz, the pretrained cfg says "
                f"{pretrained_cfg.sample_rate} Hz"
            )
        model = AutoModelForAudioClassification.from_config(self.config, dtype=torch.float32)
        head = getattr(model, CLASSIFIER, None)
        if not isinstance(head, nn.Linear):
            raise ValueError(
                f"{type(model).__name__}'s classifier is a {type(head).__name__}, not the Linear layer the generic "
                "path takes out of the model"
            )
        model.classifier = nn.Identity()
        self.backbone = model
        self.num_features = head.in_features
        n = pretrained_cfg.num_classes
        self.classifier: nn.Module = nn.Linear(self.num_features, n) if n > 0 else nn.Identity()
        accepted = inspect.signature(model.forward).parameters
        self._model_inputs = {k for k in accepted if k not in ("labels", "return_dict")}
        pad = inspect.signature(type(self.feature_extractor).__call__).parameters.get("padding")
        self._pads_itself = pad is not None and pad.default not in (False, None, "do_not_pad")

    @property
    def hf_class(self) -> str:
        return type(self.backbone).__name__

    @property
    def min_samples(self) -> int:
        """The convolutional encoder's receptive field where the model has one (wav2vec2-style models), else one
        25 ms analysis frame (the extractors' filterbanks); Whisper's extractor pads to its full input anyway."""
        kernels, strides = getattr(self.config, "conv_kernel", None), getattr(self.config, "conv_stride", None)
        if kernels and strides:
            field, jump = 1, 1
            for kernel, stride in zip(kernels, strides):
                field += (kernel - 1) * jump
                jump *= stride
            return max(field, self.frontend_cfg.min_samples)
        return max(round(0.025 * self.sample_rate), self.frontend_cfg.min_samples)

    @property
    def max_samples(self) -> int | None:
        return fixed_input_samples(self.feature_extractor)

    # -- input -------------------------------------------------------------------------------------------------------
    def prepare_waveform(self, waveform: torch.Tensor | Sequence[torch.Tensor]) -> Any:
        """A ``(B, T)`` tensor as every model takes, or a list of 1-D waveforms of different lengths (padded by the
        extractor, as transformers pads them); each is zero-padded to ``min_samples`` where shorter."""
        if isinstance(waveform, torch.Tensor):
            return super().prepare_waveform(waveform)
        clips = list(waveform)
        if not clips or not all(isinstance(c, torch.Tensor) and c.dim() == 1 for c in clips):
            raise ValueError("expected a (batch, samples) tensor or a non-empty list of 1-D waveform tensors")
        return [super(TransformersAudioClassifier, self).prepare_waveform(c[None])[0] for c in clips]

    def extract(self, waveform: torch.Tensor | Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        """The feature extractor's model inputs for a batch, on the waveform's device, in the model's dtype."""
        clips = list(waveform) if not isinstance(waveform, torch.Tensor) else list(waveform.unbind(0))
        device = clips[0].device
        arrays = [c.detach().to("cpu", torch.float32).numpy() for c in clips]
        options: dict[str, Any] = {}
        if len({a.shape[-1] for a in arrays}) > 1 and not self._pads_itself:
            options["padding"] = True  # to the longest clip; the extractor adds the attention mask if it uses one
        inputs = self.feature_extractor(arrays, sampling_rate=self.sample_rate, return_tensors="pt", **options)
        dtype = next(self.backbone.parameters()).dtype
        out = {}
        for key, value in inputs.items():
            if key in self._model_inputs and isinstance(value, torch.Tensor):
                out[key] = value.to(device=device, dtype=dtype if value.is_floating_point() else value.dtype)
        return out

    # -- the contract ------------------------------------------------------------------------------------------------
    def forward_features(self, waveform: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """Waveforms -> the pooled embedding ``(B, num_features)`` the transformers model feeds its classifier."""
        return self.backbone(**self.extract(waveform)).logits

    def forward_pre_logits(self, features: torch.Tensor) -> torch.Tensor:
        return features

    # -- frames --------------------------------------------------------------------------------------------------------
    @property
    def has_frame_embeddings(self) -> bool:
        """Models with a strided convolutional encoder on the raw samples (the wav2vec2 lineage: Data2VecAudio, SEW,
        UniSpeech, ...) have frames a fixed number of samples apart; filterbank models (Whisper, Wav2Vec2-BERT) pad
        or stack their input in ways this generic path does not read, so they offer none."""
        return bool(getattr(self.config, "conv_stride", None))

    @torch.no_grad()
    def forward_frame_embeddings(self, waveform: torch.Tensor, layer: int | None = None) -> torch.Tensor:
        """The base model's ``last_hidden_state`` ``(B, frames, hidden)``, one frame every ``frame_hop_seconds``."""
        if not self.has_frame_embeddings:
            raise ValueError(f"{self.pretrained_cfg.name} ({self.config.model_type}) has no frame embeddings")
        if layer is not None:
            raise ValueError(
                f"{self.pretrained_cfg.name}'s frame embeddings are its last hidden state (layer must be None)"
            )
        return self.backbone.base_model(**self.extract(self.prepare_waveform(waveform))).last_hidden_state

    @property
    def frame_hop_seconds(self) -> float:
        return math.prod(self.config.conv_stride) / self.sample_rate

    def checkpoint_filter_fn(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return checkpoint_filter_fn(state_dict, set(self.state_dict()))


# ---------------------------------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------------------------------
_WEIGHT_NORM_NAMES = (
    ("weight_g", "parametrizations.weight.original0"),
    ("weight_v", "parametrizations.weight.original1"),
)


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model_keys: set[str]) -> dict[str, torch.Tensor]:
    """A transformers state dict (or ours) -> our names: ``classifier.*`` stays, the rest goes under ``backbone.``.

    Weight-normed convolutions (the positional convolution of SEW, UniSpeech, ...) are stored as ``weight_g`` /
    ``weight_v`` by older files and as ``parametrizations.weight.original0/1`` by newer ones; each is renamed to
    what the model in memory uses. Keys that match nothing are kept, for the strict loader to report.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if not key.startswith(("backbone.", CLASSIFIER + ".")):
            key = "backbone." + key
        if key not in model_keys:
            for old, new in _WEIGHT_NORM_NAMES:
                for src, dst in ((old, new), (new, old)):
                    if key.endswith("." + src) and key[: -len(src)] + dst in model_keys:
                        key = key[: -len(src)] + dst
        out[key] = value
    return out


# ---------------------------------------------------------------------------------------------------------------------
# Builder (no pretrained cfg is registered: every model of this architecture comes from a directory)
# ---------------------------------------------------------------------------------------------------------------------
@register_model
def transformers_audio(pretrained_cfg: PretrainedCfg, **kwargs: Any) -> TransformersAudioClassifier:
    """transformers' ``AutoModelForAudioClassification`` for a model_type audiokit has no native family for, with
    its own feature extractor; built from a transformers directory (``local-dir:``, ``hf-hub:``)."""
    return TransformersAudioClassifier(pretrained_cfg, **kwargs)
