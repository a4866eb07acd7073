"""CLAP, contrastive language-audio pretraining (Wu, Chen et al., ICASSP 2023), for zero-shot tagging.

The network is transformers' ``ClapModel`` (an HTS-AT audio encoder and a RoBERTa text encoder, each with a projection
into one shared space); it is not re-implemented here. What audiokit adds is the classifier: the label texts given at
run time, each put into the pipeline's sentence (``"This is a sound of {}."``), go through the text tower once, and
their normalised embeddings, times the audio logit scale, become the final layer over the normalised audio embedding::

    waveform -> ``frontend`` (ClapFeatureExtractor's padding and log-mel, float64) -> ``clap.audio_model`` (pooled)
    -> ``clap.audio_projection`` -> L2 normalisation (the embedding, ``num_features`` = projection_dim)
    -> ``head`` (text embeddings x exp(logit_scale_a): transformers' ``logits_per_audio``) -> softmax

so ``forward`` returns ``logits_per_audio`` and ``predict_proba`` the softmax over the labels, as transformers'
``zero-shot-audio-classification`` pipeline reports them; ``embed`` is ``ClapModel.get_audio_features``.
:meth:`CLAP.set_labels` makes the head (``create_model(..., label_names=[...])`` and ``audiokit tag --labels`` call it).
The text tower is frozen: it takes no part in the audio forward.

Input length. The extractor brings every clip to ``max_length_s`` (10 s): a shorter clip is repeated and
zero-padded (``padding="repeatpad"``; ``"repeat"`` and ``"pad"`` as the extractor does them); for a longer one it would
take a random crop (``truncation="rand_trunc"``) or random chunks (``"fusion"``). audiokit never feeds a longer clip:
``tag``/``embed`` cut long files into windows of ``max_length_s`` (``max_samples``), each of which is then exactly the
pipeline's input for that stretch of audio, and a longer waveform given to ``forward`` directly is cut to its first
``max_length_s`` (deterministic, said once in the log). With ``truncation="fusion"`` (the fused checkpoints) a clip
of at most ``max_length_s`` becomes four copies of its log-mel, and ``is_longer`` is set, as the extractor sets it for
a clip on its own (the pipeline's case); so every clip is scored as the pipeline scores it alone, whatever it is
batched with.

A transformers directory (``ClapModel.save_pretrained`` with the ``ClapProcessor``'s files: ``preprocessor_config.json``
or ``processor_config.json``, and the tokenizer's) loads with ``create_model("local-dir:<dir>")``,
``create_model("hf-hub:laion/clap-htsat-unfused")`` or ``create_model("clap_htsat_unfused.laion",
checkpoint_path=<dir>)``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._pretrained import MAX_NUM_CLASSES, FrontendCfg, PretrainedCfg
from .._registry import register_model, register_pretrained_cfgs
from ._base import AudioClassifier

__all__ = [
    "CLAP",
    "DEFAULT_HYPOTHESIS_TEMPLATE",
    "ClapFrontend",
    "ClapTextHead",
    "frontend_from_transformers",
    "kwargs_from_transformers_dir",
    "model_kwargs_from_transformers",
]

_logger = logging.getLogger(__name__)

# transformers' zero-shot-audio-classification pipeline puts every candidate label into this sentence.
DEFAULT_HYPOTHESIS_TEMPLATE = "This is a sound of {}."
TRUNCATIONS = ("rand_trunc", "fusion")
PADDINGS = ("repeatpad", "repeat", "pad")
_FUSION_COPIES = 4  # the extractor stacks the log-mel of a short clip four times for the fusion encoder
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "merges.txt")


# ---------------------------------------------------------------------------------------------------------------------
# Frontend
# ---------------------------------------------------------------------------------------------------------------------
class ClapFrontend(nn.Module):
    """Waveform ``(B, T)`` -> ClapFeatureExtractor's log-mel ``(B, 1, n_mels, frames)``, float32.

    The clip is first brought to ``max_samples`` by the extractor's ``padding`` rule (longer input: its first
    ``max_samples``). Then, as the extractor does it in numpy float64: a periodic Hann STFT of ``n_fft`` every
    ``hop_length`` samples, centred with reflect padding, power, the extractor's own mel filters (transformers'
    ``mel_filter_bank``: Slaney scale and area normalisation for ``rand_trunc``, HTK without normalisation for
    ``fusion``), ``10 log10(max(x, 1e-10))``. Computing in float64 keeps the quiet bands, where float32 round-off of
    the loud ones would otherwise show; the extractor's ``top_db`` is unused by it, and so here. Devices without
    float64 (MPS) compute in float32.
    """

    def __init__(self, cfg: FrontendCfg, max_samples: int, padding: str):
        super().__init__()
        from transformers.audio_utils import mel_filter_bank

        self.cfg = cfg
        self.max_samples = max_samples
        self.padding = padding
        self._warned_long = False
        with torch.device("cpu"):  # values are needed even when the model is sized on the meta device
            window = torch.hann_window(cfg.n_fft, periodic=True, dtype=torch.float64)
            self.register_buffer("window", window, persistent=False)
            filters = mel_filter_bank(
                num_frequency_bins=cfg.n_freqs,
                num_mel_filters=cfg.n_mels,
                min_frequency=cfg.f_min,
                max_frequency=cfg.f_max if cfg.f_max is not None else cfg.sample_rate / 2,
                sampling_rate=cfg.sample_rate,
                norm=cfg.mel_norm,
                mel_scale=cfg.mel_scale,
            )
            self.register_buffer("mel_fb", torch.from_numpy(filters), persistent=False)  # (n_freqs, n_mels)

    @property
    def sample_rate(self) -> int:
        return self.cfg.sample_rate

    def fit_length(self, waveform: torch.Tensor) -> torch.Tensor:
        """``(B, T)`` -> ``(B, max_samples)`` by the extractor's padding rule (every clip of a batch has length T)."""
        n, target = waveform.shape[-1], self.max_samples
        if n > target:
            if not self._warned_long:
                _logger.warning(
                    "input of %d samples is longer than CLAP's %d (%g s); using its first %g s (audiokit.tag and "
                    "embed cut long files into windows instead)",
                    n,
                    target,
                    target / self.cfg.sample_rate,
                    target / self.cfg.sample_rate,
                )
                self._warned_long = True
            return waveform[:, :target]
        if n == target:
            return waveform
        repeats = target // n
        if self.padding == "repeat":
            waveform = waveform.repeat(1, repeats + 1)[:, :target]
        elif self.padding == "repeatpad":
            waveform = waveform.repeat(1, repeats)
        return F.pad(waveform, (0, target - waveform.shape[-1]))

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        dtype = torch.float32 if waveform.device.type == "mps" else torch.float64
        with torch.autocast(device_type=waveform.device.type, enabled=False):
            x = self.fit_length(waveform.to(dtype))
            spec = torch.stft(
                x,
                n_fft=cfg.n_fft,
                hop_length=cfg.hop_length,
                window=self.window.to(dtype),
                center=True,
                pad_mode="reflect",
                return_complex=True,
            )
            power = spec.abs() ** 2  # (B, n_freqs, frames)
            mel = torch.matmul(self.mel_fb.to(dtype).T, power)  # (B, n_mels, frames)
            logmel = 10.0 * torch.log10(torch.clamp(mel, min=cfg.amin))
        return logmel.float()[:, None]

    def extra_repr(self) -> str:
        c = self.cfg
        return (
            f"sr={c.sample_rate}, n_fft={c.n_fft}, hop={c.hop_length}, mels={c.n_mels} ({c.mel_scale}, "
            f"{math.floor(c.f_min)}-{math.floor(c.f_max or c.sample_rate / 2)} Hz), dB, {self.padding} to "
            f"{self.max_samples} samples, float64"
        )


