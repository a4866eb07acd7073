"""Export a model, frontend included, as one self-contained graph from the raw waveform to logits.

    ak.export("efficientat_mn10.audioset", "mn10.onnx")                      # registered weights
    ak.export(model, "model.pt2", format="exported-program")                 # any instance, e.g. a fine-tuned one

The graph takes ``waveform``: float32 ``(batch, samples)`` at the model's sample rate, and returns ``logits``
``(batch, num_classes)`` (``embedding`` ``(batch, num_features)`` for a pure embedder). Batch is dynamic; length is
fixed at the model's input for the fixed-input families (AST, PaSST, HTS-AT, SSAST, BC-ResNet: the caller pads shorter
audio with zeros at the end and windows longer audio, as ``audiokit tag`` does; for PaSST, whose eager forward crops
its time embedding to short input instead, padded input gives other scores than the eager model on short clips) and
dynamic up to ``max_seconds`` for the others. The limits are in the ONNX metadata (``min_samples``/``max_samples``).

Formats:

- ``"onnx"``: torch's dynamo-based exporter (``torch.onnx.export(dynamo=True)``; the legacy TorchScript-based one
  cannot trace ``torch.stft``), opset of that exporter. The file's ``metadata_props`` carry the audiokit model name,
  the sample rate, task, labels (a JSON list in output order), the output's name and the input limits, so a deployed
  file describes its own contract. Needs the ``onnx`` extra (``pip install audiokit[onnx]``).
- ``"exported-program"``: ``torch.export`` saved with ``torch.export.save`` (``.pt2``), loadable without audiokit.
- ``"torchscript"``: ``torch.jit.trace``. Tracing records one execution, so shape-dependent Python in a model
  (AST's padding to its fixed frame count, for one) can be frozen into the graph: the trace is checked at other batch
  sizes and lengths and refused with the difference when it does not generalise.
- ``"transformers"``: not a graph but a transformers directory (``config.json``, ``model.safetensors``,
  ``preprocessor_config.json``) for ``AutoModelForAudioClassification`` / ``AutoFeatureExtractor.from_pretrained``
  and ``huggingface-cli upload``: AST, Wav2Vec2, HuBERT and WavLM models, fine-tuned ones included
  (:mod:`audiokit.export_transformers`). ``path`` is a directory; a non-empty one is replaced only with
  ``overwrite=True``.

BatchNorm layers are folded into the convolutions before them in the exported copy (the model given is not
changed), and every export is verified against the eager model at several batch sizes and lengths (ONNX through
onnxruntime when it is installed) before the file is written, atomically.
"""

from __future__ import annotations

import copy
import io
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import __version__
from ._fileio import atomic_write
from .models import AudioClassifier

__all__ = ["EXPORT_FORMATS", "ExportError", "export"]

_logger = logging.getLogger(__name__)

EXPORT_FORMATS = ("onnx", "exported-program", "torchscript", "transformers")
MAX_BATCH = 4096

# Architectures whose graph cannot have a dynamic batch, and why (the export then needs a fixed ``batch_size``).
_STATIC_BATCH_ONLY = {
    "efficientat_dymn": "its dynamic convolutions run as one grouped convolution over the whole batch (groups = "
    "batch x channels), and ONNX's Conv takes the group count as a constant",
}


class ExportError(ValueError):
    """A model that cannot be exported in the requested form, or an export whose outputs differ from eager."""


class _Graph(nn.Module):
    """The exported function: waveform -> logits (or the embedding of a pure embedder)."""

    def __init__(self, model: AudioClassifier):
        super().__init__()
        self.model = model

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return self.model(waveform)


def _static_batch_reason(model: AudioClassifier) -> str | None:
    if model.frontend_cfg.kind == "kaldi_fbank":
        return (
            "its Kaldi filterbank frontend (torchaudio.compliance.kaldi.fbank) computes one clip at a time in a Python "
            "loop over the batch, which the exporter unrolls for the example's batch size"
        )
    architecture = model.pretrained_cfg.architecture
    return next((why for prefix, why in _STATIC_BATCH_ONLY.items() if architecture.startswith(prefix)), None)


def _resolve(model: AudioClassifier | str, checkpoint_path: str | os.PathLike[str] | None) -> AudioClassifier:
    if isinstance(model, AudioClassifier):
        if checkpoint_path is not None:
            raise ValueError("checkpoint_path applies to a model name, not to a model instance")
        return model
    from ._builder import create_model

    return create_model(model, pretrained=checkpoint_path is None, checkpoint_path=checkpoint_path)


