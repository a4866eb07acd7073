"""Batch inference over audio files: tagging (labels and scores) and embedding extraction.

Files are decoded in DataLoader workers; windows of equal length are batched together, and whole clips are batched
only with clips of the same length, so a clip's result never depends on what it was batched with. A bad file becomes
a result with an ``error`` and the batch goes on.
"""

from __future__ import annotations

import contextlib
import glob
import inspect
import logging
import math
import os
import stat
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .audio.io import (
    AUDIO_EXTENSIONS,
    AudioLoadError,
    audio_info,
    audio_warnings,
    device_resampling_supported,
    load_audio,
    pcm_to_waveform_on,
    read_pcm,
    stream_audio,
)
from .models._base import AudioClassifier

_logger = logging.getLogger(__name__)

# Whole files longer than this many training clips are windowed automatically (a one-hour file through a CNN in one
# piece needs gigabytes of activations).
AUTO_WINDOW_CLIPS = 10
# Files longer than this are decoded block by block in the main process, so memory does not grow with the file (a
# one-hour 44.1 kHz stereo file is 1.3 GB as float32); shorter ones are decoded whole in the loader's workers.
STREAM_SECONDS = 300.0
# Window for streamed files of models that name no clip length (wav2vec2 ASR weights): attention over a whole hour
# would not fit in memory.
STREAM_WINDOW_SECONDS = 30.0


@dataclass
class Segment:
    """One window of a file: ``start``/``end`` in seconds, ``scores`` per class (or an embedding)."""

    start: float
    end: float
    values: np.ndarray


@dataclass
class FileResult:
    """Per-file outcome. ``values`` is the clip-level score vector (tagging) or embedding; ``segments`` the windows."""

    path: str
    duration: float | None = None
    values: np.ndarray | None = None
    segments: list[Segment] = field(default_factory=list)
    error: str | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None


def expand_inputs(inputs: Iterable[str | os.PathLike[str]], recursive: bool = False) -> list[Path]:
    """Files, directories (their audio files, sorted; sub-directories with ``recursive``) and glob patterns.

    A directory and a pattern follow the same rules: ``**`` descends into real sub-directories only, never through a
    symlink to a directory (a link back to a parent would be an endless cycle), and each real file comes once, under
    the first name found for it within that directory or pattern (a symlink beside its target is the same file). A
    name that matches nothing, or that the OS refuses (too long, unreadable), is kept, so that it is reported for that
    file rather than silently dropped or ending the run.
    """
    paths: list[Path] = []
    for item in inputs:
        path = Path(os.fsdecode(item)).expanduser()
        text = str(path)
        if _is_dir(path):
            pattern = "**/*" if recursive else "*"
            found = _unique_files(p for p in path.glob(pattern) if p.suffix.lower() in AUDIO_EXTENSIONS)
            if not found:
                _logger.warning("%s: no audio files found%s", path, "" if recursive else " (use --recursive?)")
            paths.extend(found)
        elif glob.has_magic(text) and not _exists(path):
            paths.extend(_glob(text, recursive) or [path])
        else:
            paths.append(path)
    return paths


def _exists(path: Path) -> bool:
    try:
        path.stat()
    except OSError:
        return False
    return True


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:  # a name too long for the OS, a loop of links: the loader reports it for this file
        return False