def clap_frontend(
    sample_rate: int = 48_000,
    n_fft: int = 1024,
    hop_length: int = 480,
    n_mels: int = 64,
    f_min: float = 50.0,
    f_max: float = 14_000.0,
    truncation: str = "rand_trunc",
) -> FrontendCfg:
    """The extractor's numbers as a FrontendCfg (the filters' scale follows the truncation mode, as there)."""
    fusion = truncation == "fusion"
    return FrontendCfg(
        kind="logmel",
        sample_rate=sample_rate,
        n_fft=n_fft,
        hop_length=hop_length,
        n_mels=n_mels,
        f_min=f_min,
        f_max=f_max,
        window="hann",
        center=True,
        pad_mode="reflect",
        mel_scale="htk" if fusion else "slaney",
        mel_norm=None if fusion else "slaney",
        log="db",
        amin=1e-10,
    )


# ---------------------------------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------------------------------
class ClapTextHead(nn.Module):
    """``(B, D)`` normalised audio embeddings -> ``(B, N)`` logits ``embedding @ text_embeds.T * logit_scale``.

    The buffers are persistent, so a model with its labels set round-trips through ``save_pretrained``.
    """

    def __init__(self, num_labels: int, dim: int):
        super().__init__()
        self.register_buffer("text_embeds", torch.zeros(num_labels, dim))
        self.register_buffer("logit_scale", torch.ones(()))

    @property
    def out_features(self) -> int:
        return self.text_embeds.shape[0]

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        # The order of transformers' logits_per_audio: the similarity first, then the scale.
        return torch.matmul(embedding, self.text_embeds.t()) * self.logit_scale


