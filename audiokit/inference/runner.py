"""The runner: sources -> decode -> window -> batch -> forward -> aggregate, one file's result at a time.

Files are decoded in DataLoader workers (audio in memory in the main process, in its place among them); windows of
equal length are batched together, and whole clips are batched only with clips of the same length, so a clip's
result never depends on what it was batched with. A bad file (or in-memory item) becomes a result with an ``error``
and the run goes on. Results come out in input order; the files between the oldest one
not yet finished and the newest one decoded are the reordering buffer, capped at ``max_pending`` (and the loader
reads at most ``prefetched`` files ahead), so memory does not grow with the number of files.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..audio.io import AudioLoadError, pcm_to_waveform_on
from ..models._base import AudioClassifier
from .aggregate import AGGREGATES, finish_result
from .batch import Batch, Batcher
from .decode import STREAM_SECONDS, _unexpected, decoded_inputs, prefetched, streamed_windows
from .forward import MODES, PRECISIONS, EagerBackend
from .onnx_backend import BACKENDS, OnnxRuntimeBackend
from .placement import plan_placement
from .results import FileResult
from .sources import InMemoryAudio
from .window import Windowing

_logger = logging.getLogger(__name__)


class _InFlight:
    """A file between decoding and its result: the spans of its windows and, per window, ``(batch handle, row)``
    once its batch has been submitted (None while it waits in a queue)."""

    __slots__ = ("outputs", "peak", "result", "spans")

    def __init__(self, result: FileResult):
        self.result = result
        self.spans: list[tuple[int, int]] = []
        self.outputs: list[tuple[Any, int] | None] = []
        self.peak: torch.Tensor | None = None

    def ready(self) -> bool:
        # Not yet submitted, or still on its way from the GPU (waiting here would idle it).
        return all(out is not None and out[0].ready() for out in self.outputs)


class InferenceRunner:
    """Runs a model over files; shared by ``tag`` and ``embed``."""

    def __init__(
        self,
        model: AudioClassifier,
        *,
        mode: str,
        window: float | None = None,
        hop: float | None = None,
        batch_size: int = 16,
        num_workers: int | None = None,
        device: str | torch.device | None = "auto",
        precision: str = "fp32",
        aggregate: str = "max",
        progress: bool = False,
        layer: int | None = None,
        channels_last: bool | None = None,
        compile: bool = False,
        stream_seconds: float = STREAM_SECONDS,
        preprocess_on: str = "host",
        cpu_streams: int | None = None,
        backend: str = "eager",
    ):
        if mode not in MODES:
            raise ValueError(f"mode must be 'scores', 'embedding' or 'frames', got {mode!r}")
        if mode == "frames" and not model.has_frame_embeddings:
            raise ValueError(f"{model.pretrained_cfg.name} has no frame-level embeddings (its architecture has none)")
        if layer is not None and "layer" not in inspect.signature(model.embed).parameters:
            raise ValueError(f"{model.pretrained_cfg.name} does not offer per-layer embeddings (wav2vec2 models do)")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
        if aggregate not in AGGREGATES:
            raise ValueError(f"aggregate must be 'max' or 'mean', got {aggregate!r}")
        if window is not None and not (math.isfinite(window) and window > 0):
            raise ValueError(f"window must be a positive number of seconds, got {window}")
        if hop is not None and (window is None or not (math.isfinite(hop) and hop > 0)):
            raise ValueError(f"hop needs a window and must be a positive number of seconds, got {hop}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        limit = model.max_samples
        if window is not None and limit is not None and round(window * model.sample_rate) > limit:
            raise ValueError(
                f"window of {window:g} s is longer than {model.pretrained_cfg.name}'s fixed input of "
                f"{limit / model.sample_rate:g} s, whose end would be ignored; use a window of at most that"
            )
        if stream_seconds <= 0:
            raise ValueError(f"stream_seconds must be positive, got {stream_seconds}")
        if preprocess_on not in ("host", "device"):
            raise ValueError(f"preprocess_on must be 'host' or 'device', got {preprocess_on!r}")
        placement = plan_placement(device, num_workers, cpu_streams)
        self.placement = placement
        self.device = placement.device
        self.num_workers = placement.num_workers
        self.cpu_streams = placement.cpu_streams
        self.threads_per_stream = placement.threads_per_stream
        self.channels_last = model.prefers_channels_last if channels_last is None else channels_last
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if backend == "onnxruntime":
            if precision != "fp32" or compile or layer is not None:
                raise ValueError("--backend onnxruntime runs the fp32 graph as exported: no --precision, --compile "
                                 "or --layer")  # fmt: skip
            self.backend: Any = OnnxRuntimeBackend(model, placement, mode=mode)
            self.autocast_dtype = None
        else:
            self.backend = EagerBackend(model, placement, mode=mode, layer=layer, precision=precision,
                                        channels_last=self.channels_last, compile=compile)  # fmt: skip
            self.autocast_dtype = self.backend.autocast_dtype
        self.backend_name = backend
        self.model = self.backend.model
        self.precision = precision if self.autocast_dtype is not None else "fp32"  # what ran (fp16 on a CPU: fp32)
        self.mode = mode
        self.layer = layer
        self.sample_rate = model.sample_rate
        self.window = window
        self.hop = hop if hop is not None else window
        self.batch_size = batch_size
        self.aggregate = aggregate
        self.progress = progress
        self.stream_seconds = stream_seconds
        # "device": workers only read PCM (int16 where stored so, ~10x cheaper than float); the int-to-float scaling,
        # downmix and (downward) resampling run on the model's device. soxr on the host stays the default because
        # it is what the upstream inference scripts (librosa.load) use; the device resampler moves scores by ~1e-3.
        self.preprocess_on = preprocess_on
        self.windowing = Windowing(
            self.sample_rate, window, self.hop, model.max_samples, model.pretrained_cfg.clip_seconds, stream_seconds
        )

    @property
    def max_pending(self) -> int:
        """Most files decoded but not yet handed out. Past it, partial batches (files of all different lengths) are
        run and the oldest file is waited for."""
        return (4 + self.cpu_streams) * self.batch_size

    @property
    def max_in_flight(self) -> int:
        """Most files taken from the input but not yet handed out: the reordering buffer and the loader's read-ahead."""
        return self.max_pending + prefetched(self.num_workers)

    def run(self, sources: Iterable[Path | InMemoryAudio]) -> list[FileResult]:
        """Every result at once; ``sources`` as ``expand_sources`` gives them (listed first: the progress bar knows
        the total)."""
        return list(self.iter_results(list(sources)))

    def iter_results(self, sources: Iterable[Path | InMemoryAudio]) -> Iterator[FileResult]:
        """Yield results in input order as files complete; ``sources`` (a list or any iterator of paths and
        ``InMemoryAudio``) is read as the run goes, at most ``max_in_flight`` items ahead of what has been yielded."""
        with self.backend.session():
            yield from self._iter_results(sources)

    def _iter_results(self, sources: Iterable[Path | InMemoryAudio]) -> Iterator[FileResult]:
        total = len(sources) if hasattr(sources, "__len__") else None
        progress = _progress_bar(total, enabled=self.progress)
        batcher = Batcher(self.batch_size, split=self.cpu_streams)
        order: deque[_InFlight] = deque()
        items = decoded_inputs(sources, self.sample_rate, self.stream_seconds, raw=self.preprocess_on == "device",
                               num_workers=self.num_workers,
                               pin=self.device.type == "cuda" and self.preprocess_on == "device")  # fmt: skip
        for item in items:
            state = _InFlight(FileResult(path=item.path, warnings=list(item.warnings), size=item.size,
                                         mtime_ns=item.mtime_ns))  # fmt: skip
            order.append(state)

            def add(start: int, end: int, samples: torch.Tensor, state: _InFlight = state) -> None:
                state.spans.append((start, end))
                state.outputs.append(None)
                self._submit(batcher.add(state, len(state.spans) - 1, samples))

            if item.stream:
                state.peak = self._add_streamed(Path(item.path), state.result, add)
            elif item.wave is not None:
                state.peak = self._add_whole(item.wave, state.result, add)
            elif item.pcm is not None:
                pcm = item.pcm.to(self.device, non_blocking=True)
                state.peak = self._add_whole(pcm_to_waveform_on(pcm, item.rate, self.sample_rate), state.result, add)
            else:
                state.result.error = item.error
            if state.result.error is not None:
                _logger.debug("%s", state.result.error)  # reported by the caller (the CLI prints every failure)
                batcher.discard(state)  # windows of a file that failed mid-stream
                state.spans, state.outputs = [], []
            progress.update(1)
            while order and order[0].ready():
                yield self._finish(order.popleft())
            if len(order) >= self.max_pending:
                # Files waiting on partial batches (of many different lengths): run what there is, and wait for the
                # oldest files until the buffer is half empty, so that the next partial batches have time to fill.
                self._submit(batcher.drain())
                while len(order) > self.max_pending // 2:
                    yield self._finish(order.popleft())
        self._submit(batcher.drain(spread=True))
        progress.close()
        while order:
            yield self._finish(order.popleft())

    def _submit(self, batches: list[Batch]) -> None:
        for batch in batches:
            handle = self.backend.submit(batch.stack(pin=self.device.type == "cuda"))
            for row, (state, window_index) in enumerate(batch.owners):
                state.outputs[window_index] = (handle, row)  # type: ignore[attr-defined]

    def _finish(self, state: _InFlight) -> FileResult:
        result = state.result
        if result.error is not None:
            return result
        outputs = [handle.array()[row] for handle, row in state.outputs]  # type: ignore[misc]
        peak = float(state.peak) if state.peak is not None else None
        finish_result(result, state.spans, outputs, sample_rate=self.sample_rate, mode=self.mode,
                      aggregate=self.aggregate, windowed=self.window is not None, peak=peak)  # fmt: skip
        return result

    def _add_whole(self, wave: torch.Tensor, result: FileResult, enqueue: Callable[..., None]) -> torch.Tensor:
        """Queue the windows of a decoded file; returns its peak level as a tensor (read when the file finishes, so
        a waveform on the GPU costs no synchronisation here)."""
        result.duration = wave.shape[-1] / self.sample_rate
        if wave.shape[-1] == 0:  # load_audio refuses these; the device resampler can still round a sample away
            result.error = f"{result.path}: too short to leave a sample at {self.sample_rate} Hz"
            return torch.zeros(())
        peak = wave.abs().amax()
        if wave.shape[-1] < self.model.min_samples:
            result.warnings.append(
                f"shorter than the model's minimum of {self.model.min_samples / self.sample_rate:.3f} s: zero-padded"
            )
            wave = torch.nn.functional.pad(wave, (0, self.model.min_samples - wave.shape[-1]))
        for s, e in self.windowing.spans(wave.shape[-1], result.warnings):
            enqueue(s, e, wave[s:e])
        return peak

    def _add_streamed(self, path: Path, result: FileResult, enqueue: Callable[..., None]) -> torch.Tensor:
        """Decode a long file block by block, queueing its windows as they fill; memory stays bounded. Returns the
        peak level, as ``_add_whole`` does."""
        try:
            windows, _ = streamed_windows(path, self.windowing, self.model.min_samples, result.warnings)
            peak = 0.0
            count = 0
            for start, end, samples in windows:
                peak = max(peak, float(np.abs(samples).max()))
                count = max(count, end)
                enqueue(start, end, torch.from_numpy(samples))
            result.duration = count / self.sample_rate
            return torch.tensor(peak)
        except AudioLoadError as err:
            result.error = str(err)
        except Exception as err:  # as in the workers: one broken file must not end the run
            result.error = _unexpected(path, err)
        return torch.zeros(())


def _progress_bar(total: int | None, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="file", disable=not enabled, dynamic_ncols=True, leave=False)
