"""The forward stage: a backend takes a batch of waveforms and hands back a handle to its outputs.

``Backend`` is the interface (``submit`` a batch, get a ``BatchHandle``; ``session()`` around a run); ``EagerBackend``
runs the PyTorch model, on a GPU asynchronously, on a CPU in side-by-side stream threads. Another backend (an
onnxruntime session) implements the same two methods and leaves the other stages as they are.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Protocol

import numpy as np
import torch

from ..models._base import AudioClassifier
from .placement import Placement

_logger = logging.getLogger(__name__)

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
MODES = ("scores", "embedding", "frames")


class BatchHandle(Protocol):
    """A batch's outputs, possibly still being computed or copied."""

    def ready(self) -> bool:
        """True once ``array()`` would not wait."""

    def array(self) -> np.ndarray:
        """The outputs as float32, one row per window (waits for them; re-raises what the forward raised)."""


class Backend(Protocol):
    device: torch.device

    def submit(self, batch: torch.Tensor) -> BatchHandle:
        """Start computing ``batch`` (B, T) waveforms; may block while the backend is full."""

    def session(self) -> contextlib.AbstractContextManager[None]:
        """Resources held for one run (threads, sessions)."""


class _BatchOutput:
    """A batch's outputs on their way to the host. On CUDA the copy is asynchronous (pinned buffer + event), so the
    main process can prepare the next batch while the GPU still computes this one; ``array()`` waits for it."""

    def __init__(self, out: torch.Tensor):
        self._event = None
        self._array: np.ndarray | None = None
        if out.device.type == "cuda":
            self._host = torch.empty(out.shape, dtype=torch.float32, pin_memory=True)
            self._host.copy_(out, non_blocking=True)
            self._event = torch.cuda.Event()
            self._event.record()
        else:
            self._host = out.float()

    def ready(self) -> bool:
        return self._event is None or self._event.query()

    def array(self) -> np.ndarray:
        if self._array is None:
            if self._event is not None:
                self._event.synchronize()
            self._array = self._host.numpy()
        return self._array


class _StreamOutput:
    """A batch handed to a CPU stream: ready once its thread has computed it; ``array()`` waits for that and re-raises
    what the forward raised."""

    def __init__(self, future: Future[_BatchOutput]):
        self._future = future

    def ready(self) -> bool:
        return self._future.done()

    def array(self) -> np.ndarray:
        return self._future.result().array()


class StreamPool:
    """``streams`` threads computing batches side by side, each thread started by ``initializer(*initargs)``; at most
    one batch per stream in flight, so decoded audio does not pile up while the streams are busy. Shared by the
    backends."""

    def __init__(self, streams: int, initializer: Callable[..., object] | None = None, initargs: tuple = ()):
        self._streams = streams
        self._executor = ThreadPoolExecutor(streams, thread_name_prefix="audiokit-stream", initializer=initializer,
                                            initargs=initargs)  # fmt: skip
        self._in_flight: set[Future[_BatchOutput]] = set()

    def submit(self, forward: Callable[[torch.Tensor], _BatchOutput], batch: torch.Tensor) -> _StreamOutput:
        while len(self._in_flight) >= self._streams:
            _, self._in_flight = wait(self._in_flight, return_when=FIRST_COMPLETED)
        future = self._executor.submit(forward, batch)
        self._in_flight.add(future)
        return _StreamOutput(future)

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


class EagerBackend:
    """The model itself: ``mode`` "scores" (activated logits), "embedding" (pre-logits, of ``layer`` if given) or
    "frames" (per-frame embeddings). ``precision`` autocasts on CUDA; ``compile`` uses torch.compile and falls back to
    eager if compilation fails."""

    def __init__(
        self,
        model: AudioClassifier,
        placement: Placement,
        *,
        mode: str,
        layer: int | None = None,
        precision: str = "fp32",
        channels_last: bool = False,
        compile: bool = False,
    ):
        self.device = placement.device
        self.placement = placement
        self.mode = mode
        self.layer = layer
        self.model = model.eval().to(self.device)
        self.autocast_dtype = PRECISIONS[precision]
        if self.autocast_dtype is not None and self.device.type != "cuda":
            _logger.warning("--precision %s applies on CUDA only; running fp32 on %s", precision, self.device)
            self.autocast_dtype = None
        if channels_last:
            # Converts the parameters in place; activations follow the weights' layout. Results are unchanged.
            self.model = self.model.to(memory_format=torch.channels_last)
        self._compute = self._compute_eager
        if compile:
            self._compute = torch.compile(self._compute_eager, dynamic=None)
        self._compiled = compile
        self._pool: StreamPool | None = None

    def _compute_eager(self, batch: torch.Tensor) -> torch.Tensor:
        if self.mode == "scores":
            return self.model.activate(self.model(batch))
        if self.mode == "frames":
            return self.model.embed_frames(batch, layer=self.layer).embeddings
        return self.model.embed(batch) if self.layer is None else self.model.embed(batch, layer=self.layer)

    def submit(self, batch: torch.Tensor) -> _BatchOutput | _StreamOutput:
        if self._pool is None:
            return self._forward_now(batch)
        return self._pool.submit(self._forward_now, batch)

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        """The CPU stream threads for one run (none with a single stream: the forward then runs in the caller)."""
        if self.placement.cpu_streams == 1:
            yield
            return
        threads = torch.get_num_threads()
        self._pool = StreamPool(self.placement.cpu_streams, torch.set_num_threads,
                                (self.placement.threads_per_stream,))  # fmt: skip
        try:
            yield
        finally:
            self._pool.close()
            self._pool = None
            # A stream's set_num_threads also sets torch's process-wide default (and MKL's); give the caller back its
            # own.
            torch.set_num_threads(threads)

    def _forward_now(self, batch: torch.Tensor) -> _BatchOutput:
        batch = batch.to(self.device, non_blocking=True)
        autocast = (
            torch.autocast(self.device.type, dtype=self.autocast_dtype)
            if self.autocast_dtype is not None
            else contextlib.nullcontext()
        )
        with torch.inference_mode(), autocast:
            try:
                out = self._compute(batch)
            except Exception as err:
                if not self._compiled:
                    raise
                # torch.compile needs a working C++/Triton toolchain and supports most but not all graphs; a tagging
                # run should not die of it. Eager gives the same results, only slower.
                _logger.warning("torch.compile failed (%s: %s); running eagerly", type(err).__name__, err)
                self._compute, self._compiled = self._compute_eager, False
                out = self._compute(batch)
        return _BatchOutput(out)
