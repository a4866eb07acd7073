"""Embeddings written as they are computed: a directory of ``.npy`` shards and a JSONL index, resumable, read lazily.

Layout of an output directory::

    DIR/index.jsonl         {"header": {...}}, then one record per file, in input order:
                            {"path", "size", "mtime_ns", "duration", "error", "warnings", "shard", "row", "rows",
                             "starts", "ends"}
    DIR/shard-000000.npy    float32 (rows, dim): the rows of the files recorded with "shard": 0, from "row" on

The commit protocol: a shard is written whole (a temporary file renamed into place) before the index records of the
files it holds are appended, each in one ``write``; a record in the index is the mark that its file is done. A run
killed at any moment leaves complete shards, and an index whose last line may be torn. ``--resume`` drops that line,
deletes shards no record points to (written just before the kill), skips the files recorded with the size and mtime
they still have, and redoes the rest; a redone file's new record supersedes its old one (readers take the last).

Rows wait in memory until ``shard_rows`` of them (or ``flush_seconds``) have gathered, so a kill loses at most that
much work and memory stays bounded; a file with more rows than ``shard_rows`` (frame embeddings of an hour) gets a
shard of its own.

:func:`open_embeddings` reads a directory lazily: the ids, times and sources of every row from the index, and the
matrix as a :class:`ShardedRows` over memory-mapped shards (indexing reads only the rows asked for).
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._fileio import OutputPathError, OutputWriteError, _write_all, atomic_write
from .sinks import ResumeError, _header_mismatch, _lock, jsonl_line, unchanged_since

_logger = logging.getLogger(__name__)

EMBED_FORMAT = "audiokit.embed/1"
INDEX_NAME = "index.jsonl"
SHARD_ROWS = 8192
FLUSH_SECONDS = 30.0
_SHARD_NAME = re.compile(r"shard-(\d{6,})\.npy")


def shard_name(number: int) -> str:
    return f"shard-{number:06d}.npy"


def row_ids(path: str, starts: Sequence[float], ends: Sequence[float], kind: str) -> list[str]:
    """Row ids as ``embed`` gives them: the path (one row per clip), ``path@start-end`` (windows), ``path@start``
    (frames)."""
    if kind == "clip":
        return [path] * len(starts)
    if kind == "window":
        return [f"{path}@{s:.3f}-{e:.3f}" for s, e in zip(starts, ends)]
    return [f"{path}@{s:.3f}" for s in starts]


@dataclass
class _Recorded:
    size: int | None
    mtime_ns: int | None
    failed: bool


class EmbeddingShardWriter:
    """Writes a shard directory (see the module docstring); ``resume=True`` continues one.

    Without ``resume`` a directory that already holds an index is refused, not replaced. ``skip(path)`` says whether a
    file is already there unchanged; ``add(record, rows)`` queues a file's rows; ``finish()`` writes what is queued.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        header: dict[str, Any],
        *,
        resume: bool = False,
        shard_rows: int = SHARD_ROWS,
        flush_seconds: float = FLUSH_SECONDS,
    ):
        if shard_rows < 1:
            raise ValueError(f"shard_rows must be at least 1, got {shard_rows}")
        self.directory = Path(directory)
        self.header = header
        self.shard_rows = shard_rows
        self.flush_seconds = flush_seconds
        self.skipped = 0
        self.earlier_errors = 0
        self.written = 0
        self._recorded: dict[str, _Recorded] = {}
        self._pending: list[tuple[dict[str, Any], np.ndarray]] = []
        self._pending_rows = 0
        self._last_flush = time.monotonic()
        self._dim: int | None = None
        self._next_shard = 0
        index = self.directory / INDEX_NAME
        if self.directory.exists() and not self.directory.is_dir():
            raise OutputPathError(f"--output {self.directory}: not a directory")
        if index.exists() and index.stat().st_size and not resume:
            raise OutputPathError(f"--output {self.directory} already holds embeddings ({INDEX_NAME}): --resume "
                                  "continues it, or remove it to start afresh")  # fmt: skip
        self.directory.mkdir(parents=True, exist_ok=True)
        try:
            self._fd: int | None = os.open(index, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o666)
        except OSError as err:
            raise OutputWriteError(f"could not write {index}: {err.strerror or err}") from None
        try:
            _lock(self._fd, str(self.directory))
            if not self._load(index):
                os.ftruncate(self._fd, 0)
                self._append(jsonl_line({"header": header}))
            self._remove_orphans()
        except BaseException:
            os.close(self._fd)
            self._fd = None
            raise

    # -- what is there already ------------------------------------------------------------------------------------
    def _load(self, index: Path) -> bool:
        """Read the index; cut a torn last line off. False when there is nothing to continue (start afresh)."""
        data = index.read_bytes()
        end = data.find(b"\n")
        if end < 0:
            return False  # empty, or killed while writing the header
        try:
            found = json.loads(data[:end])["header"]
        except (ValueError, KeyError, TypeError):
            raise ResumeError(f"--resume: {index} does not start with an audiokit embedding header") from None
        message = _header_mismatch(self.directory, found if isinstance(found, dict) else {}, self.header)
        if message:
            raise ResumeError(message)
        committed = end + 1
        number = 1
        while committed < len(data):
            end = data.find(b"\n", committed)
            if end < 0:
                break
            number += 1
            try:
                record = json.loads(data[committed:end])
                path = record["path"]
            except (ValueError, KeyError, TypeError):
                raise ResumeError(f"--resume: {index} line {number} is no embedding record; the file was changed "
                                  "by something other than audiokit") from None  # fmt: skip
            self._recorded[path] = _Recorded(record.get("size"), record.get("mtime_ns"), bool(record.get("error")))
            if record.get("shard") is not None:
                self._next_shard = max(self._next_shard, int(record["shard"]) + 1)
            committed = end + 1
        if committed < len(data):
            _logger.warning("%s: dropped an incomplete last record (%d bytes) left by an interrupted run", index,
                            len(data) - committed)  # fmt: skip
            os.ftruncate(self._fd, committed)
        return True

    def _remove_orphans(self) -> None:
        """Shards numbered at or past the next one were written by a run killed before it recorded them."""
        for entry in self.directory.iterdir():
            match = _SHARD_NAME.fullmatch(entry.name)
            if match and int(match.group(1)) >= self._next_shard:
                _logger.info("%s: removing %s, which no record points to (an interrupted run)", self.directory,
                             entry.name)  # fmt: skip
                entry.unlink()

    def skip(self, path: Path) -> bool:
        entry = self._recorded.get(str(path))
        if entry is None:
            return False
        if unchanged_since(path, entry.size, entry.mtime_ns):
            self.skipped += 1
            self.earlier_errors += entry.failed
            return True
        return False

    # -- the run --------------------------------------------------------------------------------------------------
    def add(self, record: dict[str, Any], rows: np.ndarray) -> None:
        """Queue one file: ``record`` (path, size, mtime_ns, duration, error, warnings, starts, ends) and its rows
        ``(n, dim)`` (``n`` may be 0, for a failed file)."""
        rows = np.ascontiguousarray(rows, dtype=np.float32)
        if rows.ndim != 2 or rows.shape[0] != len(record["starts"]):
            raise ValueError(f"{record['path']}: {rows.shape} rows for {len(record['starts'])} times")
        if rows.shape[0]:
            if self._dim is None:
                self._dim = rows.shape[1]
            elif rows.shape[1] != self._dim:
                raise ValueError(f"{record['path']}: rows of dimension {rows.shape[1]}, the others {self._dim}")
            if self._pending_rows and self._pending_rows + rows.shape[0] > self.shard_rows:
                self._flush()
        self._pending.append((record, rows))
        self._pending_rows += rows.shape[0]
        # A failed file has no rows to wait for: recorded at once, unless it queues behind rows (input order).
        if (
            self._pending_rows >= self.shard_rows
            or self._pending_rows == 0
            or time.monotonic() - self._last_flush >= self.flush_seconds
        ):
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        number = None
        if self._pending_rows:
            number = self._next_shard
            matrix = np.concatenate([rows for _, rows in self._pending if rows.shape[0]])
            target = self.directory / shard_name(number)
            buffer = _npy_bytes(matrix)
            try:
                atomic_write(target, buffer)
            except OSError as err:
                raise OutputWriteError(f"could not write {target}: {err.strerror or err}") from None
            self._next_shard += 1
        row = 0
        for record, rows in self._pending:
            placed = {**record, "shard": number if rows.shape[0] else None, "row": row, "rows": rows.shape[0]}
            row += rows.shape[0]
            self._append(jsonl_line(placed))
            self.written += 1
        self._pending, self._pending_rows = [], 0
        self._last_flush = time.monotonic()

    def _append(self, text: str) -> None:
        try:
            _write_all(self._fd, text.encode("utf-8", "surrogateescape"))
        except OSError as err:
            raise OutputWriteError(f"could not write {self.directory / INDEX_NAME}: {err.strerror or err}") from None

    def finish(self) -> None:
        self._flush()
        if self._fd is not None:
            try:
                os.fsync(self._fd)
            except OSError as err:
                index = self.directory / INDEX_NAME
                raise OutputWriteError(f"could not write {index}: {err.strerror or err}") from None

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
        self._fd = None


