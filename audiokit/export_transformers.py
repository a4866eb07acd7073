"""Export to a transformers directory: the way back from audiokit to ``from_pretrained``.

    ak.export(model, "my-ast/", format="transformers")   # config.json, model.safetensors, preprocessor_config.json
    transformers.AutoModelForAudioClassification.from_pretrained("my-ast/")
    transformers.AutoFeatureExtractor.from_pretrained("my-ast/")

This is the inverse of building a model from a transformers directory (``create_model("local-dir:DIR")``, the
families' ``model_kwargs_from_transformers`` / ``frontend_from_transformers``). audiokit's AST and Wav2Vec2-family
models hold transformers' own backbone (``ASTModel``, ``Wav2Vec2Model``, ``HubertModel``, ``WavLMModel``) with its
config object, so the backbone's weights and config carry over as they are; what is mapped here is the head, the labels
and task, and the preprocessing:

- the task and output activation become ``problem_type``: sigmoid (multilabel) -> ``multi_label_classification``,
  softmax -> ``single_label_classification``, identity -> ``regression``; ``id2label``/``label2id`` in output order;
- AST: ``head_norm`` + ``head`` -> ``ASTForAudioClassification``'s ``classifier.layernorm`` + ``classifier.dense``;
  the Kaldi filterbank frontend -> ``ASTFeatureExtractor`` (``num_mel_bins``, ``max_length``, ``mean``, ``std``,
  ``sampling_rate``). transformers has one ``layer_norm_eps`` for the blocks and the head: a model whose head
  LayerNorm has another (the registered AST weights: blocks 1e-6, head 1e-5) is exported with the blocks' and the
  difference this makes is measured and logged (refused above the tolerance);
- Wav2Vec2 / HuBERT / WavLM: ``layer_weights``, ``projector`` and ``classifier`` -> ``*ForSequenceClassification``'s
  (``use_weighted_layer_sum``, ``classifier_proj_size``). transformers' head always has a projector: a classifier
  trained directly on the hidden states (``create_model("wav2vec2_base.librispeech", num_classes=N)``, the usual
  fine-tune) gets an identity projector of ``hidden_size`` outputs, which reproduces it exactly. ``do_normalize`` and
  the sample rate -> ``Wav2Vec2FeatureExtractor``;
- a pure embedder (``num_classes=0``) -> the base class (``ASTModel``, ``Wav2Vec2Model``, ...) where its embedding is
  what that class gives (the token mean; the time-mean of the last hidden state).

Refused with the reason: families transformers has no class for (the CNNs), an MLP ``ClassifierHead``, an output
activation no ``problem_type`` gives, an AST frontend ``ASTFeatureExtractor`` cannot compute, a model whose BatchNorm
layers were folded, embedders whose embedding the base class does not give.

Before anything is published the directory is loaded back twice, by transformers (``AutoFeatureExtractor`` +
``AutoModelForAudioClassification`` on raw waveforms, one clip at a time as its pipeline runs) and by audiokit
(``local-dir:``); both must give the model's logits within the tolerance, and its labels and task. The directory is
written beside its destination and renamed into place; a non-empty destination is replaced only with
``overwrite=True``.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._fileio import OutputPathError, _umask, check_output_directory
from .models import AudioClassifier

__all__ = ["TRANSFORMERS_FAMILIES", "check_destination", "export_transformers", "to_transformers"]

_logger = logging.getLogger(__name__)

# (task, output activation) -> problem_type, the inverse of what the builder reads (transformers' pipeline applies
# sigmoid, softmax and none for these).
_PROBLEM_TYPES = {
    ("multilabel", "sigmoid"): "multi_label_classification",
    ("multiclass", "softmax"): "single_label_classification",
    ("multiclass", "identity"): "regression",
}


class _Refused(ValueError):
    """Raised by a family's mapping; turned into ``ExportError`` naming the model."""


