"""Sound events from frame- or window-level probabilities: "Dog from 10.30 s to 14.80 s, peak 0.91".

The steps, each a function with its settings in :class:`EventSettings`:

1. ``median_filter``: each class's probabilities smoothed over time by a running median of ``median_filter`` seconds
   (converted to the nearest odd number of frames; :func:`median_frames`), with ``scipy.ndimage.median_filter``.
2. ``hysteresis``: a run of frames above ``low_threshold`` is an event if at least one of its frames is above
   ``threshold`` (the class's entry of ``class_thresholds`` where there is one). Without a low threshold this is plain
   thresholding. Above means strictly greater, as in the DCASE baseline (``pred > threshold``).
3. ``merge``: events of one class separated by less than ``min_gap`` seconds become one.
4. ``min_duration``: events shorter than ``min_duration`` seconds are dropped.

An event's ``onset`` is the start of its first frame and its ``offset`` the end of its last (frame spans come from the
model: ``predict_frames`` / ``frame_times``, or a window's span around its centre, see :func:`events_from_result`);
``score`` is the highest *unsmoothed* probability inside it.

Where the defaults come from:

- ``threshold`` 0.5 and ``low_threshold`` 0.2: the SED decoding of Kong et al.'s PANNs-era weakly labelled SED code
  (qiuqiangkong/sound_event_detection_dcase2017_task4, ``pytorch/evaluate.py``: ``sed_high_threshold`` 0.5,
  ``sed_low_threshold`` 0.2; the DCASE 2021-2023 task 4 baselines threshold at 0.5 too).
- ``median_filter`` 0.45 s: the DCASE 2021-2023 task 4 baselines (DCASE-REPO/DESED_task, ``median_window: 7`` output
  frames of 64 ms, 0.448 s).
- ``min_gap`` 0.1 s and ``min_duration`` 0.1 s: Kong's ``n_smooth`` and ``n_salt`` (10 frames at 100 frames/s);
  his comparisons are "at most", ours "less than", which differs only for gaps and events of exactly 0.1 s.

Kong's code also gates each class on the clip-level probability (``audio_tagging_threshold``); for a long recording
the clip-level score is the maximum over it, which the high threshold already implies, so there is no such gate here.

Scoring predicted against reference events (:func:`evaluate_events`) uses sed_scores_eval (Ebbers et al., the
DCASE task 4 evaluation toolkit): collar-based (event-based) and segment-based F-scores, and the polyphonic sound
detection score.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import math
import os
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.ndimage
import torch

from .inference.results import FileResult, Segment

_logger = logging.getLogger(__name__)

__all__ = [
    "Event",
    "EventSettings",
    "detect_events",
    "evaluate_events",
    "events_from_result",
    "frame_result",
    "hysteresis",
    "iter_file_events",
    "median_frames",
    "read_events",
    "render_events",
]

# Windowed scoring for models without frame outputs: each window's scores stand at its centre. A window shorter than
# the 10 s training clips and a hop of a quarter of it place onsets to about the hop (each is blurred by about the
# window); --window / --hop choose others.
EVENT_WINDOW_SECONDS = 2.0
EVENT_HOP_SECONDS = 0.5


# Frame times are sums of float hops (9.1 - 9.0 != 0.1): durations and gaps equal to a limit count as equal.
_TIME_TOLERANCE = 1e-9


@dataclass(frozen=True)
class EventSettings:
    """How probabilities become events (the module docstring gives each step and where its default comes from).

    The same names are the CLI's options (``--threshold``, ``--low-threshold``, ``--median-filter``,
    ``--min-duration``, ``--min-gap``, ``--class-thresholds LABEL=VALUE``).
    """

    threshold: float = 0.5
    low_threshold: float | None = 0.2
    median_filter: float = 0.45
    min_duration: float = 0.1
    min_gap: float = 0.1
    class_thresholds: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("threshold", "median_filter", "min_duration", "min_gap"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
            if name != "threshold" and value < 0:
                raise ValueError(f"{name} must be >= 0 seconds, got {value}")
        if self.low_threshold is not None:
            if not math.isfinite(self.low_threshold):
                raise ValueError(f"low_threshold must be a finite number, got {self.low_threshold!r}")
            if self.low_threshold > self.threshold:
                raise ValueError(
                    f"low_threshold {self.low_threshold} is above threshold {self.threshold}: hysteresis needs "
                    "low <= high"
                )
        for label, value in dict(self.class_thresholds).items():
            if not isinstance(label, str) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"class_thresholds: {label!r}={value!r} is not a label with a finite threshold")
        object.__setattr__(self, "class_thresholds", dict(self.class_thresholds))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def thresholds_for(self, label_names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Per-class ``(high, low)`` thresholds. A class threshold below the global low one lowers that class's low
        threshold to it (hysteresis needs low <= high). Unknown labels are an error naming them."""
        unknown = sorted(set(self.class_thresholds) - set(label_names))
        if unknown:
            raise ValueError(f"class_thresholds name labels the model does not have: {', '.join(map(repr, unknown))}")
        high = np.array([self.class_thresholds.get(n, self.threshold) for n in label_names], dtype=np.float64)
        low = high.copy() if self.low_threshold is None else np.minimum(self.low_threshold, high)
        return high, low