def _length_bounds(model: AudioClassifier, max_seconds: float) -> tuple[int, int]:
    if model.max_samples is not None:
        # A fixed-input model (AST, PaSST, HTS-AT, BC-ResNet) is exported at exactly its input: its frontend pads and
        # crops with Python logic on the length that an exporter would fix at the example's value anyway.
        return model.max_samples, model.max_samples
    low = model.min_samples
    high = round(max_seconds * model.sample_rate)
    if high < low:
        raise ExportError(f"max_seconds={max_seconds:g} is below the {low} samples {model.pretrained_cfg.name} needs")
    return low, high


def _probe_inputs(low: int, high: int, sample_rate: int, batch_size: int | None) -> list[torch.Tensor]:
    """Waveforms the export is checked on: two batch sizes (unless fixed), the shortest length and a longer one (3 s,
    or the longest the model takes)."""
    gen = torch.Generator().manual_seed(0)
    lengths = sorted({low, min(high, max(low, 3 * sample_rate))})
    batches = (batch_size,) if batch_size is not None else (1, 3)
    return [0.1 * torch.randn(b, n, generator=gen) for b in batches for n in lengths]


def _compare(run: Callable[[torch.Tensor], torch.Tensor], eager: nn.Module, probes: list[torch.Tensor],
             tolerance: float, what: str) -> float:  # fmt: skip
    worst = 0.0
    for x in probes:
        with torch.no_grad():
            expected = eager(x).float()
            got = torch.as_tensor(run(x)).float()
        if got.shape != expected.shape:
            raise ExportError(
                f"{what} returns {tuple(got.shape)} for input {tuple(x.shape)}, eager {tuple(expected.shape)}"
            )
        diff = (got - expected).abs().max().item()
        scale = max(1.0, expected.abs().max().item())
        if not diff <= tolerance * scale:
            raise ExportError(
                f"{what} differs from the eager model by {diff:.3g} on input {tuple(x.shape)} (tolerance "
                f"{tolerance:g} x {scale:.3g}); the graph does not reproduce the model at that shape"
            )
        worst = max(worst, diff)
    return worst


def _metadata(model: AudioClassifier, low: int, high: int, output: str) -> dict[str, str]:
    cfg = model.pretrained_cfg
    return {
        "audiokit_model": cfg.name,
        "audiokit_version": __version__,
        "sample_rate": str(model.sample_rate),
        "task": cfg.task,
        "output": output,
        "num_outputs": str(model.num_classes or model.num_features),
        "labels": json.dumps(list(model.label_names)),
        "min_samples": str(low),
        "max_samples": str(high),
        "input": f"waveform: float32 (batch, samples) at {model.sample_rate} Hz, mono, in [-1, 1]",
    }


def _onnx_bytes(graph: _Graph, example: torch.Tensor, dynamic: dict[str, Any], output: str,
                metadata: dict[str, str], opset: int | None) -> bytes:  # fmt: skip
    try:
        import onnx  # noqa: F401  (the exporter needs it; a clear message beats its ImportError)
        import onnxscript  # noqa: F401
    except ImportError as err:
        raise ExportError(
            f"ONNX export needs the onnx extra: pip install 'audiokit[onnx]' ({err.name} is missing)"
        ) from None
    kwargs: dict[str, Any] = {"opset_version": opset} if opset is not None else {}
    try:
        program = torch.onnx.export(graph, (example,), input_names=["waveform"], output_names=[output], dynamo=True,
                                    dynamic_shapes=dynamic, verbose=False, **kwargs)  # fmt: skip
    except Exception as err:  # the exporter raises its own, unrelated classes
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ExportError(f"the ONNX exporter failed: {first}") from None
    proto = program.model_proto
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    return proto.SerializeToString()


def _onnx_runner(data: bytes) -> Callable[[torch.Tensor], torch.Tensor] | None:
    try:
        import onnxruntime
    except ImportError:
        return None
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    return lambda x: torch.from_numpy(session.run(None, {"waveform": x.numpy()})[0])