@dataclasses.dataclass
class TransformersPlan:
    """What a transformers directory of one model holds, before anything is written.

    ``hf_class``: the transformers model class; ``config``: its config (labels and problem_type set);
    ``extractor``: the feature extractor; ``state_dict``: the tensors in ``hf_class``'s in-memory names;
    ``pooled``: transformers' output -> what audiokit's ``forward`` returns (logits, or the embedding of an embedder);
    ``approximations``: what transformers cannot hold exactly, said in the log with the difference it makes.
    """

    hf_class: str
    config: Any
    extractor: Any
    state_dict: dict[str, torch.Tensor]
    pooled: Callable[[Any], torch.Tensor]
    approximations: list[str] = dataclasses.field(default_factory=list)


# ---------------------------------------------------------------------------------------------------------------------
# Shared pieces
# ---------------------------------------------------------------------------------------------------------------------
def _final_linear(model: AudioClassifier) -> nn.Linear | None:
    """The model's final layer as one Linear (None for a pure embedder); an MLP head is refused."""
    from .layers import ClassifierHead

    head = model.get_classifier()
    if isinstance(head, ClassifierHead):
        if head.layers:
            raise _Refused(
                f"its classifier is an MLP ClassifierHead (hidden layers {list(head.cfg.hidden)}, "
                f"{head.cfg.activation}); transformers' audio-classification heads end in one Linear layer"
            )
        head = head.fc if head.fc is not None else nn.Identity()
    if isinstance(head, nn.Identity):
        return None
    if not isinstance(head, nn.Linear):
        raise _Refused(f"its classifier is a {type(head).__name__}, not the Linear layer transformers' head has")
    return head


def _with_prefix(prefix: str, module: nn.Module) -> dict[str, torch.Tensor]:
    return {prefix + k: v.detach().cpu() for k, v in module.state_dict().items()}


def _labelled_config(model: AudioClassifier, config: Any) -> Any:
    """A copy of the backbone's transformers config with the model's labels and problem_type."""
    config = copy.deepcopy(config)
    if model.num_classes == 0:
        return config
    key = (model.task, model.output_activation)
    if key not in _PROBLEM_TYPES:
        raise _Refused(
            f"its output activation {model.output_activation!r} for a {model.task} task has no transformers "
            "problem_type (multi_label_classification: sigmoid, single_label_classification: softmax, regression: "
            "none)"
        )
    names = list(model.label_names)
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise _Refused(
            f"label name(s) {duplicated[:5]} occur more than once; transformers' label2id needs one id per name"
        )
    config.id2label = dict(enumerate(names))
    config.label2id = {name: i for i, name in enumerate(names)}
    config.problem_type = _PROBLEM_TYPES[key]
    return config


# ---------------------------------------------------------------------------------------------------------------------
# AST
# ---------------------------------------------------------------------------------------------------------------------
def _ast_extractor(model: AudioClassifier) -> Any:
    from transformers import ASTFeatureExtractor

    from .models.ast import ast_frontend

    fe = model.frontend_cfg
    if fe.kind != "kaldi_fbank" or fe.max_frames is None:
        raise _Refused(f"its frontend is {fe.kind!r}; ASTFeatureExtractor computes Kaldi filterbanks of a fixed length")
    # ASTFeatureExtractor's pipeline, the way audiokit reads one: what it cannot compute is any field that differs.
    mean, std = fe.mean, fe.std / 2  # the extractor divides by 2 * std
    expected = ast_frontend(fe.max_frames, mean, std, sample_rate=fe.sample_rate, n_mels=fe.n_mels).to_dict()
    differing = [
        f"{k} {v!r} (ASTFeatureExtractor: {expected[k]!r})" for k, v in fe.to_dict().items() if v != expected[k]
    ]
    if differing:
        raise _Refused("ASTFeatureExtractor cannot compute its frontend: " + "; ".join(differing))
    plain = mean == 0.0 and fe.std == 1.0
    return ASTFeatureExtractor(
        feature_size=1,
        sampling_rate=fe.sample_rate,
        num_mel_bins=fe.n_mels,
        max_length=fe.max_frames,
        padding_value=0.0,
        do_normalize=not plain,
        mean=0.0 if plain else mean,
        std=0.5 if plain else std,
        return_attention_mask=False,
    )