@dataclass(frozen=True)
class Event:
    """One detected event: ``label``, ``onset`` and ``offset`` in seconds, ``score`` its peak probability."""

    label: str
    onset: float
    offset: float
    score: float

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "onset": round(self.onset, 6), "offset": round(self.offset, 6),
                "score": round(self.score, 6)}  # fmt: skip


# -- the steps ---------------------------------------------------------------------------------------------------------
def median_frames(seconds: float, frame_seconds: float) -> int:
    """A median filter of ``seconds`` as an odd number of frames of ``frame_seconds`` (the nearest; at least 1)."""
    if seconds <= 0 or frame_seconds <= 0:
        return 1
    return max(1, 2 * round((seconds / frame_seconds - 1) / 2) + 1)


def hysteresis(probabilities: np.ndarray, high: np.ndarray, low: np.ndarray) -> list[tuple[int, int, int]]:
    """``(class, first frame, end frame exclusive)`` of every run of frames above ``low`` that has a frame above
    ``high`` (per-class thresholds, ``(classes,)``), for ``probabilities`` ``(frames, classes)``."""
    above_low = probabilities > low[None, :]
    # Runs along time only: frames of different classes never join.
    structure = np.array([[0, 1, 0], [0, 1, 0], [0, 1, 0]], dtype=bool)
    labels, count = scipy.ndimage.label(above_low, structure=structure)
    if count == 0:
        return []
    margin = probabilities - high[None, :]
    peaks = scipy.ndimage.maximum(margin, labels, index=np.arange(1, count + 1))
    runs = []
    for index, region in enumerate(scipy.ndimage.find_objects(labels)):
        if region is not None and peaks[index] > 0:
            rows, cols = region
            runs.append((cols.start, rows.start, rows.stop))
    return runs


def detect_events(
    probabilities: np.ndarray | torch.Tensor,
    times: np.ndarray | torch.Tensor,
    label_names: Sequence[str],
    settings: EventSettings | None = None,
    duration: float | None = None,
) -> list[Event]:
    """Events in ``probabilities`` ``(frames, classes)`` whose frames span ``times`` ``(frames, 2)`` (start, end in
    seconds), sorted by onset then label. ``duration`` (seconds) clips the last offset."""
    settings = settings or EventSettings()
    probs = _as_array(probabilities, "probabilities")
    spans = _as_array(times, "times")
    if probs.ndim != 2 or spans.shape != (probs.shape[0], 2):
        raise ValueError(f"need probabilities (frames, classes) and times (frames, 2), got {probs.shape} and "
                         f"{spans.shape}")  # fmt: skip
    if probs.shape[1] != len(label_names):
        raise ValueError(f"{probs.shape[1]} classes of probabilities but {len(label_names)} label names")
    if probs.shape[0] == 0:
        return []
    if not np.isfinite(probs).all():
        raise ValueError("probabilities contain NaN or inf")
    high, low = settings.thresholds_for(label_names)
    size = median_frames(settings.median_filter, float(np.median(spans[:, 1] - spans[:, 0])))
    smoothed = scipy.ndimage.median_filter(probs, size=(size, 1)) if size > 1 else probs
    per_class: dict[int, list[list[float]]] = {}
    for cls, first, end in hysteresis(smoothed, high, low):
        peak = float(probs[first:end, cls].max())
        per_class.setdefault(cls, []).append([float(spans[first, 0]), float(spans[end - 1, 1]), peak])
    events = []
    for cls, found in per_class.items():
        found.sort()
        merged = [found[0]]
        for onset, offset, peak in found[1:]:
            if onset - merged[-1][1] < settings.min_gap - _TIME_TOLERANCE:
                merged[-1][1] = max(merged[-1][1], offset)
                merged[-1][2] = max(merged[-1][2], peak)
            else:
                merged.append([onset, offset, peak])
        for onset, offset, peak in merged:
            if duration is not None:
                offset = min(offset, duration)
            if offset - onset >= settings.min_duration - _TIME_TOLERANCE and offset > onset:
                events.append(Event(label_names[cls], onset, offset, peak))
    events.sort(key=lambda e: (e.onset, e.label))
    return events


