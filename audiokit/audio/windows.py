"""Where windows over a signal start: shared by the inference runner (files) and the models' tensor API (clips longer
than a fixed-input model's input), so that both see a long signal in the same pieces."""

from __future__ import annotations


def window_starts(num_samples: int, window: int, hop: int) -> list[int]:
    """Start samples of full windows covering the signal; the last window is aligned to the end, never padded."""
    if num_samples <= window:
        return [0]
    starts = list(range(0, num_samples - window + 1, hop))
    if starts[-1] + window < num_samples:
        starts.append(num_samples - window)
    return starts