def _ast_plan(model: AudioClassifier) -> TransformersPlan:
    from .models.ast import AST

    if not isinstance(model, AST):
        raise _Refused(f"it is a {type(model).__name__}, not audiokit's AST")
    extractor = _ast_extractor(model)
    linear = _final_linear(model)
    has_norm = isinstance(model.head_norm, nn.LayerNorm)
    approximations = []
    if linear is None:
        if has_norm:
            raise _Refused(
                "it is an embedder whose embedding passes through head_norm (a LayerNorm); ASTModel's pooled output "
                "is the token mean without it: export it with its classifier, or give it one (reset_classifier)"
            )
        config = _labelled_config(model, model.config)
        return TransformersPlan(
            "ASTModel", config, extractor, _with_prefix("", model.backbone), lambda out: out.pooler_output
        )
    if not has_norm:
        raise _Refused(
            "its classifier has no LayerNorm before it (built from an ASTModel); ASTForAudioClassification's head is "
            "always LayerNorm + Linear"
        )
    config = _labelled_config(model, model.config)
    if model.head_norm.eps != config.layer_norm_eps:
        approximations.append(
            f"transformers has one layer_norm_eps for the blocks and the head: the head LayerNorm's eps "
            f"{model.head_norm.eps:g} becomes the blocks' {config.layer_norm_eps:g}"
        )
    state = _with_prefix("audio_spectrogram_transformer.", model.backbone)
    state |= _with_prefix("classifier.layernorm.", model.head_norm)
    state |= _with_prefix("classifier.dense.", linear)
    return TransformersPlan(
        "ASTForAudioClassification", config, extractor, state, lambda out: out.logits, approximations
    )


# ---------------------------------------------------------------------------------------------------------------------
# Wav2Vec2, HuBERT, WavLM (one head layout)
# ---------------------------------------------------------------------------------------------------------------------
def _wav2vec2_extractor(model: AudioClassifier) -> Any:
    from transformers import Wav2Vec2FeatureExtractor

    from .models.wav2vec2 import NORM_EPS

    eps = getattr(model, "normalize_eps", NORM_EPS)
    if model.do_normalize and eps != NORM_EPS:
        # The floor decides the result for quiet audio (variance near it), so no tolerance can stand for it.
        raise _Refused(
            f"its waveform normalisation floors the variance at {eps:g} (torchaudio's convention); "
            f"Wav2Vec2FeatureExtractor's floor is {NORM_EPS:g}"
        )
    return Wav2Vec2FeatureExtractor(
        feature_size=1,
        sampling_rate=model.sample_rate,
        padding_value=0.0,
        do_normalize=bool(model.do_normalize),
        # transformers' convention: models with a layer-norm feature encoder take padded batches with a mask, the
        # group-norm ones (whose statistics the padding would change) are fed without padding.
        return_attention_mask=model.config.feat_extract_norm == "layer",
    )