class CLAP(AudioClassifier):
    """transformers' ``ClapModel`` behind the audiokit contract, its classifier made from label texts.

    Keys: ``clap.*`` (the ClapModel's own names), ``head.*`` (``text_embeds`` and ``logit_scale`` once labels are set;
    a Linear after ``reset_classifier``).
    """

    def __init__(
        self,
        pretrained_cfg: PretrainedCfg,
        audio_config: dict[str, Any] | None = None,
        text_config: dict[str, Any] | None = None,
        projection_dim: int = 512,
        projection_hidden_act: str = "relu",
        logit_scale_init_value: float = 1 / 0.07,
        truncation: str = "rand_trunc",
        padding: str = "repeatpad",
        max_length_s: float = 10,
        tokenizer_dir: str | None = None,
        text_head: bool = False,
    ):
        super().__init__(pretrained_cfg)
        from transformers import ClapConfig, ClapModel

        if truncation not in TRUNCATIONS:
            raise ValueError(f"truncation must be one of {TRUNCATIONS}, got {truncation!r}")
        if padding not in PADDINGS:
            raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")
        fe = pretrained_cfg.frontend
        max_samples = max_length_s * fe.sample_rate
        if not (isinstance(max_length_s, (int, float)) and max_samples >= 1 and float(max_samples).is_integer()):
            raise ValueError(f"max_length_s {max_length_s!r} must give a whole number of samples at {fe.sample_rate}")
        self.config = ClapConfig(
            audio_config=audio_config,
            text_config=text_config,
            projection_dim=projection_dim,
            projection_hidden_act=projection_hidden_act,
            logit_scale_init_value=logit_scale_init_value,
        )
        if fe.n_mels != self.config.audio_config.num_mel_bins:
            raise ValueError(
                f"the frontend's {fe.n_mels} mel bands are not the audio encoder's num_mel_bins "
                f"{self.config.audio_config.num_mel_bins}"
            )
        self.truncation = truncation
        self.tokenizer_dir = tokenizer_dir
        self._tokenizer: Any = None
        self.frontend = ClapFrontend(fe, int(max_samples), padding)
        self.clap = ClapModel(self.config)
        # The text tower only makes the classifier (set_labels); frozen, optimisers and gradient checks see what the
        # audio forward uses.
        for part in (self.clap.text_model, self.clap.text_projection):
            part.requires_grad_(False)
        self.clap.logit_scale_t.requires_grad_(False)
        self.num_features = projection_dim
        n = pretrained_cfg.num_classes
        if n == 0:
            self.head: nn.Module = nn.Identity()
        elif text_head:
            self.head = ClapTextHead(n, projection_dim)
        else:
            self.head = nn.Linear(projection_dim, n)

    # -- input length ----------------------------------------------------------------------------------------------
    @property
    def min_samples(self) -> int:
        return 1  # any clip is brought to max_samples by repetition before the spectrogram

    @property
    def max_samples(self) -> int:
        return self.frontend.max_samples

    # -- the contract ----------------------------------------------------------------------------------------------
    def audio_inputs(self, waveform: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, T)`` waveform -> the extractor's ``input_features`` ``(B, 1 or 4, frames, n_mels)`` and
        ``is_longer`` ``(B, 1)``, as the extractor gives them for each clip on its own."""
        mel = self.frontend(waveform).transpose(-1, -2)
        fusion = self.truncation == "fusion"
        if fusion:
            mel = mel.expand(-1, _FUSION_COPIES, -1, -1).contiguous()
        is_longer = torch.full((mel.shape[0], 1), fusion, dtype=torch.bool, device=mel.device)
        return mel, is_longer

    def forward_features(self, waveform: torch.Tensor) -> torch.Tensor:
        """``(B, T)`` waveform -> the audio encoder's pooled output ``(B, audio hidden_size)``."""
        features, is_longer = self.audio_inputs(waveform)
        return self.clap.audio_model(input_features=features, is_longer=is_longer).pooler_output

    def embedding_points(self) -> dict[str, int]:
        """``pooled``: the audio encoder's ``pooler_output``, before the audio projection and the L2 normalisation
        that make ``pre_logits`` (the joint audio-text space)."""
        return {"pooled": int(self.clap.audio_model.audio_encoder.num_features)}

    def forward_embedding(self, waveform: torch.Tensor, layer: int | str) -> torch.Tensor:
        return self.forward_features(waveform)  # "pooled", the one point besides pre_logits

    @torch.no_grad()
    def forward_frame_embeddings(self, waveform: torch.Tensor, layer: int | None = None) -> torch.Tensor:
        """The audio encoder's token map per time step ``(B, frames, audio hidden_size)``: transformers regroups
        HTS-AT's folded grid so that its last axis is time; each step is averaged over the frequency rows, so the mean
        over all steps is ``pooler_output``. The extractor repeats a short clip up to ``max_samples``; only the steps
        that start inside the clip itself are given."""
        if layer is not None:
            raise ValueError(
                f"{self.pretrained_cfg.name}'s frame embeddings are its last token map's (layer must be None)"
            )
        waveform = self.prepare_waveform(waveform)
        if waveform.shape[-1] > self.max_samples:
            raise ValueError(
                f"{self.pretrained_cfg.name} takes at most {self.max_samples} samples per forward; "
                "embed longer audio in windows (audiokit embed --frame-level does)"
            )
        features, is_longer = self.audio_inputs(waveform)
        tokens = self.clap.audio_model(input_features=features, is_longer=is_longer).last_hidden_state
        frames = tokens.mean(dim=2).transpose(1, 2)  # (B, C, rows, steps) -> (B, steps, C)
        inside = math.ceil(waveform.shape[-1] / self.sample_rate / self.frame_hop_seconds - 1e-9)
        return frames[:, : max(1, min(frames.shape[1], inside))]

    @property
    def frame_hop_seconds(self) -> float:
        """``max_samples`` over the time steps of the token map: ``spec_size / patch stride / 2 ** (stages - 1)``
        steps per frequency group, times ``spec_size / n_mels`` groups (32 for 10 s: 0.3125 s)."""
        audio = self.config.audio_config
        stride = audio.patch_stride[1] if isinstance(audio.patch_stride, (list, tuple)) else audio.patch_stride
        freq_ratio = audio.spec_size // audio.num_mel_bins  # as transformers' ClapAudioEncoder sets it
        steps = audio.spec_size // stride // 2 ** (len(audio.depths) - 1) * freq_ratio
        return self.max_samples / self.sample_rate / steps

    def forward_pre_logits(self, features: torch.Tensor) -> torch.Tensor:
        """Pooled audio output -> the projected, L2-normalised embedding ``(B, projection_dim)``."""
        return F.normalize(self.clap.audio_projection(features), dim=-1)

    def checkpoint_filter_fn(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return checkpoint_filter_fn(state_dict)

    # -- labels ----------------------------------------------------------------------------------------------------
    def tokenizer(self) -> Any:
        """The tokenizer of the directory the model came from (loaded on first use)."""
        if self._tokenizer is None:
            if self.tokenizer_dir is None:
                raise ValueError(
                    f"{self.pretrained_cfg.name} has no tokenizer, so label texts cannot be encoded: load CLAP from "
                    "its transformers directory (hf-hub:laion/clap-htsat-unfused, local-dir:<dir>, or "
                    "checkpoint_path=<dir>)"
                )
            self._tokenizer = load_tokenizer(Path(self.tokenizer_dir))
        return self._tokenizer

    @torch.no_grad()
    def text_embeddings(self, texts: Sequence[str]) -> torch.Tensor:
        """Normalised text embeddings ``(N, projection_dim)`` of ``texts``, tokenized together with padding as the
        pipeline does (``ClapModel.get_text_features``; the text tower runs in eval mode whatever the model's)."""
        tokens = self.tokenizer()(list(texts), return_tensors="pt", padding=True)
        limit = self.config.text_config.max_position_embeddings - self.config.text_config.pad_token_id - 1
        lengths = tokens["attention_mask"].sum(-1)
        if int(lengths.max()) > limit:
            longest = texts[int(lengths.argmax())]
            raise ValueError(
                f"label text {longest[:60]!r} is {int(lengths.max())} tokens; the text encoder takes {limit}"
            )
        device = self.clap.logit_scale_a.device
        text_model = self.clap.text_model
        was_training = text_model.training
        text_model.eval()
        try:
            out = self.clap.get_text_features(
                input_ids=tokens["input_ids"].to(device), attention_mask=tokens["attention_mask"].to(device)
            )
        finally:
            text_model.train(was_training)
        return out.pooler_output

    def set_labels(self, labels: Sequence[str], hypothesis_template: str = DEFAULT_HYPOTHESIS_TEMPLATE) -> None:
        """Make the classifier from label texts: ``forward`` then gives transformers' ``logits_per_audio`` for
        ``[hypothesis_template.format(label) for label in labels]`` and ``predict_proba`` their softmax."""
        labels = check_labels(labels)
        if not isinstance(hypothesis_template, str) or "{}" not in hypothesis_template:
            raise ValueError(
                f"hypothesis_template must be a string with a '{{}}' for the label, got {hypothesis_template!r}"
            )
        embeds = self.text_embeddings([hypothesis_template.format(label) for label in labels])
        head = ClapTextHead(len(labels), self.num_features).to(embeds.device)
        head.text_embeds.copy_(embeds)
        head.logit_scale.copy_(self.clap.logit_scale_a.detach().exp())
        self.set_submodule(self.pretrained_cfg.classifier, head)
        self.head_cfg = None
        self.output_activation = "softmax"
        self._label_names = labels
        self.pretrained_cfg = self.pretrained_cfg.replace(
            num_classes=len(labels), label_names=labels, label_set=None, task="multiclass"
        )
        self.model_kwargs["text_head"] = True

    def reset_classifier(self, num_classes: int, label_names=None, head=None) -> None:
        super().reset_classifier(num_classes, label_names, head)
        self.model_kwargs["text_head"] = False

    def save_pretrained(self, directory: str | Path) -> Path:
        """audiokit's ``config.json`` + ``model.safetensors`` (the labels' head included), and the tokenizer in
        ``tokenizer/``, which the saved config then names (by absolute path: set_labels on the reloaded model needs
        it there). A subdirectory, because transformers' tokenizer loading reads any ``config.json`` beside it."""
        directory = Path(directory)
        if self.tokenizer_dir is not None:
            target = directory / "tokenizer"
            self.tokenizer().save_pretrained(str(target))
            self.tokenizer_dir = self.model_kwargs["tokenizer_dir"] = str(target.resolve())
        return super().save_pretrained(directory)


def check_labels(labels: Any) -> tuple[str, ...]:
    """Label texts as a tuple: a non-empty sequence of distinct, non-blank strings."""
    if isinstance(labels, str) or not isinstance(labels, Sequence):
        raise TypeError(f"labels must be a list of strings, got {type(labels).__name__}")
    if not labels:
        raise ValueError("the label list is empty: give at least one label text")
    if len(labels) > MAX_NUM_CLASSES:
        raise ValueError(f"{len(labels)} labels given; at most {MAX_NUM_CLASSES}")
    seen: set[str] = set()
    for i, label in enumerate(labels):
        if not isinstance(label, str):
            raise TypeError(f"label {i} is a {type(label).__name__}, not a string")
        if not label.strip():
            raise ValueError(f"label {i} is blank")
        if label in seen:
            raise ValueError(f"label {label!r} is given twice")
        seen.add(label)
    return tuple(labels)


def load_tokenizer(directory: Path) -> Any:
    """The tokenizer saved in ``directory`` (``AutoTokenizer``; code shipped with a model is never run)."""
    from transformers import AutoTokenizer

    if not (directory / "tokenizer.json").is_file() and not all(
        (directory / name).is_file() for name in TOKENIZER_FILES[1:]
    ):
        raise FileNotFoundError(
            f"{directory}: no tokenizer files (tokenizer.json, or vocab.json and merges.txt); CLAP needs its tokenizer "
            "to turn label texts into its classifier: save the ClapProcessor (or its tokenizer) into the directory"
        )
    try:
        return AutoTokenizer.from_pretrained(str(directory), trust_remote_code=False, local_files_only=True)
    except Exception as err:
        raise ValueError(
            f"{directory}: cannot load the tokenizer ({type(err).__name__}: {' '.join(str(err).split())})"
        ) from None


# ---------------------------------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------------------------------
_HF_PREFIXES = ("text_model.", "text_projection.", "audio_model.", "audio_projection.", "logit_scale_")


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A ``ClapModel`` state dict (its file names are its in-memory names) -> ours (``clap.`` prefix); ours passes."""
    return {("clap." + k if k.startswith(_HF_PREFIXES) else k): v for k, v in state_dict.items()}


# ---------------------------------------------------------------------------------------------------------------------
# Transformers directories
# ---------------------------------------------------------------------------------------------------------------------
HF_MODEL_TYPE = "clap"
# ClapModel has no classification head: the label texts make one.
HF_ARCHITECTURES = {"ClapModel": False}
HF_HEAD_PREFIX = "classifier."  # no ClapModel key has it: a config saved without architectures is read as headless
HF_EXTRACTOR = "ClapFeatureExtractor"
HF_DEFAULT_ARCHITECTURE = "clap_htsat_unfused"
# Sub-config fields that ClapConfig sets from its own top-level values, or that only describe the file.
_DERIVED = {"projection_dim", "projection_hidden_act", "transformers_version", "model_type", "dtype", "torch_dtype"}


def _sub_config(config: Any) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in config.to_diff_dict().items() if k not in _DERIVED}


def model_kwargs_from_transformers(config: Any, with_head: bool) -> dict[str, Any]:
    """A ``ClapConfig`` (parsed and checked by transformers) -> this family's architecture arguments: the two towers'
    sub-configs as transformers writes them (fields at their default left out) and the shared projection."""
    return {
        "audio_config": _sub_config(config.audio_config),
        "text_config": _sub_config(config.text_config),
        "projection_dim": config.projection_dim,
        "projection_hidden_act": config.projection_hidden_act,
        "logit_scale_init_value": config.logit_scale_init_value,
    }


def frontend_from_transformers(extractor: dict[str, Any], config: Any) -> tuple[FrontendCfg, dict[str, Any]]:
    """A ``ClapFeatureExtractor``'s saved settings -> the frontend, and the padding/truncation arguments."""
    from transformers import ClapFeatureExtractor

    fe = ClapFeatureExtractor.from_dict(dict(extractor))
    rate = fe.sampling_rate
    if isinstance(rate, bool) or not isinstance(rate, int):
        raise ValueError(f"sampling_rate must be an integer, got {rate!r}")
    if fe.feature_size != config.audio_config.num_mel_bins:
        raise ValueError(
            f"feature_size {fe.feature_size!r} differs from config.json's audio num_mel_bins "
            f"{config.audio_config.num_mel_bins!r}, which the audio encoder was built for"
        )
    if fe.truncation not in TRUNCATIONS:
        raise ValueError(f"truncation {fe.truncation!r} is none of {TRUNCATIONS}")
    if fe.padding not in PADDINGS:
        raise ValueError(f"padding {fe.padding!r} is none of {PADDINGS}")
    if fe.truncation == "fusion" and not config.audio_config.enable_fusion:
        # transformers' encoder would fail on the four stacked log-mels with a shape error at the first clip.
        raise ValueError("truncation 'fusion' needs an audio encoder with enable_fusion (this one has none)")
    frontend = clap_frontend(
        sample_rate=rate,
        n_fft=fe.fft_window_size,
        hop_length=fe.hop_length,
        n_mels=fe.feature_size,
        f_min=float(fe.frequency_min),
        f_max=float(fe.frequency_max),
        truncation=fe.truncation,
    )
    return frontend, {"truncation": fe.truncation, "padding": fe.padding, "max_length_s": fe.max_length_s}


def kwargs_from_transformers_dir(directory: Path) -> dict[str, Any]:
    """What CLAP needs from the directory besides config and extractor: its tokenizer (checked here, so a directory
    without one is refused when it is loaded rather than when labels are first set)."""
    load_tokenizer(directory)
    return {"tokenizer_dir": str(directory.resolve())}


# ---------------------------------------------------------------------------------------------------------------------
# Pretrained configurations
# ---------------------------------------------------------------------------------------------------------------------
_PAPER = (
    "Y. Wu, K. Chen, T. Zhang, Y. Hui, T. Berg-Kirkpatrick, S. Dubnov. Large-scale Contrastive Language-Audio "
    "Pretraining with Feature Fusion and Keyword-to-Caption Augmentation. ICASSP 2023. arXiv:2211.06687"
)

default_cfgs: list[PretrainedCfg] = [
    PretrainedCfg(
        architecture="clap_htsat_unfused",
        tag="laion",
        frontend=clap_frontend(),
        num_classes=0,
        task="multiclass",
        label_names=(),  # the labels are texts given at run time
        url=None,
        hf_hub_id="laion/clap-htsat-unfused",
        clip_seconds=10.0,
        classifier="head",
        license="Apache-2.0",
        paper=_PAPER,
        source="https://huggingface.co/laion/clap-htsat-unfused (transformers port of LAION-AI/CLAP)",
        num_params=153_492_890,
        notes=(
            "zero-shot tagger: the labels are texts given at run time (--labels, labels=, set_labels). Weights, "
            "extractor and tokenizer come from the Hub repository: create_model('hf-hub:laion/clap-htsat-unfused') "
            "or checkpoint_path= with its directory."
        ),
    ),
]
register_pretrained_cfgs(default_cfgs)


@register_model
def clap_htsat_unfused(pretrained_cfg: PretrainedCfg, **kwargs: Any) -> CLAP:
    """CLAP with the HTS-AT audio encoder (Swin-T, 4 stages) and RoBERTa-base text encoder, without feature fusion:
    transformers' ClapConfig defaults."""
    return CLAP(pretrained_cfg, **kwargs)
