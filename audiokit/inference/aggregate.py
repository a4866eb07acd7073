"""Aggregation: a file's window outputs become its result (clip scores or embedding, windows, or frames), and score
vectors become labels."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from .results import FileResult, Segment

AGGREGATES = ("max", "mean")


def finish_result(
    result: FileResult,
    spans: Sequence[tuple[int, int]],
    outputs: Sequence[np.ndarray],
    *,
    sample_rate: int,
    mode: str,
    aggregate: str,
    windowed: bool,
    peak: float | None,
) -> None:
    """Fill ``result`` from its windows' outputs: ``values`` (the one window's, or the per-class max / mean over
    windows; embeddings are always averaged), ``segments`` (when windows were asked for or there are several), or the
    error for non-finite outputs. ``peak``: the input's peak level, for the silence warning and the error message."""
    if peak == 0.0:
        result.warnings.append("the audio is digital silence")
    segments = [Segment(s / sample_rate, e / sample_rate, out) for (s, e), out in zip(spans, outputs)]
    broken = [seg for seg in segments if not np.isfinite(seg.values).all()]
    if broken:
        # NaN is no score: written out it would read as a result (and is not even valid JSON).
        what = "scores" if mode == "scores" else "embeddings"
        detail = f" in {len(broken)} of {len(segments)} windows (first at {broken[0].start:.2f} s)"
        detail = detail if len(segments) > 1 else ""
        level = f"; the input's peak level is {peak:.3g}" if peak is not None else ""
        result.error = f"{result.path}: the model produced non-finite {what} (NaN or inf){detail}{level}"
        return
    if mode == "frames":  # per-window frame matrices; nothing to aggregate
        result.segments = segments
        return
    stacked = np.stack([seg.values for seg in segments])
    if len(segments) == 1:
        result.values = stacked[0]
    elif mode == "embedding" or aggregate == "mean":
        result.values = stacked.mean(axis=0)
    else:
        result.values = stacked.max(axis=0)
    result.segments = segments if (windowed or len(segments) > 1) else []


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