def _wav2vec2_plan(model: AudioClassifier) -> TransformersPlan:
    import importlib

    from ._registry import get_model_family
    from .models.wav2vec2 import Wav2Vec2Classifier

    if not isinstance(model, Wav2Vec2Classifier):
        raise _Refused(f"it is a {type(model).__name__}, not audiokit's Wav2Vec2Classifier")
    family = importlib.import_module(f"{__package__}.models.{get_model_family(model.pretrained_cfg.architecture)}")
    sequence_class = next(name for name, with_head in family.HF_ARCHITECTURES.items() if with_head)
    extractor = _wav2vec2_extractor(model)
    linear = _final_linear(model)
    config = _labelled_config(model, model.config)
    if linear is None:
        if model.use_weighted_layer_sum or model.projector is not None:
            parts = [p for p, on in (("a weighted layer sum", model.use_weighted_layer_sum),
                                     ("a projector", model.projector is not None)) if on]  # fmt: skip
            raise _Refused(
                f"it is an embedder with {' and '.join(parts)}; {type(model.backbone).__name__} gives the hidden "
                "states only: export it with its classifier, or give it one (reset_classifier)"
            )
        return TransformersPlan(
            type(model.backbone).__name__,
            config,
            extractor,
            _with_prefix("", model.backbone),
            lambda out: out.last_hidden_state.mean(dim=1),
        )
    hidden = config.hidden_size
    if model.projector is not None:
        projector = model.projector
    else:
        # transformers' head always projects before the time-mean; an identity projection changes no value.
        projector = nn.Linear(hidden, hidden)
        with torch.no_grad():
            projector.weight.copy_(torch.eye(hidden))
            projector.bias.zero_()
    config.classifier_proj_size = projector.out_features
    config.use_weighted_layer_sum = bool(model.use_weighted_layer_sum)
    state = _with_prefix(model.state_dict_prefix, model.backbone)
    state |= _with_prefix("projector.", projector)
    state |= _with_prefix("classifier.", linear)
    if model.use_weighted_layer_sum:
        state["layer_weights"] = model.layer_weights.detach().cpu()
    return TransformersPlan(sequence_class, config, extractor, state, lambda out: out.logits)


# ---------------------------------------------------------------------------------------------------------------------
# The generic adapter (any other AutoModelForAudioClassification, audiokit.models.hf_auto)
# ---------------------------------------------------------------------------------------------------------------------
def _generic_plan(model: AudioClassifier) -> TransformersPlan:
    """The adapter holds transformers' own model (its classifier an identity), config and feature extractor: the
    final Linear goes back into the model's ``classifier``."""
    backbone, extractor = getattr(model, "backbone", None), getattr(model, "feature_extractor", None)
    if backbone is None or extractor is None or not hasattr(model, "config"):
        raise _Refused(f"it is a {type(model).__name__}, not audiokit's adapter around a transformers model")
    linear = _final_linear(model)
    if linear is None:
        raise _Refused(
            f"it is an embedder; {type(backbone).__name__} has a classifier, and its base model's output is not "
            "the pooled, projected embedding audiokit gives: export it with its classifier"
        )
    state = {k: v for k, v in _with_prefix("", backbone).items() if not k.startswith("classifier.")}
    state |= _with_prefix("classifier.", linear)
    return TransformersPlan(
        type(backbone).__name__, _labelled_config(model, model.config), copy.deepcopy(extractor), state,
        lambda out: out.logits,
    )  # fmt: skip


# audiokit family (module in audiokit.models) -> its mapping to transformers. They live here rather than in the family
# files so that the families stay import-light; each is the inverse of that family's *_from_transformers functions.
TRANSFORMERS_FAMILIES: dict[str, Callable[[AudioClassifier], TransformersPlan]] = {
    "ast": _ast_plan,
    "wav2vec2": _wav2vec2_plan,
    "hubert": _wav2vec2_plan,
    "wavlm": _wav2vec2_plan,
    "hf_auto": _generic_plan,
}


def to_transformers(model: AudioClassifier) -> TransformersPlan:
    """The transformers class, config, feature extractor and tensors of ``model``; raises ``ExportError`` naming the
    model and the reason where transformers cannot hold it."""
    from ._registry import get_model_family
    from .export import ExportError
    from .layers.fusion import is_batchnorm_folded

    name = model.pretrained_cfg.name
    architecture = model.pretrained_cfg.architecture
    try:
        family = get_model_family(architecture)
    except KeyError:
        family = None
    if family not in TRANSFORMERS_FAMILIES:
        raise ExportError(
            f"{name} (family {family or architecture}) has no transformers class to export to; format='transformers' "
            f"covers the {', '.join(sorted(TRANSFORMERS_FAMILIES))} families (onnx, exported-program and torchscript "
            "cover every family)"
        )
    if is_batchnorm_folded(model):
        raise ExportError(
            f"{name}: its BatchNorm layers were folded into the convolutions before them; transformers' "
            "architecture has them: export the model before folding"
        )
    try:
        return TRANSFORMERS_FAMILIES[family](model)
    except _Refused as err:
        raise ExportError(f"{name} cannot be exported to transformers: {err}") from None


