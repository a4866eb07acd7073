"""Batching: windows of equal length from any files, grouped into batches for the backend.

Only windows of the same length share a batch, so nothing is padded and a window's result never depends on what it
was batched with. ``Batcher`` only groups; running the batches is the forward stage's job.
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from dataclasses import dataclass

import torch


@dataclass
class Batch:
    """Windows to run together: ``owners[i]`` is ``(file key, window number)`` of row ``i`` of ``stack()``."""

    owners: list[tuple[Hashable, int]]
    windows: list[torch.Tensor]

    def stack(self, pin: bool) -> torch.Tensor:
        if self.windows[0].device.type == "cpu":
            out = torch.empty((len(self.windows), self.windows[0].shape[-1]), pin_memory=pin)
            return torch.stack(self.windows, out=out)
        return torch.stack(self.windows)


class Batcher:
    """Queues windows by length; a queue that reaches ``batch_size`` is handed out as ``split`` batches (one per CPU
    stream, so that a run of a batch or two does not leave all streams but one idle)."""

    def __init__(self, batch_size: int, split: int = 1):
        self.batch_size = batch_size
        self.split = split
        self._queues: dict[int, list[tuple[Hashable, int, torch.Tensor]]] = {}

    def __len__(self) -> int:
        return sum(len(q) for q in self._queues.values())

    def add(self, key: Hashable, window_index: int, samples: torch.Tensor) -> list[Batch]:
        """Queue one window; returns the batches that became full (usually none)."""
        length = samples.shape[-1]
        queue = self._queues.setdefault(length, [])
        queue.append((key, window_index, samples))
        if len(queue) >= self.batch_size:
            return self._take(length, spread=False)
        return []

    def drain(self, spread: bool = False) -> list[Batch]:
        """Every queued window, in batches. ``spread``: the run's last, partial batches, shared out so that every CPU
        stream takes part."""
        batches: list[Batch] = []
        for length in list(self._queues):
            batches.extend(self._take(length, spread))
        return batches

    def discard(self, key: Hashable) -> None:
        """Drop the queued windows of one file (it failed mid-stream)."""
        for length, queue in list(self._queues.items()):
            self._queues[length] = [entry for entry in queue if entry[0] != key]

    def _take(self, length: int, spread: bool) -> list[Batch]:
        items = self._queues.pop(length, [])
        size = math.ceil(self.batch_size / self.split)
        if spread:
            size = min(size, math.ceil(len(items) / self.split))
        return [
            Batch([(k, w) for k, w, _ in items[i : i + size]], [s for _, _, s in items[i : i + size]])
            for i in range(0, len(items), size)
        ]
