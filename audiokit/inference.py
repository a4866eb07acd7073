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
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .audio.io import AUDIO_EXTENSIONS, AudioLoadError, load_audio
from .models._base import AudioClassifier

_logger = logging.getLogger(__name__)

# Whole files longer than this many training clips are windowed automatically (a one-hour file through a CNN in one
# piece needs gigabytes of activations).
AUTO_WINDOW_CLIPS = 10


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

    A name that matches nothing is kept, so that it is reported as missing rather than silently dropped.
    """
    paths: list[Path] = []
    for item in inputs:
        text = os.fspath(item)
        path = Path(text).expanduser()
        if path.is_dir():
            pattern = "**/*" if recursive else "*"
            found = sorted(p for p in path.glob(pattern) if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
            if not found:
                _logger.warning("%s: no audio files found%s", path, "" if recursive else " (use --recursive?)")
            paths.extend(found)
        elif not path.exists() and glob.has_magic(text):
            matches = sorted(Path(p) for p in glob.glob(text, recursive=recursive) if Path(p).is_file())
            paths.extend(matches if matches else [path])
        else:
            paths.append(path)
    return paths


def window_starts(num_samples: int, window: int, hop: int) -> list[int]:
    """Start samples of full windows covering the signal; the last window is aligned to the end, never padded."""
    if num_samples <= window:
        return [0]
    starts = list(range(0, num_samples - window + 1, hop))
    if starts[-1] + window < num_samples:
        starts.append(num_samples - window)
    return starts


class _AudioFiles(Dataset):
    """Decodes one file per item in a worker; returns the waveform or the error message."""

    def __init__(self, paths: Sequence[Path], sample_rate: int):
        self.paths = list(paths)
        self.sample_rate = sample_rate

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor | None, str | None]:
        try:
            return index, load_audio(self.paths[index], sample_rate=self.sample_rate), None
        except AudioLoadError as err:
            return index, None, str(err)
        except Exception as err:  # a decoder crash on one file must not end the batch
            return index, None, f"{self.paths[index]}: unexpected error while decoding ({type(err).__name__}: {err})"


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was requested but no CUDA device is available")
    return device


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
        num_workers: int = 0,
        device: str | torch.device | None = "auto",
        precision: str = "fp32",
        aggregate: str = "max",
        progress: bool = False,
        layer: int | None = None,
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
        if window is not None and window <= 0:
            raise ValueError(f"window must be positive, got {window}")
        if hop is not None and (hop <= 0 or window is None):
            raise ValueError("hop needs a window and must be positive")
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
        self.num_workers = num_workers
        self.autocast_dtype = _PRECISIONS[precision]
        if self.autocast_dtype is not None and self.device.type != "cuda":
            _logger.warning("--precision %s applies on CUDA only; running fp32 on %s", precision, self.device)
            self.autocast_dtype = None
        self.aggregate = aggregate
        self.progress = progress

    def _forward(self, batch: torch.Tensor) -> np.ndarray:
        batch = batch.to(self.device, non_blocking=True)
        autocast = (
            torch.autocast(self.device.type, dtype=self.autocast_dtype)
            if self.autocast_dtype is not None
            else contextlib.nullcontext()
        )
        with torch.inference_mode(), autocast:
            if self.mode == "scores":
                out = self.model.activate(self.model(batch))
            elif self.mode == "frames":
                out = self.model.embed_frames(batch, layer=self.layer)
            else:
                out = self.model.embed(batch) if self.layer is None else self.model.embed(batch, layer=self.layer)
        return out.float().cpu().numpy()

    def _windows(self, wave: torch.Tensor, result: FileResult) -> list[tuple[int, int]]:
        n = wave.shape[-1]
        if self.window is not None:
            window = max(1, round(self.window * self.sample_rate))
            hop = max(1, round((self.hop or self.window) * self.sample_rate))
        elif self.model.max_samples is not None and n > self.model.max_samples:
            # A fixed-length model would silently drop the rest of the file.
            window = hop = self.model.max_samples
            result.warnings.append(
                f"longer than the model's {window / self.sample_rate:g} s input: tagged in windows of that length"
            )
        elif (clip := self.model.pretrained_cfg.clip_seconds) and n > AUTO_WINDOW_CLIPS * clip * self.sample_rate:
            window = hop = round(clip * self.sample_rate)
            result.warnings.append(f"longer than {AUTO_WINDOW_CLIPS * clip:g} s: tagged in {clip:g} s windows")
        else:
            return [(0, n)]
        return [(s, min(n, s + window)) for s in window_starts(n, window, hop)]

    def run(self, inputs: Iterable[str | os.PathLike[str]], recursive: bool = False) -> list[FileResult]:
        return list(self.iter_results(expand_inputs(inputs, recursive)))

    def iter_results(self, paths: Sequence[Path]) -> Iterator[FileResult]:
        """Yield results in input order as files complete (a batch is flushed when full or at the end)."""
        loader = DataLoader(
            _AudioFiles(paths, self.sample_rate),
            batch_size=None,
            num_workers=self.num_workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
        )
        progress = _progress_bar(len(paths), enabled=self.progress)
        results: dict[int, FileResult] = {}
        pending: dict[int, list[np.ndarray | None]] = {}  # file index -> outputs per window
        spans: dict[int, list[tuple[int, int]]] = {}
        queues: dict[int, list[tuple[int, int, torch.Tensor]]] = {}  # window length -> (file, window#, samples)
        next_to_yield = 0

        def flush(length: int) -> None:
            items = queues.pop(length, [])
            for start in range(0, len(items), self.batch_size):
                chunk = items[start : start + self.batch_size]
                outputs = self._forward(torch.stack([w for _, _, w in chunk]))
                for (file_index, window_index, _), out in zip(chunk, outputs):
                    pending[file_index][window_index] = out

        def finish(file_index: int) -> None:
            result = results[file_index]
            outs = pending.pop(file_index)
            segments = [
                Segment(s / self.sample_rate, e / self.sample_rate, out)
                for (s, e), out in zip(spans.pop(file_index), outs)
            ]
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

        for index, wave, error in loader:
            path = paths[index]
            result = FileResult(path=str(path))
            results[index] = result
            if error is not None:
                result.error = error
                _logger.debug("%s", error)  # reported by the caller (the CLI prints every failure)
            else:
                assert wave is not None
                result.duration = wave.shape[-1] / self.sample_rate
                if float(wave.abs().max()) == 0.0:
                    result.warnings.append("the audio is digital silence")
                if wave.shape[-1] < self.model.min_samples:
                    result.warnings.append(
                        f"shorter than the model's minimum of {self.model.min_samples / self.sample_rate:.3f} s: "
                        "zero-padded"
                    )
                    wave = torch.nn.functional.pad(wave, (0, self.model.min_samples - wave.shape[-1]))
                spans[index] = self._windows(wave, result)
                pending[index] = [None] * len(spans[index])
                for window_index, (s, e) in enumerate(spans[index]):
                    queues.setdefault(e - s, []).append((index, window_index, wave[s:e]))
                    if len(queues[e - s]) >= self.batch_size:
                        flush(e - s)
            progress.update(1)
            # Emit every leading file whose windows are all computed.
            while next_to_yield in results:
                idx = next_to_yield
                if idx in pending and any(out is None for out in pending[idx]):
                    break
                if idx in pending:
                    finish(idx)
                yield results.pop(idx)
                next_to_yield += 1
            if len(results) > 4 * self.batch_size:
                # Too many files waiting on partial batches (all of different lengths): run what we have.
                for length in list(queues):
                    flush(length)
        for length in list(queues):
            flush(length)
        progress.close()
        while next_to_yield in results:
            if next_to_yield in pending:
                finish(next_to_yield)
            yield results.pop(next_to_yield)
            next_to_yield += 1


def _progress_bar(total: int, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="file", disable=not enabled, dynamic_ncols=True, leave=False)


def top_k(scores: np.ndarray | torch.Tensor, label_names: Sequence[str], k: int = 5, threshold: float | None = None):
    """``[(label, score), ...]`` for the ``k`` highest scores (all when ``k`` is 0), at or above ``threshold``."""
    values = scores.detach().float().cpu().numpy() if isinstance(scores, torch.Tensor) else np.asarray(scores)
    if values.ndim != 1:
        raise ValueError(f"top_k takes one score vector, got shape {values.shape}")
    order = np.argsort(-values, kind="stable")
    if k:
        order = order[:k]
    return [(label_names[i], float(values[i])) for i in order if threshold is None or values[i] >= threshold]


def load_model(model: AudioClassifier | str | None, checkpoint_path: str | os.PathLike[str] | None) -> AudioClassifier:
    """A model instance as given, or built by name with weights from ``checkpoint_path`` or the download cache."""
    from ._builder import create_model

    if isinstance(model, AudioClassifier):
        if checkpoint_path is not None:
            raise ValueError("checkpoint_path applies to a model name, not to a model instance")
        return model
    name = model or DEFAULT_MODEL
    return create_model(name, pretrained=checkpoint_path is None, checkpoint_path=checkpoint_path)


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
    ``aggregate="mean"``). ``runner_kwargs``: ``batch_size``, ``num_workers``, ``device``, ``precision``,
    ``aggregate``, ``progress``.
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
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
                for i, row in enumerate(seg.values):
                    start = seg.start + i * step
                    ids.append(f"{result.path}@{start:.3f}")
                    rows.append(row)
                    starts.append(start)
                    ends.append(min(start + step, seg.end))
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