def _npy_bytes(matrix: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, matrix, allow_pickle=False)
    return buffer.getvalue()


# -- reading ---------------------------------------------------------------------------------------------------------
class ShardedRows:
    """The rows of a shard directory as one ``(N, dim)`` float32 matrix, without loading it: each shard is
    memory-mapped and ``rows[i]``, ``rows[a:b]`` or ``rows[[i, j]]`` read only what they select. ``np.asarray(rows)``
    loads it all."""

    def __init__(self, shards: list[np.ndarray], shard_of_row: np.ndarray, row_in_shard: np.ndarray, dim: int):
        self._shards = shards
        self._shard_of_row = shard_of_row
        self._row_in_shard = row_in_shard
        self.shape = (len(shard_of_row), dim)
        self.dtype = np.dtype(np.float32)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, tuple):  # rows, then columns of what they give
            picked = self[key[0]]
            return picked[key[1:]] if picked.ndim == 1 else picked[(slice(None), *key[1:])]
        selected = self._select(key)
        if np.ndim(selected) == 0:
            i = int(selected)
            return np.array(self._shards[self._shard_of_row[i]][self._row_in_shard[i]])
        out = np.empty((len(selected), self.shape[1]), np.float32)
        shard_ids = self._shard_of_row[selected]
        for shard in np.unique(shard_ids):
            where = np.nonzero(shard_ids == shard)[0]
            out[where] = self._shards[shard][self._row_in_shard[selected[where]]]
        return out

    def _select(self, key: Any) -> Any:
        return np.arange(self.shape[0])[key]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        whole = self[:]
        return whole if dtype is None else whole.astype(dtype)

    def __repr__(self) -> str:
        return f"ShardedRows(shape={self.shape}, shards={len(self._shards)})"


