"""What the runner hands back: one ``FileResult`` per input file, with a ``Segment`` per window."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Segment:
    """One window of a file: ``start``/``end`` in seconds, ``scores`` per class (or an embedding)."""

    start: float
    end: float
    values: np.ndarray


@dataclass
class FileResult:
    """Per-file outcome. ``values`` is the clip-level score vector (tagging) or embedding; ``segments`` the windows.

    ``size`` and ``mtime_ns`` are the file's as it was read (None when it could not be), so that a resumed run can
    tell a file it already has from one that changed since.
    """

    path: str
    duration: float | None = None
    values: np.ndarray | None = None
    segments: list[Segment] = field(default_factory=list)
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    size: int | None = None
    mtime_ns: int | None = None

    @property
    def ok(self) -> bool:
        return self.error is None