def _glob(pattern: str, recursive: bool) -> list[Path]:
    """Files matching ``pattern`` with ``glob.glob``'s meaning, expanded by pathlib from the pattern's literal prefix
    (pathlib's ``**`` does not follow symlinked directories, ``glob.glob``'s does, endlessly on a cycle). As with
    ``glob.glob``, wildcards skip names starting with a dot unless the pattern spells the dot, and the matches keep the
    prefix as typed (``./``, ``~`` expanded)."""
    parts = pattern.split("/")
    literal = 0
    while literal < len(parts) - 1 and not glob.has_magic(parts[literal]):
        literal += 1
    prefix = "/".join(parts[:literal])
    if literal == 1 and parts[0] == "":
        prefix = "/"
    rest = [p for p in parts[literal:] if p]
    if not recursive:
        rest = [p.replace("**", "*") for p in rest]  # glob.glob without recursive=True reads "**" as "*"
    else:
        # "**" is special only as a whole component; glob.glob reads it as "*" inside a name (pathlib refuses it), and
        # a trailing "**" lists files too (pathlib's lists directories only).
        rest = [p if p == "**" else p.replace("**", "*") for p in rest]
        if rest and rest[-1] == "**":
            rest.append("*")
    if not rest:
        return []
    base = Path(prefix) if prefix else Path(".")
    spells_dot = any(p.startswith(".") for p in rest)
    try:
        found = []
        for match in base.glob("/".join(rest)):
            relative = match.relative_to(base)
            if not spells_dot and any(part.startswith(".") for part in relative.parts):
                continue
            found.append(Path(os.path.join(prefix, relative)) if prefix else relative)
        return _unique_files(found)
    except (OSError, ValueError):
        return []


def _unique_files(candidates: Iterable[Path]) -> list[Path]:
    """Regular files among ``candidates`` (symlinks to files included), sorted, each real file once."""
    seen: set[tuple[int, int]] = set()
    files = []
    for path in sorted(candidates):
        try:
            st = path.stat()
        except OSError:
            continue
        if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) in seen:
            continue
        seen.add((st.st_dev, st.st_ino))
        files.append(path)
    return files


def window_starts(num_samples: int, window: int, hop: int) -> list[int]:
    """Start samples of full windows covering the signal; the last window is aligned to the end, never padded."""
    if num_samples <= window:
        return [0]
    starts = list(range(0, num_samples - window + 1, hop))
    if starts[-1] + window < num_samples:
        starts.append(num_samples - window)
    return starts


@dataclass
class _Decoded:
    """What a loader worker hands back for one file: the waveform, or the samples as stored (``pcm`` at ``rate``, for
    preprocessing on the model's device), or ``stream`` (too long: the main process reads it block by block), or the
    error message."""

    index: int
    wave: torch.Tensor | None = None
    pcm: torch.Tensor | None = None
    rate: int = 0
    stream: bool = False
    error: str | None = None
    warnings: list[str] = field(default_factory=list)

    def pin_memory(self) -> _Decoded:
        # Called by the DataLoader's pinning thread, so host-to-device copies can be asynchronous.
        if self.pcm is not None:
            self.pcm = self.pcm.pin_memory()
        return self


def _unexpected(path: Path, err: Exception) -> str:
    return f"{path}: unexpected error while decoding ({type(err).__name__}: {err})"


class _AudioFiles(Dataset):
    """Decodes one file per item in a worker: to the model's rate (``raw=False``) or only to PCM samples."""

    def __init__(self, paths: Sequence[Path], sample_rate: int, stream_seconds: float, raw: bool = False):
        self.paths = list(paths)
        self.sample_rate = sample_rate
        self.stream_seconds = stream_seconds
        self.raw = raw

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> _Decoded:
        path = self.paths[index]
        try:
            info = audio_info(path)
            if info.frames > self.stream_seconds * info.samplerate:
                return _Decoded(index, stream=True)
            # Upsampled files stay on the soxr path: their empty upper bands are where the log of the mel energies
            # magnifies the two resamplers' different stopbands (16 -> 32 kHz moved sigmoid scores by up to 0.3).
            # Rates sharing few factors with the model's would need a huge device kernel: soxr here instead.
            if (
                self.raw
                and info.samplerate >= self.sample_rate
                and device_resampling_supported(info.samplerate, self.sample_rate)
            ):
                pcm, rate = read_pcm(path)
                return _Decoded(index, pcm=torch.from_numpy(pcm), rate=rate, warnings=audio_warnings(path, info))
            warnings: list[str] = []
            wave = load_audio(path, sample_rate=self.sample_rate, on_warning=warnings.append)
            return _Decoded(index, wave=wave, warnings=warnings)
        except AudioLoadError as err:
            return _Decoded(index, error=str(err))
        except Exception as err:  # a decoder crash on one file must not end the batch
            return _Decoded(index, error=_unexpected(path, err))