@dataclass
class EmbeddingStore:
    """A shard directory opened by :func:`open_embeddings`: per row its ``ids``, ``paths``, ``starts`` and ``ends``;
    ``vectors`` the lazy matrix; ``errors`` per failed file; ``header`` the model and settings it was written with."""

    ids: list[str]
    paths: list[str]
    starts: np.ndarray
    ends: np.ndarray
    vectors: ShardedRows
    errors: dict[str, str]
    header: dict[str, Any]
    files: dict[str, slice] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)

    def rows_of(self, path: str) -> np.ndarray:
        """The rows of one file (as recorded: the path as it was given)."""
        if path not in self.files:
            raise KeyError(f"{path}: not in this embedding directory")
        return self.vectors[self.files[path]]


def open_embeddings(directory: str | os.PathLike[str]) -> EmbeddingStore:
    """Open a directory written by ``audiokit embed --output DIR/`` (or :func:`audiokit.embed_to`) for reading.

    Rows come in the order the files were recorded; a file recorded twice (redone by a resumed run because it had
    changed) appears once, with its last record. A torn last index line (a run still going, or killed) is ignored.
    """
    directory = Path(directory)
    index = directory / INDEX_NAME
    try:
        data = index.read_bytes()
    except OSError as err:
        raise ValueError(f"{directory}: no embedding index ({INDEX_NAME}: {err.strerror or err})") from None
    lines = data.split(b"\n")
    if data and not data.endswith(b"\n"):
        lines = lines[:-1]  # torn
    lines = [line for line in lines if line.strip()]
    try:
        header = json.loads(lines[0])["header"]
        if header.get("format") != EMBED_FORMAT:
            raise ValueError
    except (IndexError, ValueError, KeyError, TypeError, AttributeError):
        raise ValueError(f"{index}: not an audiokit embedding index (no {EMBED_FORMAT} header)") from None
    records: dict[str, dict[str, Any]] = {}
    for number, line in enumerate(lines[1:], 2):
        try:
            record = json.loads(line)
            path = record["path"]
        except (ValueError, KeyError, TypeError):
            raise ValueError(f"{index}:{number}: not an embedding record") from None
        records.pop(path, None)  # a later record of the same file supersedes it, and takes its place in the order
        records[path] = record
    kind = "frame" if (header.get("settings") or {}).get("frame_level") else (
        "window" if (header.get("settings") or {}).get("window") is not None else "clip")  # fmt: skip
    shards: dict[int, np.ndarray] = {}
    ids: list[str] = []
    paths: list[str] = []
    starts: list[float] = []
    ends: list[float] = []
    shard_of_row: list[np.ndarray] = []
    row_in_shard: list[np.ndarray] = []
    errors: dict[str, str] = {}
    files: dict[str, slice] = {}
    dim = None
    for path, record in records.items():
        if record.get("error"):
            errors[path] = record["error"]
        count = int(record.get("rows") or 0)
        if not count:
            continue
        number = int(record["shard"])
        if number not in shards:
            shard_path = directory / shard_name(number)
            try:
                shards[number] = np.load(shard_path, mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError) as err:
                raise ValueError(f"{shard_path}: {getattr(err, 'strerror', None) or err}") from None
            if shards[number].ndim != 2 or (dim is not None and shards[number].shape[1] != dim):
                raise ValueError(f"{shard_path}: shape {shards[number].shape} does not fit the other shards")
            dim = shards[number].shape[1]
        first = int(record["row"])
        if first + count > shards[number].shape[0] or len(record["starts"]) != count:
            raise ValueError(f"{index}: the record of {path} points past the end of {shard_name(number)}")
        files[path] = slice(len(ids), len(ids) + count)
        ids += row_ids(path, record["starts"], record["ends"], kind)
        paths += [path] * count
        starts += record["starts"]
        ends += record["ends"]
        shard_of_row.append(np.full(count, number, np.int64))
        row_in_shard.append(np.arange(first, first + count, dtype=np.int64))
    numbers = sorted(shards)
    position = np.zeros(max(numbers, default=-1) + 1, np.int64)  # shard number -> its place in the list
    position[numbers] = np.arange(len(numbers))
    shard_index = np.concatenate(shard_of_row) if shard_of_row else np.zeros(0, np.int64)
    vectors = ShardedRows(
        [shards[n] for n in numbers],
        position[shard_index],
        np.concatenate(row_in_shard) if row_in_shard else np.zeros(0, np.int64),
        dim or 0,
    )
    return EmbeddingStore(ids, paths, np.asarray(starts, np.float64), np.asarray(ends, np.float64), vectors, errors,
                          header, files)  # fmt: skip