def export(
    model: AudioClassifier | str,
    path: str | os.PathLike[str],
    format: str = "onnx",
    *,
    checkpoint_path: str | os.PathLike[str] | None = None,
    batch_size: int | None = None,
    max_seconds: float = 600.0,
    tolerance: float = 1e-4,
    opset: int | None = None,
    overwrite: bool = False,
) -> Path:
    """Export ``model`` (an instance, or a registered name with ``checkpoint_path`` or downloaded weights) to ``path``.

    ``batch_size`` fixes the batch dimension (needed by DyMN, see ``ExportError``); otherwise it is dynamic. The
    export is run at several batch sizes and lengths and must equal the eager model within ``tolerance`` (relative
    to the outputs' magnitude, at least absolute) before anything is written. Returns the path written.

    ``format="transformers"`` writes a directory, checked by loading it back with transformers and with audiokit;
    ``overwrite`` lets it replace a non-empty directory (files of the other formats are always replaced, atomically);
    ``batch_size``, ``max_seconds`` and ``opset`` do not apply to it.
    """
    if format not in EXPORT_FORMATS:
        raise ValueError(f"format must be one of {EXPORT_FORMATS}, got {format!r}")
    if format == "transformers":
        if batch_size is not None or opset is not None:
            raise ValueError("batch_size and opset apply to the graph formats, not to format='transformers'")
        from .export_transformers import check_destination, export_transformers

        # Before a registered model's weights are fetched.
        check_destination(path, overwrite, inputs=[checkpoint_path] if checkpoint_path is not None else [])
        return export_transformers(_resolve(model, checkpoint_path), path, overwrite=overwrite, tolerance=tolerance)
    if batch_size is not None and not (isinstance(batch_size, int) and 1 <= batch_size <= MAX_BATCH):
        raise ValueError(f"batch_size must be an integer in 1..{MAX_BATCH}, got {batch_size!r}")
    eager = _resolve(model, checkpoint_path)  # the caller's instance keeps its mode: only copies are put in eval
    name = eager.pretrained_cfg.name
    reason = _static_batch_reason(eager)
    if reason is not None and batch_size is None:
        raise ExportError(f"{name} cannot be exported with a dynamic batch: {reason}; pass batch_size=N (--batch-size)")
    from .layers.fusion import fold_batchnorm_

    folded = copy.deepcopy(eager).cpu().eval()
    fold_batchnorm_(folded)
    graph = _Graph(folded).eval()
    low, high = _length_bounds(folded, max_seconds)
    probes = _probe_inputs(low, high, folded.sample_rate, batch_size)
    example = (
        probes[-1] if batch_size is not None else 0.1 * torch.randn(2, min(high, max(low, 2 * folded.sample_rate)))
    )
    batch_dim: Any = torch.export.Dim("batch", min=1, max=MAX_BATCH) if batch_size is None else None
    length_dim: Any = torch.export.Dim("samples", min=low, max=high) if high > low else None
    dynamic = {"waveform": {k: v for k, v in ((0, batch_dim), (1, length_dim)) if v is not None}}
    output = "logits" if eager.num_classes else "embedding"
    eager_cpu = copy.deepcopy(eager).cpu().eval()

    what = f"the {format} export of {name}"
    if format == "onnx":
        data = _onnx_bytes(graph, example, dynamic, output, _metadata(eager, low, high, output), opset)
        runner = _onnx_runner(data)
        if runner is None:
            _logger.warning("onnxruntime is not installed: the ONNX graph of %s was not run to check it", name)
        else:
            worst = _compare(runner, eager_cpu, probes, tolerance, what)
            _logger.info("%s: largest difference from eager %.3g over %d inputs", what, worst, len(probes))
    elif format == "exported-program":
        # torch.export specialises a dimension that could be 1 (a feature map pooled down to one frame) and guards
        # the program against it, so the shortest input it takes is one second (or the model's whole input): shorter
        # audio is zero-padded by the caller, as ``min_samples`` already has it for the eager model.
        low = min(high, max(low, folded.sample_rate))
        length_dim = torch.export.Dim("samples", min=low, max=high) if high > low else None
        dynamic = {"waveform": {k: v for k, v in ((0, batch_dim), (1, length_dim)) if v is not None}}
        probes = _probe_inputs(low, high, folded.sample_rate, batch_size)
        try:
            program = torch.export.export(graph, (example,), dynamic_shapes=dynamic)
        except Exception as err:  # torch.export's errors have no common base class
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ExportError(f"torch.export cannot export {name} with dynamic batch and length: {first}") from None
        buffer = io.BytesIO()
        torch.export.save(program, buffer)
        data = buffer.getvalue()
        reloaded = torch.export.load(io.BytesIO(data)).module()
        worst = _compare(reloaded, eager_cpu, probes, tolerance, what)
        _logger.info("%s: largest difference from eager %.3g over %d inputs", what, worst, len(probes))
    else:
        with torch.no_grad():
            traced = torch.jit.trace(graph, (example,), check_trace=False)
        buffer = io.BytesIO()
        torch.jit.save(traced, buffer)
        data = buffer.getvalue()
        try:
            worst = _compare(traced, eager_cpu, probes, tolerance, what)
        except (ExportError, RuntimeError) as err:
            raise ExportError(
                f"{name} does not trace to TorchScript that works at every shape ({err}); use format='onnx' or "
                "'exported-program', which record the shapes symbolically"
            ) from None
        _logger.info("%s: largest difference from eager %.3g over %d inputs", what, worst, len(probes))
    target = Path(path)
    atomic_write(target, data)
    return target