def _collate_decoded(item: _Decoded) -> _Decoded:
    return item


def _stream_windows(
    chunks: Iterable[np.ndarray], window: int, hop: int, min_samples: int
) -> Iterator[tuple[int, int, np.ndarray]]:
    """``(start, end, samples)`` for the windows ``window_starts`` gives, cut from a stream of chunks.

    Holds at most one window plus one chunk: samples before the next start are dropped, except the last ``window``
    samples, which the end-aligned final window may need.
    """
    buffer = np.zeros(0, np.float32)
    offset = 0  # stream position of buffer[0]
    next_start = 0
    last_start = -1
    for chunk in chunks:
        buffer = np.concatenate([buffer, chunk]) if buffer.size else chunk
        while next_start + window <= offset + buffer.size:
            i = next_start - offset
            yield next_start, next_start + window, buffer[i : i + window].copy()
            last_start = next_start
            next_start += hop
        keep_from = max(0, min(next_start - offset, buffer.size - window))
        if keep_from:
            buffer = buffer[keep_from:]
            offset += keep_from
    total = offset + buffer.size
    if last_start < 0:  # shorter than one window: the whole signal, padded up to the model's minimum
        tail = np.pad(buffer, (0, max(0, min_samples - buffer.size)))
        yield 0, total, tail
    elif last_start + window < total:
        yield total - window, total, buffer[buffer.size - window :].copy()


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, which containers and ``taskset`` narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_num_workers(device: torch.device) -> int:
    """Decoding processes when the caller gives none.

    On a GPU the host only decodes, so a worker per core (one left to the main process, at most 8) keeps the device
    fed. On a CPU the model's forward competes with decoding for the same cores: on 2 cores, decoding in the main
    process with both cores for the forward ran mn10 at 13.9 files/s against 14.6 with one worker and one thread, and
    Cnn14 at 1.82 against 1.12, so small machines decode in the main process and larger ones spare two cores.
    """
    cores = usable_cores()
    if device.type == "cuda":
        return max(1, min(8, cores - 1))
    return 0 if cores <= 4 else 2


# Most CPU streams by default: each holds its share of a batch's activations, so more streams cost memory.
MAX_CPU_STREAMS = 4


def default_cpu_streams(num_workers: int) -> int:
    """Threads computing side by side on a CPU, each a share of every batch with a share of the cores.

    A small model at batch 1 hardly uses a second intra-op thread: on 2 cores mn10 ran 14.4 clips/s with two threads
    and 14.6 with one, while two single-threaded streams ran 18.7 (mn04: 22-24 -> 33-34). So the cores left over by
    the decoding workers are split into streams, at most ``MAX_CPU_STREAMS`` of them.
    """
    return max(1, min(MAX_CPU_STREAMS, usable_cores() - num_workers))


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"`` (CUDA when there is one), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``; anything else is a ValueError."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {str(device)!r}: use auto, cpu, cuda or cuda:N") from None
    if device.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError("--device mps was requested but this machine has no MPS (Apple GPU) device")
        return device
    if device.type not in ("cpu", "cuda"):
        # meta tensors hold no values; other backends are not what the runner was built for
        raise ValueError(f"device {str(device)!r} is not supported for inference: use auto, cpu, cuda[:N] or mps")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("--device cuda was requested but no CUDA device is available")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"--device {device}: there are only {torch.cuda.device_count()} CUDA device(s)")
    return device


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


_PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


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
    ):
        if mode not in ("scores", "embedding", "frames"):
            raise ValueError(f"mode must be 'scores', 'embedding' or 'frames', got {mode!r}")
        if mode == "frames" and not hasattr(model, "embed_frames"):
            raise ValueError(f"{model.pretrained_cfg.name} has no frame-level embeddings (wav2vec2 models do)")
        if layer is not None and "layer" not in inspect.signature(model.embed).parameters:
            raise ValueError(f"{model.pretrained_cfg.name} does not offer per-layer embeddings (wav2vec2 models do)")
        self.layer = layer
        if precision not in _PRECISIONS:
            raise ValueError(f"precision must be one of {sorted(_PRECISIONS)}, got {precision!r}")
        if aggregate not in ("max", "mean"):
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
        self.device = resolve_device(device)
        self.model = model.eval().to(self.device)
        self.mode = mode
        self.sample_rate = model.sample_rate
        self.window = window
        self.hop = hop if hop is not None else window
        self.batch_size = batch_size
        if num_workers is not None and num_workers < 0:
            raise ValueError(f"num_workers must be 0 or more, got {num_workers}")
        self.num_workers = default_num_workers(self.device) if num_workers is None else num_workers
        if cpu_streams is not None and cpu_streams < 1:
            raise ValueError(f"cpu_streams must be 1 or more, got {cpu_streams}")
        if self.device.type != "cpu":
            cpu_streams = 1  # a GPU overlaps batches through its own queue
        self.cpu_streams = default_cpu_streams(self.num_workers) if cpu_streams is None else cpu_streams
        # Intra-op threads per stream: the cores the decoding workers leave, shared out (at least one each).
        self.threads_per_stream = max(1, (usable_cores() - self.num_workers) // self.cpu_streams)
        self._pool: ThreadPoolExecutor | None = None
        self._in_flight: set[Future[_BatchOutput]] = set()
        self.autocast_dtype = _PRECISIONS[precision]
        if self.autocast_dtype is not None and self.device.type != "cuda":
            _logger.warning("--precision %s applies on CUDA only; running fp32 on %s", precision, self.device)
            self.autocast_dtype = None
        self.aggregate = aggregate
        self.progress = progress
        if stream_seconds <= 0:
            raise ValueError(f"stream_seconds must be positive, got {stream_seconds}")
        self.stream_seconds = stream_seconds
        if preprocess_on not in ("host", "device"):
            raise ValueError(f"preprocess_on must be 'host' or 'device', got {preprocess_on!r}")
        # "device": workers only read PCM (int16 where stored so, ~10x cheaper than float); the int-to-float scaling,
        # downmix and (downward) resampling run on the model's device. soxr on the host stays the default because
        # it is what the upstream inference scripts (librosa.load) use; the device resampler moves scores by ~1e-3.
        self.preprocess_on = preprocess_on
        self.channels_last = model.prefers_channels_last if channels_last is None else channels_last
        if self.channels_last:
            # Converts the parameters in place; activations follow the weights' layout. Results are unchanged.
            self.model = self.model.to(memory_format=torch.channels_last)
        self._compute = self._compute_eager
        if compile:
            self._compute = torch.compile(self._compute_eager, dynamic=None)
        self._compiled = compile

    def _compute_eager(self, batch: torch.Tensor) -> torch.Tensor:
        if self.mode == "scores":
            return self.model.activate(self.model(batch))
        if self.mode == "frames":
            return self.model.embed_frames(batch, layer=self.layer)
        return self.model.embed(batch) if self.layer is None else self.model.embed(batch, layer=self.layer)

    def _forward(self, batch: torch.Tensor) -> _BatchOutput | _StreamOutput:
        if self._pool is None:
            return self._forward_now(batch)
        # At most one batch per stream in flight, so decoded audio does not pile up while the streams are busy.
        while len(self._in_flight) >= self.cpu_streams:
            _, self._in_flight = wait(self._in_flight, return_when=FIRST_COMPLETED)
        future = self._pool.submit(self._forward_now, batch)
        self._in_flight.add(future)
        return _StreamOutput(future)

    @contextlib.contextmanager
    def _streams(self) -> Iterator[None]:
        """The CPU stream threads for one run (none with a single stream: the forward then runs in the caller)."""
        if self.cpu_streams == 1:
            yield
            return
        threads = torch.get_num_threads()
        self._pool = ThreadPoolExecutor(
            self.cpu_streams, thread_name_prefix="audiokit-stream", initializer=torch.set_num_threads,
            initargs=(self.threads_per_stream,),
        )  # fmt: skip
        try:
            yield
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool, self._in_flight = None, set()
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

    def _window_plan(self, n: int, result: FileResult, streamed: bool = False) -> tuple[int, int] | None:
        """``(window, hop)`` in samples for a signal of ``n`` samples, or None to run it whole."""
        if self.window is not None:
            window = max(1, round(self.window * self.sample_rate))
            return window, max(1, round((self.hop or self.window) * self.sample_rate))
        if self.model.max_samples is not None and n > self.model.max_samples:
            # A fixed-length model would silently drop the rest of the file.
            window = self.model.max_samples
            result.warnings.append(
                f"longer than the model's {window / self.sample_rate:g} s input: tagged in windows of that length"
            )
            return window, window
        clip = self.model.pretrained_cfg.clip_seconds
        if clip and n > AUTO_WINDOW_CLIPS * clip * self.sample_rate:
            result.warnings.append(f"longer than {AUTO_WINDOW_CLIPS * clip:g} s: tagged in {clip:g} s windows")
            return round(clip * self.sample_rate), round(clip * self.sample_rate)
        if streamed:
            seconds = clip or STREAM_WINDOW_SECONDS
            result.warnings.append(f"longer than {self.stream_seconds:g} s: processed in {seconds:g} s windows")
            return round(seconds * self.sample_rate), round(seconds * self.sample_rate)
        return None

    def _windows(self, wave: torch.Tensor, result: FileResult) -> list[tuple[int, int]]:
        n = wave.shape[-1]
        plan = self._window_plan(n, result)
        if plan is None:
            return [(0, n)]
        window, hop = plan
        return [(s, min(n, s + window)) for s in window_starts(n, window, hop)]

    def run(self, inputs: Iterable[str | os.PathLike[str]], recursive: bool = False) -> list[FileResult]:
        return list(self.iter_results(expand_inputs(inputs, recursive)))

    def iter_results(self, paths: Sequence[Path]) -> Iterator[FileResult]:
        """Yield results in input order as files complete (a batch is flushed when full or at the end)."""
        with self._streams():
            yield from self._iter_results(paths)

    def _iter_results(self, paths: Sequence[Path]) -> Iterator[FileResult]:
        loader = DataLoader(
            _AudioFiles(paths, self.sample_rate, self.stream_seconds, raw=self.preprocess_on == "device"),
            batch_size=None,
            collate_fn=_collate_decoded,
            num_workers=self.num_workers,
            # Raw PCM goes to the device file by file, so it is pinned (in the loader's thread); decoded waveforms
            # are stacked into pinned memory per batch in flush().
            pin_memory=self.device.type == "cuda" and self.preprocess_on == "device",
            persistent_workers=False,
        )
        progress = _progress_bar(len(paths), enabled=self.progress)
        results: dict[int, FileResult] = {}
        # file -> (batch output, row) per window
        pending: dict[int, list[tuple[_BatchOutput | _StreamOutput, int] | None]] = {}
        spans: dict[int, list[tuple[int, int]]] = {}
        peaks: dict[int, torch.Tensor] = {}
        queues: dict[int, list[tuple[int, int, torch.Tensor]]] = {}  # window length -> (file, window#, samples)
        next_to_yield = 0

        def flush(length: int, spread: bool = False) -> None:
            items = queues.pop(length, [])
            # With several CPU streams a batch is split among them; otherwise a run of a batch or two would leave all
            # but one stream idle (8 files at batch 8 ran at half speed on 2 cores).
            size = math.ceil(self.batch_size / self.cpu_streams)
            if spread:  # a last, partial batch: shared out so that every CPU stream takes part
                size = min(size, math.ceil(len(items) / self.cpu_streams))
            for start in range(0, len(items), size):
                chunk = items[start : start + size]
                windows = [w for _, _, w in chunk]
                if windows[0].device.type == "cpu":
                    batch = torch.empty((len(chunk), length), pin_memory=self.device.type == "cuda")
                    outputs = self._forward(torch.stack(windows, out=batch))
                else:
                    outputs = self._forward(torch.stack(windows))
                for row, (file_index, window_index, _) in enumerate(chunk):
                    pending[file_index][window_index] = (outputs, row)

        def enqueue(file_index: int, start: int, end: int, samples: torch.Tensor) -> None:
            spans[file_index].append((start, end))
            pending[file_index].append(None)
            queue = queues.setdefault(samples.shape[-1], [])
            queue.append((file_index, len(spans[file_index]) - 1, samples))
            if len(queue) >= self.batch_size:
                flush(samples.shape[-1])

        def finish(file_index: int) -> None:
            result = results[file_index]
            peak = float(peaks.pop(file_index)) if file_index in peaks else None
            if peak == 0.0:
                result.warnings.append("the audio is digital silence")
            outs = [batch.array()[row] for batch, row in pending.pop(file_index)]  # type: ignore[misc]
            segments = [
                Segment(s / self.sample_rate, e / self.sample_rate, out)
                for (s, e), out in zip(spans.pop(file_index), outs)
            ]
            broken = [seg for seg in segments if not np.isfinite(seg.values).all()]
            if broken:
                # NaN is no score: written out it would read as a result (and is not even valid JSON).
                what = "scores" if self.mode == "scores" else "embeddings"
                detail = f" in {len(broken)} of {len(segments)} windows (first at {broken[0].start:.2f} s)"
                detail = detail if len(segments) > 1 else ""
                level = f"; the input's peak level is {peak:.3g}" if peak is not None else ""
                result.error = f"{result.path}: the model produced non-finite {what} (NaN or inf){detail}{level}"
                return
            if self.mode == "frames":  # per-window frame matrices; nothing to aggregate
                result.segments = segments
                return
            stacked = np.stack([seg.values for seg in segments])
            if len(segments) == 1:
                result.values = stacked[0]
            elif self.mode == "embedding" or self.aggregate == "mean":
                result.values = stacked.mean(axis=0)
            else:
                result.values = stacked.max(axis=0)
            result.segments = segments if (self.window is not None or len(segments) > 1) else []

        for item in loader:
            index = item.index
            path = paths[index]
            result = FileResult(path=str(path))
            results[index] = result
            spans[index], pending[index] = [], []

            def add(start: int, end: int, samples: torch.Tensor, file_index: int = index) -> None:
                enqueue(file_index, start, end, samples)

            result.warnings.extend(item.warnings)
            if item.stream:
                peaks[index] = self._add_streamed(path, result, add)
            elif item.wave is not None:
                peaks[index] = self._add_whole(item.wave, result, add)
            elif item.pcm is not None:
                pcm = item.pcm.to(self.device, non_blocking=True)
                peaks[index] = self._add_whole(pcm_to_waveform_on(pcm, item.rate, self.sample_rate), result, add)
            else:
                result.error = item.error
            if result.error is not None:
                _logger.debug("%s", result.error)  # reported by the caller (the CLI prints every failure)
                del spans[index], pending[index]
                peaks.pop(index, None)
                for length, queue in list(queues.items()):  # windows of a file that failed mid-stream
                    queues[length] = [entry for entry in queue if entry[0] != index]
            progress.update(1)
            # Emit every leading file whose windows are all computed.
            while next_to_yield in results:
                idx = next_to_yield
                # Not yet computed, or still on its way from the GPU (waiting here would idle it).
                if idx in pending and any(out is None or not out[0].ready() for out in pending[idx]):
                    break
                if idx in pending:
                    finish(idx)
                yield results.pop(idx)
                next_to_yield += 1
            if len(results) > (4 + self.cpu_streams) * self.batch_size:
                # Too many files waiting on partial batches (all of different lengths; those in the streams' hands
                # aside): run what we have.
                for length in list(queues):
                    flush(length)
        for length in list(queues):
            flush(length, spread=True)
        progress.close()
        while next_to_yield in results:
            if next_to_yield in pending:
                finish(next_to_yield)
            yield results.pop(next_to_yield)
            next_to_yield += 1

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
        for s, e in self._windows(wave, result):
            enqueue(s, e, wave[s:e])
        return peak

    def _add_streamed(self, path: Path, result: FileResult, enqueue: Callable[..., None]) -> torch.Tensor:
        """Decode a long file block by block, queueing its windows as they fill; memory stays bounded. Returns the
        peak level, as ``_add_whole`` does."""
        try:
            info = audio_info(path)
            expected = round(info.frames * self.sample_rate / info.samplerate)
            plan = self._window_plan(expected, result, streamed=True)
            assert plan is not None  # streamed files are always longer than any automatic window
            window, hop = plan
            peak = 0.0
            count = 0
            result.warnings.extend(audio_warnings(path, info))
            chunks = stream_audio(path, self.sample_rate, block_seconds=max(10.0, 2 * window / self.sample_rate))
            for start, end, samples in _stream_windows(chunks, window, hop, self.model.min_samples):
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


def _progress_bar(total: int, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="file", disable=not enabled, dynamic_ncols=True, leave=False)


def top_k(scores: np.ndarray | torch.Tensor, label_names: Sequence[str], k: int = 5, threshold: float | None = None):
    """``[(label, score), ...]`` for the ``k`` highest scores (all when ``k`` is 0), at or above ``threshold``."""
    _check_selection(k, threshold)
    values = scores.detach().float().cpu().numpy() if isinstance(scores, torch.Tensor) else np.asarray(scores)
    if values.ndim != 1:
        raise ValueError(f"top_k takes one score vector, got shape {values.shape}")
    order = np.argsort(-values, kind="stable")
    if k:
        order = order[:k]
    return [(label_names[i], float(values[i])) for i in order if threshold is None or values[i] >= threshold]


def _check_selection(k: int, threshold: float | None) -> None:
    # A negative k would slice from the end (-1: all labels but one) and a NaN threshold keeps nothing: both silently.
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
        raise ValueError(f"top_k must be a whole number >= 0 (0: all labels), got {k!r}")
    if threshold is not None and not math.isfinite(threshold):
        raise ValueError(f"threshold must be a finite number, got {threshold}")


def load_model(model: AudioClassifier | str | None, checkpoint_path: str | os.PathLike[str] | None) -> AudioClassifier:
    """A model instance as given, or built by name with weights from ``checkpoint_path`` or the download cache.

    A model built here is for inference only, so its BatchNorm layers are folded into the convolutions before them
    (``layers.fold_batchnorm_``: the same outputs to float rounding, one pass less over every activation). A given
    instance is left as it is: its owner may still train or save it.
    """
    from ._builder import create_model
    from .layers.fusion import fold_batchnorm_

    if isinstance(model, AudioClassifier):
        if checkpoint_path is not None:
            raise ValueError("checkpoint_path applies to a model name, not to a model instance")
        return model
    name = model or DEFAULT_MODEL
    net = create_model(name, pretrained=checkpoint_path is None, checkpoint_path=checkpoint_path).eval()
    fold_batchnorm_(net)
    return net


DEFAULT_MODEL = "efficientat_mn10.audioset"


def tag(
    inputs: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    model: AudioClassifier | str | None = None,
    *,
    checkpoint_path: str | os.PathLike[str] | None = None,
    top_k: int = 5,
    threshold: float | None = None,
    window: float | None = None,
    hop: float | None = None,
    recursive: bool = False,
    **runner_kwargs: Any,
) -> list[dict[str, Any]]:
    """Tag audio files. Returns one dict per file, in input order::

        {"path", "duration", "labels": [{"label", "score"}...], "windows": [{"start", "end", "labels"}...],
         "error", "warnings"}

    ``labels`` is the clip-level result (for windowed files: the per-class maximum over windows, or the mean with
    ``aggregate="mean"``). Files longer than ``stream_seconds`` (default 5 minutes) are decoded block by block in
    windows, so memory does not grow with the file. ``runner_kwargs``: ``batch_size``, ``num_workers``, ``device``,
    ``precision``, ``aggregate``, ``progress``, ``channels_last``, ``compile``, ``stream_seconds``,
    ``preprocess_on``, ``cpu_streams``.
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    _check_selection(top_k, threshold)
    net = load_model(model, checkpoint_path)
    if net.num_classes == 0:
        raise ValueError("this model has no classifier (num_classes=0): use embed() for embeddings")
    runner = InferenceRunner(net, mode="scores", window=window, hop=hop, **runner_kwargs)
    names = net.label_names
    return [_tag_record(result, names, top_k, threshold) for result in runner.run(inputs, recursive=recursive)]


def _tag_record(result: FileResult, names: Sequence[str], k: int, threshold: float | None) -> dict[str, Any]:
    def labels(values: np.ndarray) -> list[dict[str, Any]]:
        return [{"label": n, "score": s} for n, s in top_k(values, names, k, threshold)]

    return {
        "path": result.path,
        "duration": result.duration,
        "labels": labels(result.values) if result.values is not None else [],
        "windows": [
            {"start": round(seg.start, 6), "end": round(seg.end, 6), "labels": labels(seg.values)}
            for seg in result.segments
        ],
        "error": result.error,
        "warnings": result.warnings,
    }


@dataclass
class Embeddings:
    """``ids`` (path, or ``path@start-end`` per window) and a float32 ``(N, D)`` matrix; ``errors`` per failed file."""

    ids: list[str]
    vectors: np.ndarray
    starts: np.ndarray
    ends: np.ndarray
    errors: dict[str, str]


def embed(
    inputs: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    model: AudioClassifier | str | None = None,
    *,
    checkpoint_path: str | os.PathLike[str] | None = None,
    window: float | None = None,
    hop: float | None = None,
    recursive: bool = False,
    frame_level: bool = False,
    layer: int | None = None,
    **runner_kwargs: Any,
) -> Embeddings:
    """Embeddings of audio files: one row per file, or one per window when ``window`` is given.

    ``layer=k`` takes the embedding of hidden layer ``k`` (models with layers, e.g. wav2vec2); ``frame_level=True``
    gives one row per model frame (id ``path@start``) instead of one per clip or window.
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    net = load_model(model, checkpoint_path)
    mode = "frames" if frame_level else "embedding"
    if frame_level and window is not None and hop is not None and hop < window:
        raise ValueError("frame-level embeddings need non-overlapping windows (hop >= window)")
    runner = InferenceRunner(net, mode=mode, window=window, hop=hop, layer=layer, **runner_kwargs)
    ids: list[str] = []
    rows: list[np.ndarray] = []
    starts: list[float] = []
    ends: list[float] = []
    errors: dict[str, str] = {}
    for result in runner.run(inputs, recursive=recursive):
        if not result.ok:
            errors[result.path] = result.error or "failed"
            continue
        if frame_level:
            step = net.frame_hop_seconds  # type: ignore[attr-defined]
            segments = result.segments or []
            if not segments and result.values is not None:
                segments = [Segment(0.0, result.duration or 0.0, result.values)]
            for seg in segments:
                # A model whose frames depend on the input's length (HTS-AT stretches its input onto a fixed grid)
                # gives their times itself; the others have a fixed hop.
                spans = None
                if hasattr(net, "frame_times"):
                    spans = net.frame_times(round((seg.end - seg.start) * net.sample_rate)).tolist()
                for i, row in enumerate(seg.values):
                    start = seg.start + (spans[i][0] if spans else i * step)
                    end = seg.start + spans[i][1] if spans else start + step
                    ids.append(f"{result.path}@{start:.3f}")
                    rows.append(row)
                    starts.append(start)
                    ends.append(min(end, seg.end))
        elif window is not None:
            for seg in result.segments:
                ids.append(f"{result.path}@{seg.start:.3f}-{seg.end:.3f}")
                rows.append(seg.values)
                starts.append(seg.start)
                ends.append(seg.end)
        else:
            assert result.values is not None and result.duration is not None
            ids.append(result.path)
            rows.append(result.values)
            starts.append(0.0)
            ends.append(result.duration)
    width = rows[0].shape[-1] if rows else net.num_features
    vectors = np.stack(rows).astype(np.float32) if rows else np.zeros((0, width), np.float32)
    return Embeddings(ids, vectors, np.asarray(starts), np.asarray(ends), errors)
