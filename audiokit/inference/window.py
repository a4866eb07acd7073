"""Windowing: which spans of a signal the model sees, for a signal in memory or one arriving block by block."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from ..audio.windows import window_starts

# Whole files longer than this many training clips are windowed automatically (a one-hour file through a CNN in one
# piece needs gigabytes of activations).
AUTO_WINDOW_CLIPS = 10
# Window for streamed files of models that name no clip length (wav2vec2 ASR weights): attention over a whole hour
# would not fit in memory.
STREAM_WINDOW_SECONDS = 30.0


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


@dataclass(frozen=True)
class Windowing:
    """The caller's window and hop (seconds, or None) and the model's limits, turned into spans in samples.

    ``max_samples``: a fixed-input model's input (longer files are cut into windows of it, or its end would be
    dropped); ``clip_seconds``: the training clip, whose multiple ``AUTO_WINDOW_CLIPS`` is the longest file run whole;
    ``stream_seconds``: files longer than this arrive block by block and are always windowed.
    """

    sample_rate: int
    window: float | None
    hop: float | None
    max_samples: int | None
    clip_seconds: float | None
    stream_seconds: float

    def plan(self, n: int, warnings: list[str], streamed: bool = False) -> tuple[int, int] | None:
        """``(window, hop)`` in samples for a signal of ``n`` samples, or None to run it whole; says why in
        ``warnings`` where the caller asked for no window."""
        rate = self.sample_rate
        if self.window is not None:
            window = max(1, round(self.window * rate))
            return window, max(1, round((self.hop or self.window) * rate))
        if self.max_samples is not None and n > self.max_samples:
            # A fixed-length model would silently drop the rest of the file.
            window = self.max_samples
            warnings.append(f"longer than the model's {window / rate:g} s input: tagged in windows of that length")
            return window, window
        clip = self.clip_seconds
        if clip and n > AUTO_WINDOW_CLIPS * clip * rate:
            warnings.append(f"longer than {AUTO_WINDOW_CLIPS * clip:g} s: tagged in {clip:g} s windows")
            return round(clip * rate), round(clip * rate)
        if streamed:
            seconds = clip or STREAM_WINDOW_SECONDS
            warnings.append(f"longer than {self.stream_seconds:g} s: processed in {seconds:g} s windows")
            return round(seconds * rate), round(seconds * rate)
        return None

    def spans(self, n: int, warnings: list[str]) -> list[tuple[int, int]]:
        """``(start, end)`` sample spans of a signal of ``n`` samples held in memory."""
        # Only audio handed over in memory is held whole past stream_seconds; it gets the windows the same audio
        # streamed from a file would.
        plan = self.plan(n, warnings, streamed=n > self.stream_seconds * self.sample_rate)
        if plan is None:
            return [(0, n)]
        window, hop = plan
        return [(s, min(n, s + window)) for s in window_starts(n, window, hop)]
