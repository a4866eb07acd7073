"""The library's entry points: ``tag``, ``tag_to`` (records streamed to a file, resumable), ``embed`` and ``embed_to``
(shards written as they come, resumable)."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from .._builder import is_directory_name, takes_label_texts
from .._registry import get_pretrained_cfg, resolve_model_name
from ..models._base import AudioClassifier
from .aggregate import _check_selection
from .embedding_store import EMBED_FORMAT, FLUSH_SECONDS, SHARD_ROWS, EmbeddingShardWriter, row_ids
from .results import FileResult, Segment
from .runner import InferenceRunner
from .sinks import open_tag_sink, tag_header, tag_record
from .sources import AudioInput, expand_sources, in_memory_kind, iter_inputs


def load_model(
    model: AudioClassifier | str | None,
    checkpoint_path: str | os.PathLike[str] | None,
    labels: Sequence[str] | None = None,
) -> AudioClassifier:
    """A model instance as given, or built by name with weights from ``checkpoint_path`` or the download cache.

    ``labels``: label texts for a zero-shot model (CLAP), which makes its classifier from them (``set_labels``; a
    given instance gets them too); any other model refuses them.

    A model built here is for inference only, so its BatchNorm layers are folded into the convolutions before them
    (``layers.fold_batchnorm_``: the same outputs to float rounding, one pass less over every activation). A given
    instance is left as it is: its owner may still train or save it.
    """
    from .._builder import create_model
    from ..layers.fusion import fold_batchnorm_

    if isinstance(model, AudioClassifier):
        if checkpoint_path is not None:
            raise ValueError("checkpoint_path applies to a model name, not to a model instance")
        if labels is not None:
            _set_labels(model, labels, model.pretrained_cfg.name)
        return model
    name = model or DEFAULT_MODEL
    if (
        labels is not None
        and not is_directory_name(name)
        and not takes_label_texts(get_pretrained_cfg(resolve_model_name(name)).architecture)
    ):
        _set_labels(None, labels, name)  # refused before any weights are fetched
    net = create_model(name, pretrained=checkpoint_path is None, checkpoint_path=checkpoint_path).eval()
    if labels is not None:
        _set_labels(net, labels, name)
    fold_batchnorm_(net)
    return net


def _set_labels(net: AudioClassifier | None, labels: Sequence[str], name: str) -> None:
    if net is None or not hasattr(net, "set_labels"):
        raise ValueError(
            f"{name} has a fixed set of classes and takes no label texts (labels=, --labels); zero-shot models such "
            "as CLAP (hf-hub:laion/clap-htsat-unfused) do"
        )
    net.set_labels(labels)


DEFAULT_MODEL = "efficientat_mn10.audioset"


def _as_inputs(inputs: AudioInput | Iterable[AudioInput]) -> Iterable[AudioInput]:
    """One input as a list of one: a path, or one clip in memory (a 2-D array is one clip's channels, not a batch)."""
    if isinstance(inputs, (str, os.PathLike)) or in_memory_kind(inputs) is not None:
        return [inputs]
    return inputs  # type: ignore[return-value]


def tag(
    inputs: AudioInput | Iterable[AudioInput],
    model: AudioClassifier | str | None = None,
    *,
    sample_rate: int | Sequence[int | None] | None = None,
    checkpoint_path: str | os.PathLike[str] | None = None,
    top_k: int = 5,
    threshold: float | None = None,
    window: float | None = None,
    hop: float | None = None,
    recursive: bool = False,
    labels: Sequence[str] | None = None,
    **runner_kwargs: Any,
) -> list[dict[str, Any]]:
    """Tag audio files and audio in memory. Returns one dict per file or in-memory item, in input order::

        {"path", "duration", "labels": [{"label", "score"}...], "windows": [{"start", "end", "labels"}...],
         "error", "warnings", "size", "mtime_ns"}

    ``labels`` is the clip-level result (for windowed files: the per-class maximum over windows, or the mean with
    ``aggregate="mean"``). Files longer than ``stream_seconds`` (default 5 minutes) are decoded block by block in
    windows, so memory does not grow with the file (audio in memory that long gets the same windows). ``size`` and
    ``mtime_ns`` are the file's as it was read (None for audio in memory).

    ``inputs``: one input or an iterable of them, each a file, a directory (its audio files; sub-directories
    with ``recursive``) or a glob pattern; or audio in memory: a numpy array or torch tensor of samples, mono ``(T,)``
    or one multichannel clip ``(C, T)`` (a 2-D array is one clip, not a batch: give a list for several), float in
    [-1, 1] or int16 PCM, a tensor on any device; the bytes of an encoded file (WAV, FLAC, OGG, MP3); or a binary
    file object (``io.BytesIO``, ``open(..., "rb")``, read from its start and left open). Audio in memory is checked,
    downmixed and resampled exactly as the same samples read from a file (a float32 WAV of the array gives the same
    result); it is named ``<array 0>``, ``<tensor 1>``, ``<bytes 2>``, ``<file 3>`` (its kind and its place in
    ``inputs``) in the results' ``path`` and in messages, and a bad item (NaN, empty, a wrong shape, undecodable bytes,
    no sample rate) becomes an error as a bad file does, while the others go on.

    ``sample_rate``: the rate of the arrays and tensors, one for all, or one entry per input (None for the inputs
    that carry their own rate, as files, bytes and file objects do; a rate given there is a ValueError). One rate for
    all does not apply to those: bytes and file objects are read at the rate their header states.

    ``runner_kwargs``: ``batch_size``, ``num_workers``, ``device``,
    ``precision``, ``aggregate``, ``progress``, ``channels_last``, ``compile``, ``stream_seconds``,
    ``preprocess_on``, ``cpu_streams``. ``labels``: the label texts of a zero-shot model (CLAP), scored with a
    softmax over them.

    Example: ``ak.tag(wave, sample_rate=44100)``, ``ak.tag([wave, "b.flac", flac_bytes], sample_rate=[16000, None,
    None])``.
    """
    sources = expand_sources(_as_inputs(inputs), recursive, sample_rate)  # before the model: a bad rate costs no load
    _check_selection(top_k, threshold)
    net = load_model(model, checkpoint_path, labels=labels)
    if net.num_classes == 0:
        if hasattr(net, "set_labels"):
            raise ValueError("this zero-shot model has no labels yet: give their texts (labels=[...], --labels)")
        raise ValueError("this model has no classifier (num_classes=0): use embed() for embeddings")
    runner = InferenceRunner(net, mode="scores", window=window, hop=hop, **runner_kwargs)
    names = net.label_names
    return [tag_record(result, names, top_k, threshold) for result in runner.run(sources)]


@dataclass
class TagRun:
    """What ``tag_to`` did: records ``written`` now, inputs ``skipped`` (already in the output, unchanged), this run's
    ``errors`` (one message per failed file) and the failures among the skipped records (``earlier_errors``)."""

    written: int = 0
    skipped: int = 0
    errors: list[str] = field(default_factory=list)
    earlier_errors: int = 0


def tag_to(
    output: str | os.PathLike[str],
    inputs: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    model: AudioClassifier | str | None = None,
    *,
    format: str = "jsonl",
    resume: bool = False,
    checkpoint_path: str | os.PathLike[str] | None = None,
    top_k: int = 5,
    threshold: float | None = None,
    window: float | None = None,
    hop: float | None = None,
    recursive: bool = False,
    on_record: Callable[[dict[str, Any]], None] | None = None,
    allow_empty: bool = False,
    **runner_kwargs: Any,
) -> TagRun:
    """Tag audio files into ``output`` (``format`` "jsonl" or "csv"), a record per file as it finishes, in input order.

    ``inputs`` is read as the run goes (an iterator over a million names is fine); ``output`` may be ``"-"``
    (standard output), a pipe or a device, or a file, which gets a header naming the model, its weights and the
    settings. ``resume=True`` continues such a file: inputs already recorded, with the size and mtime recorded, are
    skipped, changed ones redone; another model or setting is refused (``ResumeError``). Without it an existing
    non-empty file is refused. ``on_record`` is called with each record once it is written. Record fields as ``tag``.
    ``allow_empty``: no inputs write an output with its header only (a torchrun rank whose share is empty) instead
    of raising.
    """
    _check_selection(top_k, threshold)
    net = load_model(model, checkpoint_path)
    if net.num_classes == 0:
        raise ValueError("this model has no classifier (num_classes=0): use embed() for embeddings")
    todo = _streamed_inputs(inputs, recursive, allow_empty)
    runner = InferenceRunner(net, mode="scores", window=window, hop=hop, **runner_kwargs)
    settings = _recorded_settings(runner, window=window, aggregate=runner.aggregate, top_k=top_k, threshold=threshold)
    sink = open_tag_sink(output, format, tag_header(net, settings, __version__), resume=resume)
    run = TagRun()
    try:
        if sink.resumable:
            todo = (p for p in todo if not sink.skip(p))
        for result in runner.iter_results(todo):
            record = tag_record(result, net.label_names, top_k, threshold)
            sink.write(record)
            run.written += 1
            if record["error"]:
                run.errors.append(record["error"])
            if on_record is not None:
                on_record(record)
        sink.finish()
    finally:
        sink.close()
    run.skipped, run.earlier_errors = sink.skipped, sink.earlier_errors
    return run


def _streamed_inputs(
    inputs: str | os.PathLike[str] | Iterable[str | os.PathLike[str]], recursive: bool, allow_empty: bool
) -> Iterator[Path]:
    """The input files, read as the run goes; the first is looked for at once, so that none is an error up front
    (unless ``allow_empty``: a torchrun rank whose share is empty)."""
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    paths = iter_inputs(inputs, recursive)
    first = next(paths, None)
    if first is None and not allow_empty:
        raise ValueError("no input files")
    return itertools.chain([first] if first is not None else [], paths)


def _recorded_settings(runner: InferenceRunner, **specific: Any) -> dict[str, Any]:
    """What an output's header records besides the model: ``--resume`` refuses to continue under other values."""
    backend = {"backend": runner.backend_name} if runner.backend_name != "eager" else {}  # older headers have none
    return {**specific, "hop": runner.hop, "precision": runner.precision, "preprocess_on": runner.preprocess_on,
            "stream_seconds": runner.stream_seconds, **backend}  # fmt: skip


@dataclass
class Embeddings:
    """``ids`` (path, or ``path@start-end`` per window) and a float32 ``(N, D)`` matrix; ``errors`` per failed file."""

    ids: list[str]
    vectors: np.ndarray
    starts: np.ndarray
    ends: np.ndarray
    errors: dict[str, str]


def embed(
    inputs: AudioInput | Iterable[AudioInput],
    model: AudioClassifier | str | None = None,
    *,
    sample_rate: int | Sequence[int | None] | None = None,
    checkpoint_path: str | os.PathLike[str] | None = None,
    window: float | None = None,
    hop: float | None = None,
    recursive: bool = False,
    frame_level: bool = False,
    layer: int | None = None,
    **runner_kwargs: Any,
) -> Embeddings:
    """Embeddings of audio files and audio in memory: one row per file or item, or one per window when ``window`` is
    given. Row ids and ``errors`` keys are the paths, or the names of the in-memory items (``<array 0>``).

    ``inputs`` and ``sample_rate`` as ``tag`` takes them.

    ``layer=k`` takes the embedding of hidden layer ``k`` (models with layers, e.g. wav2vec2); ``frame_level=True``
    gives one row per model frame (id ``path@start``) instead of one per clip or window. ``runner_kwargs`` as
    ``tag``.
    """
    sources = expand_sources(_as_inputs(inputs), recursive, sample_rate)
    net = load_model(model, checkpoint_path)
    mode = "frames" if frame_level else "embedding"
    if frame_level and window is not None and hop is not None and hop < window:
        raise ValueError("frame-level embeddings need non-overlapping windows (hop >= window)")
    runner = InferenceRunner(net, mode=mode, window=window, hop=hop, layer=layer, **runner_kwargs)
    kind = _row_kind(frame_level, window)
    ids: list[str] = []
    rows: list[np.ndarray] = []
    starts: list[float] = []
    ends: list[float] = []
    errors: dict[str, str] = {}
    for result in runner.run(sources):
        if not result.ok:
            errors[result.path] = result.error or "failed"
            continue
        matrix, first, last = embedding_rows(result, net, kind)
        ids += row_ids(result.path, first, last, kind)
        rows.append(matrix)
        starts += first
        ends += last
    vectors = np.concatenate(rows) if rows else np.zeros((0, net.num_features), np.float32)
    return Embeddings(ids, vectors, np.asarray(starts), np.asarray(ends), errors)


def _row_kind(frame_level: bool, window: float | None) -> str:
    return "frame" if frame_level else "window" if window is not None else "clip"


def embedding_rows(result: FileResult, net: AudioClassifier, kind: str) -> tuple[np.ndarray, list[float], list[float]]:
    """A file's rows (float32 ``(n, dim)``) with each row's start and end in seconds: one per clip, per window
    (``kind`` "window") or per model frame ("frame")."""
    if kind == "frame":
        step = net.frame_hop_seconds  # type: ignore[attr-defined]
        segments = result.segments or []
        if not segments and result.values is not None:
            segments = [Segment(0.0, result.duration or 0.0, result.values)]
        rows, starts, ends = [], [], []
        for seg in segments:
            # A model whose frames depend on the input's length (HTS-AT stretches its input onto a fixed grid) gives
            # their times itself; the others have a fixed hop.
            spans = None
            if hasattr(net, "frame_times"):
                spans = net.frame_times(round((seg.end - seg.start) * net.sample_rate)).tolist()
            for i in range(len(seg.values)):
                start = seg.start + (spans[i][0] if spans else i * step)
                end = seg.start + spans[i][1] if spans else start + step
                starts.append(start)
                ends.append(min(end, seg.end))
            rows.append(np.asarray(seg.values, np.float32))
        width = rows[0].shape[-1] if rows else net.num_features
        return (np.concatenate(rows) if rows else np.zeros((0, width), np.float32)), starts, ends
    if kind == "window":
        segments = result.segments
        matrix = np.stack([np.asarray(seg.values, np.float32) for seg in segments]) if segments else None
        if matrix is None:
            return np.zeros((0, net.num_features), np.float32), [], []
        return matrix, [seg.start for seg in segments], [seg.end for seg in segments]
    assert result.values is not None and result.duration is not None
    return np.asarray(result.values, np.float32)[None], [0.0], [float(result.duration)]


@dataclass
class EmbedRun:
    """What ``embed_to`` did: files ``written`` now, ``skipped`` (already there, unchanged), this run's ``errors`` and
    the failures among the skipped (``earlier_errors``)."""

    written: int = 0
    skipped: int = 0
    errors: list[str] = field(default_factory=list)
    earlier_errors: int = 0


def embed_to(
    directory: str | os.PathLike[str],
    inputs: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    model: AudioClassifier | str | None = None,
    *,
    resume: bool = False,
    checkpoint_path: str | os.PathLike[str] | None = None,
    window: float | None = None,
    hop: float | None = None,
    recursive: bool = False,
    frame_level: bool = False,
    layer: int | str | None = None,
    shard_rows: int = SHARD_ROWS,
    flush_seconds: float = FLUSH_SECONDS,
    allow_empty: bool = False,
    **runner_kwargs: Any,
) -> EmbedRun:
    """Embeddings of audio files into ``directory`` as they are computed: ``.npy`` shards and a JSONL index
    (:mod:`audiokit.inference.embedding_store`), read back lazily with :func:`open_embeddings`.

    ``inputs`` is read as the run goes. ``resume=True`` continues a directory written with the same model, weights
    and settings (others are refused, ``ResumeError``): files recorded with their current size and mtime are
    skipped, the rest redone. Rows as ``embed`` gives them. ``allow_empty``: no inputs write a directory with its
    index header only (a torchrun rank whose share is empty) instead of raising.
    """
    net = load_model(model, checkpoint_path)
    if frame_level and window is not None and hop is not None and hop < window:
        raise ValueError("frame-level embeddings need non-overlapping windows (hop >= window)")
    given = _streamed_inputs(inputs, recursive, allow_empty)
    runner = InferenceRunner(net, mode="frames" if frame_level else "embedding", window=window, hop=hop, layer=layer,
                             **runner_kwargs)  # fmt: skip
    settings = _recorded_settings(runner, layer=layer, frame_level=frame_level, window=window)
    header = {**tag_header(net, settings, __version__), "format": EMBED_FORMAT}
    kind = _row_kind(frame_level, window)
    writer = EmbeddingShardWriter(directory, header, resume=resume, shard_rows=shard_rows, flush_seconds=flush_seconds)
    run = EmbedRun()
    try:
        todo = (p for p in given if not writer.skip(p))
        for result in runner.iter_results(todo):
            record = {"path": result.path, "size": result.size, "mtime_ns": result.mtime_ns,
                      "duration": result.duration, "error": result.error, "warnings": result.warnings}  # fmt: skip
            if result.ok:
                matrix, starts, ends = embedding_rows(result, net, kind)
            else:
                matrix, starts, ends = np.zeros((0, 0), np.float32), [], []
                run.errors.append(result.error or f"{result.path}: failed")
            writer.add({**record, "starts": starts, "ends": ends}, matrix)
            run.written += 1
        writer.finish()
    finally:
        writer.close()
    run.skipped, run.earlier_errors = writer.skipped, writer.earlier_errors
    return run
