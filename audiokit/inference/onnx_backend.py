"""The onnxruntime backend: the forward stage run by onnxruntime on the model's exported graph (waveform -> logits,
frontend inside), with the other stages (decode, windows, aggregation, sinks) as they are.

The graph is exported once per model and weights and cached under ``<cache>/onnx/`` (``audiokit.export`` checks it
against eager before writing it), named by the model and a digest of its weights, audiokit's and torch's versions.
On a CPU each stream thread has its own session with the stream's share of the cores, as the eager backend's streams
have. Only graphs with a dynamic batch and length run here: a fixed-input model (AST, PaSST, ...) would need its
shorter windows padded as waveforms, which its eager frontend does not do.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from ..models._base import AudioClassifier
from .forward import StreamPool, _BatchOutput, _StreamOutput
from .placement import Placement

_logger = logging.getLogger(__name__)

BACKENDS = ("eager", "onnxruntime")


def _onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise ValueError(
            "--backend onnxruntime needs onnxruntime: pip install -e '.[onnx]' (or pip install onnxruntime onnx "
            "onnxscript)"
        ) from None
    return onnxruntime


def weights_digest(model: AudioClassifier) -> str:
    """sha256 over the model's tensors (names, shapes, dtypes, bytes) and the versions that shape its export."""
    from .. import __version__

    digest = hashlib.sha256(f"audiokit {__version__} torch {torch.__version__}".encode())
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()  # any memory layout (channels-last weights) hashes alike
        digest.update(f"{name} {tuple(t.shape)} {t.dtype}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()[:16]


def cached_graph(model: AudioClassifier) -> Path:
    """The model's ONNX graph from the cache, exported (and checked against eager) on first use."""
    from .._hub import get_cache_dir
    from ..export import export

    if model.max_samples is not None:
        raise ValueError(
            f"{model.pretrained_cfg.name} takes a fixed input ({model.max_samples} samples), so its exported graph has "
            "a fixed length that shorter files and windows do not fill: use --backend eager for it"
        )
    path = get_cache_dir() / "onnx" / f"{model.pretrained_cfg.name}-{weights_digest(model)}.onnx"
    if not path.exists():
        _logger.info("exporting %s to %s for onnxruntime (once; later runs reuse it)", model.pretrained_cfg.name, path)
        path.parent.mkdir(parents=True, exist_ok=True)
        export(model, path, format="onnx")
    return path


class OnnxRuntimeBackend:
    """``mode`` "scores" only: the graph's logits through the model's output activation (on the host, as
    ``predict_proba`` applies it)."""

    def __init__(self, model: AudioClassifier, placement: Placement, *, mode: str):
        if mode != "scores":
            raise ValueError("--backend onnxruntime runs the exported logits graph: tag with it, embed with eager")
        if placement.device.type != "cpu":
            raise ValueError(f"--backend onnxruntime runs on the CPU here (onnxruntime-gpu is not set up), not on "
                             f"{placement.device}")  # fmt: skip
        if model.num_classes == 0:
            raise ValueError(f"{model.pretrained_cfg.name} has no classifier: nothing to tag with onnxruntime")
        self._ort = _onnxruntime()
        self.device = placement.device
        self.placement = placement
        self.model = model.eval()
        self.graph = cached_graph(self.model)
        self._local = threading.local()
        self._pool: StreamPool | None = None

    def _new_session(self) -> Any:
        options = self._ort.SessionOptions()
        options.intra_op_num_threads = self.placement.threads_per_stream
        options.inter_op_num_threads = 1
        return self._ort.InferenceSession(str(self.graph), options, providers=["CPUExecutionProvider"])

    def _session(self) -> Any:
        session = getattr(self._local, "session", None)
        if session is None:  # one per stream thread: a session's threads are its own
            session = self._local.session = self._new_session()
        return session

    def _forward_now(self, batch: torch.Tensor) -> _BatchOutput:
        session = self._session()
        name = session.get_inputs()[0].name
        (logits,) = session.run(None, {name: batch.detach().cpu().float().contiguous().numpy()})
        return _BatchOutput(self.model.activate(torch.from_numpy(logits)))

    def submit(self, batch: torch.Tensor) -> _BatchOutput | _StreamOutput:
        if self._pool is None:
            return self._forward_now(batch)
        return self._pool.submit(self._forward_now, batch)

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        if self.placement.cpu_streams == 1:
            yield
            return
        self._pool = StreamPool(self.placement.cpu_streams)
        try:
            yield
        finally:
            self._pool.close()
            self._pool = None