# ---------------------------------------------------------------------------------------------------------------------
# Destination
# ---------------------------------------------------------------------------------------------------------------------
def check_destination(
    path: str | os.PathLike[str], overwrite: bool = False, inputs: Iterable[str | os.PathLike[str]] = ()
) -> Path:
    """Refuse, before any work, a destination that cannot take the directory (``OutputPathError``): standard output,
    a file, a non-empty directory without ``overwrite``, a place where nothing can be created, and a directory that
    is or holds one of ``inputs`` (replacing it would delete the model being exported). Returns the path the
    directory will be renamed to (symlinks resolved)."""
    text = os.fspath(path)
    if text in ("", "-"):
        raise OutputPathError(f"output {text or '(empty)'!s}: a transformers export is a directory; give its path")
    given = Path(text).expanduser()
    check_output_directory(given, what="output directory")
    target = Path(os.path.realpath(given))
    for item in inputs:
        source = Path(os.path.realpath(Path(item).expanduser()))
        if source == target or target in source.parents:
            raise OutputPathError(f"output directory {given} holds an input ({item}); replacing it would destroy it")
    if target.is_dir() and not overwrite and any(target.iterdir()):
        raise OutputPathError(f"output directory {given} is not empty; pass overwrite=True (--overwrite) to replace it")
    return target