def _as_array(x: np.ndarray | torch.Tensor, what: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    try:
        return np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be numeric, got {type(x).__name__}") from None


# -- from a tagged file ------------------------------------------------------------------------------------------------
def has_frame_output(model: Any) -> bool:
    """Whether ``model`` gives frame-level probabilities (HTS-AT, PANNs Cnn14_DecisionLevelMax) with its classifier."""
    if not (callable(getattr(model, "predict_frames", None)) and callable(getattr(model, "frame_times", None))):
        return False
    check = getattr(model, "_segment_classifier", None) or getattr(model, "get_classifier", None)
    classifier = check() if check is not None else None
    return classifier is not None and type(classifier).__name__ in ("Linear", "TokenSemanticConv")


def result_frames(result: FileResult, model: Any | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A tagged file's probabilities ``(frames, classes)`` and frame spans ``(frames, 2)`` in seconds.

    - Segments holding frame matrices ``(frames, classes)`` (:func:`frame_result`): each window's frames with its
      model's ``frame_times``; where windows overlap, each frame comes from the window whose centre is nearest.
    - Segments holding one score vector (windowed tagging): each window's scores stand at its centre, and frame ``i``
      spans from halfway to the previous centre to halfway to the next (the first from 0 s, the last to the end).
    - No segments (a clip tagged whole): one frame over the whole file.
    """
    duration = float(result.duration or 0.0)
    segments = list(result.segments)
    if not segments:
        if result.values is None:
            raise ValueError(f"{result.path}: no scores to find events in")
        return np.asarray(result.values, np.float64)[None, :], np.array([[0.0, duration]])
    if np.ndim(segments[0].values) == 2:
        if model is None:
            raise ValueError("frame-level segments need the model that made them (for its frame_times)")
        return _stitch_frames(segments, model, duration)
    centres = np.array([(s.start + s.end) / 2 for s in segments])
    edges = np.concatenate([[0.0], (centres[1:] + centres[:-1]) / 2, [max(duration, segments[-1].end)]])
    values = np.stack([np.asarray(s.values, np.float64) for s in segments])
    return values, np.stack([edges[:-1], edges[1:]], axis=1)


def _stitch_frames(segments: list[Segment], model: Any, duration: float) -> tuple[np.ndarray, np.ndarray]:
    centres = np.array([(s.start + s.end) / 2 for s in segments])
    bounds = np.concatenate([[-np.inf], (centres[1:] + centres[:-1]) / 2, [np.inf]])
    probs, spans = [], []
    for k, seg in enumerate(segments):
        times = model.frame_times(round((seg.end - seg.start) * model.sample_rate)).double().numpy() + seg.start
        middle = times.mean(axis=1)
        keep = (middle >= bounds[k]) & (middle < bounds[k + 1]) & (times[:, 0] < max(duration, seg.end))
        probs.append(np.asarray(seg.values, np.float64)[keep])
        spans.append(times[keep])
    times = np.concatenate(spans)
    times[:, 1] = np.minimum(times[:, 1], max(duration, times[0, 1]))
    return np.concatenate(probs), times


def events_from_result(
    result: FileResult, label_names: Sequence[str], settings: EventSettings | None = None, model: Any | None = None
) -> list[Event]:
    """Events of one tagged file (:func:`result_frames` says how its segments become frames); none for a failed
    file."""
    if not result.ok:
        return []
    probs, times = result_frames(result, model)
    return detect_events(probs, times, label_names, settings, duration=result.duration)


def frame_result(
    path: str | os.PathLike[str], model: Any, *, window: float | None = None, hop: float | None = None,
    batch_size: int = 8, device: str | torch.device | None = None,
) -> FileResult:  # fmt: skip
    """Frame probabilities of one file from a model with a frame output, as a :class:`FileResult` whose segments hold
    ``(frames, classes)`` matrices (one per window; ``events_from_result`` stitches them).

    Windows as ``tag`` makes them: a fixed-input model's input (HTS-AT, 10.24 s) or, for models of any length, the
    whole file up to ten training clips and 10 s windows beyond; ``window`` / ``hop`` choose others. A file that
    cannot be read gives a result with its ``error``.
    """
    from .audio.io import AudioLoadError, load_audio
    from .inference.window import Windowing

    result = FileResult(path=str(path))
    try:
        wave = load_audio(path, sample_rate=model.sample_rate)
    except AudioLoadError as err:
        result.error = str(err)
        return result
    wave = wave.reshape(-1)
    n = wave.shape[-1]
    result.duration = n / model.sample_rate
    windowing = Windowing(model.sample_rate, window, hop, model.max_samples, model.pretrained_cfg.clip_seconds,
                          math.inf)  # fmt: skip
    spans = windowing.spans(n, result.warnings)
    param = next(model.parameters(), None)
    target = torch.device(device) if device is not None else param.device if param is not None else torch.device("cpu")
    for i in range(0, len(spans), batch_size):
        group = spans[i : i + batch_size]
        lengths = {e - s for s, e in group}
        for length in sorted(lengths):  # only the last window of a file can be shorter
            part = [(s, e) for s, e in group if e - s == length]
            batch = torch.stack([wave[s:e] for s, e in part]).to(target)
            probs = model.predict_frames(batch).probabilities.float().cpu().numpy()
            for (s, e), p in zip(part, probs):
                result.segments.append(Segment(s / model.sample_rate, e / model.sample_rate, p))
    result.segments.sort(key=lambda seg: seg.start)
    if not all(np.isfinite(seg.values).all() for seg in result.segments):
        result.error = f"{result.path}: the model produced non-finite scores (NaN or inf)"
    return result


def iter_file_events(
    inputs: Iterable[str | os.PathLike[str]],
    model: Any,
    settings: EventSettings | None = None,
    *,
    window: float | None = None,
    hop: float | None = None,
    recursive: bool = False,
    **runner_kwargs: Any,
) -> Iterator[tuple[FileResult, list[Event]]]:
    """``(result, events)`` per input file, in input order. Models with a frame output use it (:func:`frame_result`);
    the others are tagged by the inference runner in overlapping windows (default ``EVENT_WINDOW_SECONDS`` every
    ``EVENT_HOP_SECONDS``), each window's scores at its centre."""
    from .inference import InferenceRunner, iter_inputs

    settings = settings or EventSettings()
    settings.thresholds_for(model.label_names)  # unknown class names fail before any work
    paths = iter_inputs(inputs, recursive)
    if has_frame_output(model):
        batch_size = runner_kwargs.get("batch_size", 8)
        device = runner_kwargs.get("device")
        if device in (None, "auto"):
            from .inference import resolve_device

            device = resolve_device(device)
        model = model.eval().to(device)
        for path in paths:
            result = frame_result(path, model, window=window, hop=hop, batch_size=batch_size, device=device)
            yield result, events_from_result(result, model.label_names, settings, model)
        return
    if window is None:
        clip = model.pretrained_cfg.clip_seconds or EVENT_WINDOW_SECONDS
        window = min(EVENT_WINDOW_SECONDS, clip)
        hop = hop if hop is not None else min(EVENT_HOP_SECONDS, window)
    runner = InferenceRunner(model, mode="scores", window=window, hop=hop, **runner_kwargs)
    for result in runner.iter_results(paths):
        yield result, events_from_result(result, model.label_names, settings)


# -- writing and reading -----------------------------------------------------------------------------------------------
EVENT_COLUMNS = ("path", "onset", "offset", "label", "score")


def render_events(files: Iterable[tuple[FileResult, list[Event]]], format: str) -> Iterator[str]:
    """Text chunks (``jsonl``: an object per event, ``{"path", "error"}`` per failed file; ``csv``: ``path, onset,
    offset, label, score`` rows; ``table``: per file, its events), one chunk per file."""
    if format not in ("jsonl", "csv", "table"):
        raise ValueError(f"events are written as jsonl, csv or table, got {format!r}")
    if format == "csv":
        yield ",".join(EVENT_COLUMNS) + ",error\n"
    for result, events in files:
        out = io.StringIO()
        if format == "jsonl":
            if not result.ok:
                out.write(json.dumps({"path": result.path, "error": result.error}) + "\n")
            for event in events:
                out.write(json.dumps({"path": result.path, **event.to_dict()}, allow_nan=False) + "\n")
        elif format == "csv":
            writer = csv.writer(out, lineterminator="\n")
            if not result.ok:
                writer.writerow([result.path, "", "", "", "", result.error])
            for e in events:
                writer.writerow([result.path, f"{e.onset:.6g}", f"{e.offset:.6g}", e.label, f"{e.score:.6f}", ""])
        else:
            duration = f"{result.duration:.2f} s" if result.duration is not None else "?"
            out.write(f"{result.path}  ({duration}, {len(events)} events)\n")
            if not result.ok:
                out.write(f"  ERROR {result.error}\n")
            for e in events:
                out.write(f"  {e.onset:9.2f} - {e.offset:9.2f}  {e.score:.2f}  {e.label}\n")
        yield out.getvalue()


def read_events(path: str | os.PathLike[str]) -> dict[str, list[tuple[float, float, str]]]:
    """Events per audio file from ``path``: our ``--events`` output (jsonl or csv) or a DCASE-style table (tab- or
    comma-separated, a header naming ``filename``/``path``, ``onset``, ``offset`` and ``event_label``/``label``).
    Files are keyed by their base name, as DCASE references name them. Rows without a label (a file with no events
    in a DCASE reference, or a failed file) only register the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise ValueError(f"{path}: {reason}") from None
    rows: list[dict[str, Any]] = []
    stripped = text.lstrip()
    if stripped.startswith("{"):
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{number}: not a JSON object ({err.msg})") from None
    else:
        first = text.splitlines()[0] if text else ""
        delimiter = "\t" if "\t" in first else ","
        rows = list(csv.DictReader(io.StringIO(text), delimiter=delimiter))
    events: dict[str, list[tuple[float, float, str]]] = {}
    for number, row in enumerate(rows, 2):
        if not isinstance(row, dict):
            raise ValueError(f"{path}: row {number - 1} is not an object")
        name = row.get("filename", row.get("path"))
        if not name:
            raise ValueError(f"{path}: row {number - 1} has no filename/path column (columns: {', '.join(row)})")
        key = Path(str(name)).name
        bucket = events.setdefault(key, [])
        label = row.get("event_label", row.get("label"))
        if label in (None, ""):
            continue
        try:
            onset, offset = float(row["onset"]), float(row["offset"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{path}: row {number - 1} ({key}) needs numeric onset and offset") from None
        if not (math.isfinite(onset) and math.isfinite(offset) and 0 <= onset < offset):
            raise ValueError(f"{path}: row {number - 1} ({key}): onset {onset} / offset {offset} is no event")
        bucket.append((onset, offset, str(label)))
    return events


# -- scoring -----------------------------------------------------------------------------------------------------------
def _binary_scores(events: list[tuple[float, float, str]], duration: float, classes: Sequence[str]) -> Any:
    """Hard detections as sed_scores_eval scores: 1 inside an event, 0 elsewhere, on the events' boundaries."""
    from sed_scores_eval.base_modules.scores import create_score_dataframe

    bounds = np.unique(np.array([0.0, duration, *[t for e in events for t in e[:2]]], dtype=np.float64))
    bounds = bounds[bounds <= duration]
    middles = (bounds[:-1] + bounds[1:]) / 2
    scores = np.zeros((len(middles), len(classes)))
    index = {c: i for i, c in enumerate(classes)}
    for onset, offset, label in events:
        if label in index:
            scores[(middles > onset) & (middles < offset), index[label]] = 1.0
    return create_score_dataframe(scores, bounds, list(classes))


def evaluate_events(
    predicted: Mapping[str, list[tuple[float, float, str]]],
    reference: Mapping[str, list[tuple[float, float, str]]],
    durations: Mapping[str, float] | None = None,
    *,
    collar: float = 0.2,
    offset_collar_rate: float = 0.2,
    segment_length: float = 1.0,
    dtc_threshold: float = 0.7,
    gtc_threshold: float = 0.7,
    alpha_ct: float = 0.0,
    alpha_st: float = 1.0,
    max_efpr: float = 100.0,
) -> dict[str, Any]:
    """Score predicted against reference events with sed_scores_eval; events are ``(onset, offset, label)`` per file.

    - ``event_f1``: collar-based F-score (DCASE: onset collar ``collar``, offset collar the larger of ``collar`` and
      ``offset_collar_rate`` times the reference event's length), micro (over all events) and macro (class mean), with
      precision and recall.
    - ``segment_f1``: segment-based F-score on ``segment_length`` s segments, micro and macro.
    - ``psds``: the polyphonic sound detection score (Bilen et al. 2020; DCASE 2021-2023 scenario 1 defaults
      dtc = gtc = 0.7, alpha_ct 0, alpha_st 1, up to ``max_efpr`` false positives per hour). Hard detections are one
      operating point of its ROC, so this is the area under a single step: use it to compare systems decoded alike.

    Classes are the reference's; predictions of other classes are counted in ``unscored_events`` (sed_scores_eval
    needs reference events of every class it scores). Files are the reference's: ``durations`` (seconds) gives their
    lengths, by default the last reference or predicted offset of each file; predictions for files the reference
    does not list are refused.
    """
    with warnings.catch_warnings():  # dcase_util's import of pkg_resources warns of its removal, on every import
        warnings.simplefilter("ignore", UserWarning)
        from sed_scores_eval import collar_based, intersection_based, segment_based

    if not reference:
        raise ValueError("the reference has no files")
    extra = sorted(set(predicted) - set(reference))
    if extra:
        raise ValueError(f"predictions for files the reference does not list: {', '.join(extra[:5])}"
                         + (" ..." if len(extra) > 5 else ""))  # fmt: skip
    classes = sorted({label for evs in reference.values() for _, _, label in evs})
    if not classes:
        raise ValueError("the reference has no events")
    lengths: dict[str, float] = {}
    for name in reference:
        ends = [off for _, off, _ in [*reference[name], *predicted.get(name, [])]]
        given = (durations or {}).get(name)
        lengths[name] = float(given) if given is not None else max(ends, default=0.0)
        if lengths[name] <= 0:
            raise ValueError(f"{name}: no duration (give durations, or the file has no events to bound it)")
    unscored = sum(1 for evs in predicted.values() for e in evs if e[2] not in classes)
    scores = {name: _binary_scores(predicted.get(name, []), lengths[name], classes) for name in reference}
    truth = {name: [(on, off, lab) for on, off, lab in evs] for name, evs in reference.items()}
    f, p, r, _ = collar_based.fscore(scores, truth, threshold=0.5, onset_collar=collar, offset_collar=collar,
                                     offset_collar_rate=offset_collar_rate)  # fmt: skip
    sf, sp, sr, _ = segment_based.fscore(scores, truth, lengths, threshold=0.5, segment_length=segment_length)
    psds = intersection_based.psds(scores, truth, lengths, dtc_threshold=dtc_threshold, gtc_threshold=gtc_threshold,
                                   cttc_threshold=None, alpha_ct=alpha_ct, alpha_st=alpha_st, unit_of_time="hour",
                                   max_efpr=max_efpr)[0]  # fmt: skip

    def block(fs: Mapping[str, Any], ps: Mapping[str, Any], rs: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "micro": {"f1": float(fs["micro_average"]), "precision": float(ps["micro_average"]),
                      "recall": float(rs["micro_average"])},
            "macro": {"f1": float(fs["macro_average"]), "precision": float(ps["macro_average"]),
                      "recall": float(rs["macro_average"])},
            "per_class": {c: {"f1": float(fs[c]), "precision": float(ps[c]), "recall": float(rs[c])}
                          for c in classes},
        }  # fmt: skip

    return {
        "event_f1": block(f, p, r),
        "segment_f1": block(sf, sp, sr),
        "psds": float(psds),
        "settings": {"collar": collar, "offset_collar_rate": offset_collar_rate, "segment_length": segment_length,
                     "dtc_threshold": dtc_threshold, "gtc_threshold": gtc_threshold, "alpha_ct": alpha_ct,
                     "alpha_st": alpha_st, "max_efpr": max_efpr},
        "files": len(reference),
        "classes": classes,
        "unscored_events": unscored,
    }  # fmt: skip