def _publish(staging: Path, target: Path, overwrite: bool) -> None:
    """Rename ``staging`` to ``target``. An empty ``target`` is replaced by the rename itself; a non-empty one (with
    ``overwrite``) is first renamed aside and removed after, so a reader sees the old or the new directory, apart from
    the moment between the two renames."""
    try:
        os.replace(staging, target)  # a new name, or an empty directory: one rename
        return
    except OSError:
        if not (overwrite and target.is_dir()):
            raise
    old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".old"))
    os.replace(target, old / target.name)
    try:
        os.replace(staging, target)
    except BaseException:
        os.replace(old / target.name, target)
        shutil.rmtree(old, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------------------------
# Check and write
# ---------------------------------------------------------------------------------------------------------------------
def _probes(model: AudioClassifier) -> list[torch.Tensor]:
    """Two clips ``(1, T)``: AST's whole input and a third of it (padded by both extractors); for the wav2vec2
    family 50 encoder frames (1 s of the base model) and 18 and a half."""
    if model.max_samples is not None:
        lengths = [model.max_samples, max(model.min_samples, model.max_samples // 3)]
    elif hasattr(model, "receptive_field") and hasattr(model, "hop"):
        field, hop = model.receptive_field, model.hop
        lengths = [field + 49 * hop, field + 17 * hop + hop // 2]
    else:  # the generic adapter: 1 s and 0.37 s
        rate = model.sample_rate
        lengths = [max(model.min_samples, rate), max(model.min_samples, int(0.37 * rate) + 1)]
    gen = torch.Generator().manual_seed(0)
    return [
        scale * torch.randn(1, n, generator=gen) + offset for n, scale, offset in zip(lengths, (0.1, 0.5), (0.0, 0.01))
    ]


def _worst(got: torch.Tensor, expected: torch.Tensor, what: str, tolerance: float) -> float:
    from .export import ExportError

    if got.shape != expected.shape:
        raise ExportError(f"{what} gives shape {tuple(got.shape)}, audiokit {tuple(expected.shape)}")
    diff = (got.float() - expected.float()).abs().max().item()
    scale = max(1.0, expected.abs().max().item())
    if not diff <= tolerance * scale:
        raise ExportError(f"{what} differs from audiokit's model by {diff:.3g} (tolerance {tolerance:g} x {scale:.3g})")
    return diff


def _verify(model: AudioClassifier, directory: Path, plan: TransformersPlan, tolerance: float) -> tuple[float, float]:
    """Load ``directory`` with transformers and with audiokit and compare both with ``model``, on the model's device:
    transformers (extractor on the raw waveform, then its model) on every probe, audiokit's reload on the first (its
    reading of the directory is the same for every input). Returns the largest differences (transformers,
    audiokit)."""
    import transformers

    from ._builder import create_model
    from .export import ExportError

    name = model.pretrained_cfg.name
    auto = transformers.AutoModelForAudioClassification if model.num_classes else transformers.AutoModel
    extractor = transformers.AutoFeatureExtractor.from_pretrained(directory)
    device = next(model.parameters()).device
    reference = auto.from_pretrained(directory).to(device).eval()
    if type(reference).__name__ != plan.hf_class:
        raise ExportError(f"transformers loads the export of {name} as {type(reference).__name__}, not {plan.hf_class}")
    again = create_model(f"local-dir:{directory}").to(device).eval()
    if model.num_classes:
        id2label = reference.config.id2label
        if [id2label[i] for i in range(len(id2label))] != list(model.label_names):
            raise ExportError(f"transformers reads other labels from the export of {name}")
    if (again.label_names, again.task, again.output_activation) != (
        model.label_names, model.task, model.output_activation
    ):  # fmt: skip
        raise ExportError(
            f"audiokit reads the export of {name} back with task {again.task} and output {again.output_activation}, "
            f"not {model.task} and {model.output_activation}, or with other labels"
        )
    worst_hf = worst_ak = 0.0
    with torch.no_grad():
        for i, clip in enumerate(_probes(model)):
            expected = model(clip.to(device))
            inputs = extractor(clip[0].numpy(), sampling_rate=extractor.sampling_rate, return_tensors="pt")
            got = plan.pooled(reference(**{k: v.to(device) for k, v in inputs.items()}))
            worst_hf = max(worst_hf, _worst(got, expected, f"transformers' load of {name}'s export", tolerance))
            if i == 0:
                worst_ak = _worst(again(clip.to(device)), expected, f"audiokit's load of {name}'s export", tolerance)
    return worst_hf, worst_ak


@contextlib.contextmanager
def _without_progress_bars() -> Iterator[None]:
    """transformers' bars for writing and reading the shards of a tiny directory are noise on a CLI's stderr."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def export_transformers(
    model: AudioClassifier,
    path: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    tolerance: float = 1e-4,
) -> Path:
    """Write ``model`` as a transformers directory at ``path`` (config.json, model.safetensors,
    preprocessor_config.json), checked by loading it back before it is renamed into place. Returns the directory's
    path as given (a symlink to a directory is followed: the directory it leads to is replaced)."""
    import transformers

    target = check_destination(path, overwrite)
    plan = to_transformers(model)
    # Checked on the model's own device (a GPU makes the check of a full-size model quick); the caller's instance
    # keeps its dtype and mode.
    eager = copy.deepcopy(model).float().eval()
    hf_model = getattr(transformers, plan.hf_class)(plan.config)
    hf_model.load_state_dict({k: v.float() for k, v in plan.state_dict.items()}, strict=True)
    hf_model.eval()

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    try:
        with _without_progress_bars():
            hf_model.save_pretrained(staging)
            plan.extractor.save_pretrained(staging)
            del hf_model
            worst_hf, worst_ak = _verify(eager, staging, plan, tolerance)
        os.chmod(staging, 0o777 & ~_umask())  # mkdtemp's 0o700 would hide the export from everyone else
        _publish(staging, target, overwrite)
    except BaseException:
        with contextlib.suppress(OSError):
            shutil.rmtree(staging)
        raise
    name = model.pretrained_cfg.name
    for note in plan.approximations:
        _logger.warning("%s: %s (largest logit difference measured: %.3g)", name, note, worst_hf)
    _logger.info(
        "%s -> %s (%s): largest difference from audiokit %.3g through transformers, %.3g through local-dir:",
        name, target, plan.hf_class, worst_hf, worst_ak,
    )  # fmt: skip
    return Path(os.fspath(path)).expanduser()  # as given, like the other formats' paths
