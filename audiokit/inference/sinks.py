"""Sinks: tagging records, their formats, and the files they are written to.

Whole-output formats (``table``, ``json``) are rendered at the end and written atomically by the caller. The line
formats (``jsonl``, ``csv``) are written record by record as files finish, each record in one ``write`` on an
unbuffered descriptor, so a reader sees the file grow and a killed run leaves complete records (a record torn by a
kill mid-write is the file's last line; resuming drops it).

A regular output file carries a header that names the model, its weights and every setting that changes the scores;
``--resume`` refuses an output whose header differs. JSONL: the header is the first line, ``{"header": {...}}``
(skip it with ``tail -n +2``). CSV: the header is a sidecar, ``OUT.csv.header.json``, written before the CSV, so the
CSV itself stays plain for every CSV reader; each file's rows end with a ``scope=file`` row (its duration, error,
size and mtime), which is the record's commit mark. Standard output, pipes and devices get the records without a
header and cannot be resumed.

The resume ledger is one entry per file already in the output (its path as recorded, size and mtime): a file whose
size or mtime changed is redone and its old record dropped when the run ends; one whose name cannot be read any more
stays as recorded.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._fileio import STDOUT, OutputPathError, OutputWriteError, _descriptor, _write_all, atomic_write, write_output
from .aggregate import top_k
from .results import FileResult

_logger = logging.getLogger(__name__)

LINE_FORMATS = ("jsonl", "csv")
CSV_COLUMNS = ["path", "scope", "start", "end", "rank", "label", "score", "error", "size", "mtime_ns"]
HEADER_FORMAT = "audiokit.tag/1"
# Header entries that must match for --resume: they decide which scores a record holds.
_COMPARED = ("format", "model", "weights_sha256", "labels_sha256", "settings")


class ResumeError(ValueError):
    """An output that ``--resume`` cannot continue (another model or settings, not an audiokit output); one line."""


# -- records -------------------------------------------------------------------------------------------------------
def tag_record(result: FileResult, names: Sequence[str], k: int, threshold: float | None) -> dict[str, Any]:
    """The record of one file: path, duration, clip labels, windows, error, warnings, and the file's size and mtime
    (as read) for resuming."""

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
        "size": result.size,
        "mtime_ns": result.mtime_ns,
    }


def jsonl_line(record: dict[str, Any]) -> str:
    # allow_nan=False: NaN and Infinity are not JSON (RFC 8259); non-finite scores are already per-file errors.
    return json.dumps(record, allow_nan=False) + "\n"


def csv_rows(record: dict[str, Any]) -> str:
    """One file's CSV rows: its clip labels, its windows' labels, then the ``file`` row that closes the record."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    path = record["path"]
    if not record["error"]:
        for rank, item in enumerate(record["labels"], 1):
            writer.writerow([path, "clip", 0.0, f"{record['duration']:.6g}", rank, item["label"],
                             f"{item['score']:.6f}", "", "", ""])  # fmt: skip
        for window in record["windows"]:
            for rank, item in enumerate(window["labels"], 1):
                writer.writerow([path, "window", window["start"], window["end"], rank, item["label"],
                                 f"{item['score']:.6f}", "", "", ""])  # fmt: skip
    duration = "" if record["duration"] is None else f"{record['duration']:.6g}"
    writer.writerow([path, "file", 0.0 if duration else "", duration, "", "", "", record["error"] or "",
                     _blank(record.get("size")), _blank(record.get("mtime_ns"))])  # fmt: skip
    return buffer.getvalue()


def _blank(value: Any) -> Any:
    return "" if value is None else value


def csv_column_row() -> str:
    return ",".join(CSV_COLUMNS) + "\n"


def render_tags(records: list[dict[str, Any]], fmt: str) -> str:
    """All records at once: ``json`` (a list), ``jsonl``, ``csv`` (with its column row) or ``table``."""
    if fmt == "json":
        return json.dumps(records, indent=2, allow_nan=False) + "\n"
    if fmt == "jsonl":
        return "".join(map(jsonl_line, records))
    if fmt == "csv":
        return csv_column_row() + "".join(map(csv_rows, records))
    lines = []
    for r in records:
        if r["error"]:
            lines.append(f"{r['path']}\n  ERROR {r['error']}")
            continue
        lines.append(f"{r['path']}  ({r['duration']:.2f} s)")
        lines.extend(f"  {item['score']:.3f}  {item['label']}" for item in r["labels"])
        for window in r["windows"]:
            tags = ", ".join(f"{i['label']} {i['score']:.2f}" for i in window["labels"])
            lines.append(f"    [{window['start']:8.2f} - {window['end']:8.2f}] {tags}")
        lines.extend(f"  warning: {w}" for w in r["warnings"])
    return "\n".join(lines) + "\n"


# -- the header ----------------------------------------------------------------------------------------------------
def weights_sha256(model: Any) -> str:
    """sha256 over the model's state (names, dtypes, shapes and bytes, in order): the same weights however they were
    given (a name, a checkpoint file, a local directory)."""
    import torch

    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        if t.numel():
            digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def tag_header(model: Any, settings: dict[str, Any], version: str | None = None) -> dict[str, Any]:
    """What a resumed run must share with the output it continues (``settings``: every option that changes scores)."""
    labels = "\n".join(model.label_names or []).encode("utf-8", "surrogateescape")
    return {
        "format": HEADER_FORMAT,
        "model": model.pretrained_cfg.name,
        "weights_sha256": weights_sha256(model),
        "labels_sha256": hashlib.sha256(labels).hexdigest(),
        "settings": settings,
        "audiokit": version,
    }


def _header_mismatch(path: Path, found: dict[str, Any], wanted: dict[str, Any]) -> str | None:
    diffs = []
    for key in _COMPARED:
        if key == "settings":
            old, new = found.get("settings") or {}, wanted["settings"]
            diffs += [f"{k} {_show(old.get(k))} (now {_show(new.get(k))})" for k in sorted(set(old) | set(new))
                      if old.get(k) != new.get(k)]  # fmt: skip
        elif found.get(key) != wanted[key]:
            what = {"weights_sha256": "other weights", "labels_sha256": "other label names"}.get(key)
            diffs.append(what or f"{key} {_show(found.get(key))} (now {_show(wanted[key])})")
    if not diffs:
        return None
    return (f"--resume: {path} was written with {', '.join(diffs)}; rerun with the recorded model and settings, or "
            "write to a new --output")  # fmt: skip


def _show(value: Any) -> str:
    return "none" if value is None else json.dumps(value)


# -- streamed sinks ------------------------------------------------------------------------------------------------
@dataclass
class _Entry:
    size: int | None
    mtime_ns: int | None
    start: int
    end: int
    failed: bool


class LineSink:
    """Records written as they come to standard output, a pipe or a device: no header, nothing to resume."""

    resumable = False

    def __init__(self, output: str | os.PathLike[str], fmt: str):
        self.output = os.fspath(output)
        self.fmt = fmt
        self.skipped = 0
        self.earlier_errors = 0
        self._fd: int | None = None
        self._own_fd = False
        if self.output != STDOUT:
            fd = _descriptor(self.output)
            if fd is None:
                try:
                    fd = os.open(self.output, os.O_WRONLY | os.O_APPEND)
                except OSError as err:
                    raise OutputWriteError(f"could not write {self.output}: {err.strerror or err}") from None
                self._own_fd = True
            self._fd = fd
        if fmt == "csv":
            self._put(csv_column_row())

    def skip(self, path: Path) -> bool:
        return False

    def write(self, record: dict[str, Any]) -> None:
        self._put(jsonl_line(record) if self.fmt == "jsonl" else csv_rows(record))

    def _put(self, text: str) -> None:
        if self._fd is None:
            write_output(STDOUT, text)
            return
        try:
            _write_all(self._fd, text.encode("utf-8", "surrogateescape"))
        except OSError as err:
            raise OutputWriteError(f"could not write {self.output}: {err.strerror or err}") from None

    def finish(self) -> None:
        pass

    def close(self) -> None:
        if self._own_fd and self._fd is not None:
            os.close(self._fd)
        self._fd = None


class ResumableFile(LineSink):
    """A regular file that takes records as they come, behind a header; ``resume=True`` continues an existing one.

    Without ``resume``, an existing non-empty file is refused rather than replaced (it may hold hours of results).
    With it, the header must match, a torn last record is cut off, and ``skip(path)`` says which inputs are already
    there, unchanged. ``finish()`` drops the records that were redone (the file changed), so the file ends as an
    uninterrupted run would leave it: each file once.
    """

    resumable = True

    def __init__(self, output: str | os.PathLike[str], fmt: str, header: dict[str, Any], *, resume: bool):
        self.output = os.fspath(output)
        self.fmt = fmt
        self.path = Path(os.path.realpath(self.output))  # a symlink is followed: its target takes the records
        self.header = header
        self.skipped = 0
        self.earlier_errors = 0
        self._ledger: dict[str, _Entry] = {}
        self._superseded: list[tuple[int, int]] = []
        self._own_fd = True
        self.sidecar = self.path.with_name(self.path.name + ".header.json")
        size = self.path.stat().st_size if self.path.exists() else 0
        if size and not resume:
            raise OutputPathError(
                f"--output {self.output} already exists: --resume continues it, or remove it to start afresh"
            )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o666)
        except OSError as err:
            raise OutputWriteError(f"could not write {self.output}: {err.strerror or err}") from None
        try:
            _lock(self._fd, self.output)
            committed = self._load() if size else 0
            if committed == 0:
                self._start()
        except BaseException:
            os.close(self._fd)
            self._fd = None
            raise

    # Reading what is there.
    def _load(self) -> int:
        """Read the ledger; cut a torn tail off. Returns the committed length (0: nothing usable, start afresh)."""
        with open(self.path, "rb") as f:
            data = f.read()
        committed = self._load_jsonl(data) if self.fmt == "jsonl" else self._load_csv(data)
        if committed < len(data):
            if committed:
                _logger.warning("%s: dropped an incomplete last record (%d bytes) left by an interrupted run",
                                self.output, len(data) - committed)  # fmt: skip
            os.ftruncate(self._fd, committed)
        if self._ledger:
            _logger.info("%s: %d file(s) already done", self.output, len(self._ledger))
        return committed

    def _load_jsonl(self, data: bytes) -> int:
        end = data.find(b"\n")
        if end < 0:
            return 0  # killed while writing the header
        try:
            found = json.loads(data[:end])["header"]
        except (ValueError, KeyError, TypeError):
            raise ResumeError(f"--resume: {self.output} does not start with an audiokit tag header; it is not a "
                              "--format jsonl output of audiokit tag") from None  # fmt: skip
        self._check_header(found)
        committed = end + 1
        number = 1
        while committed < len(data):
            end = data.find(b"\n", committed)
            if end < 0:
                break  # torn
            number += 1
            try:
                record = json.loads(data[committed:end])
                key = record["path"]
            except (ValueError, KeyError, TypeError):
                raise ResumeError(f"--resume: {self.output} line {number} is no tag record; the file was changed "
                                  "by something other than audiokit") from None  # fmt: skip
            self._add(key, record.get("size"), record.get("mtime_ns"), committed, end + 1, bool(record.get("error")))
            committed = end + 1
        return committed

    def _load_csv(self, data: bytes) -> int:
        try:
            found = json.loads(self.sidecar.read_text())["header"]
        except FileNotFoundError:
            raise ResumeError(f"--resume: {self.output} has no header ({self.sidecar.name} is missing); it is not a "
                              "--format csv output of audiokit tag") from None  # fmt: skip
        except (ValueError, KeyError, TypeError, OSError):
            raise ResumeError(f"--resume: {self.sidecar} is not an audiokit tag header") from None
        self._check_header(found)
        column_row = csv_column_row().encode()
        if not data.startswith(column_row):
            if column_row.startswith(data):
                return 0  # killed while writing the column row
            raise ResumeError(f"--resume: {self.output} does not start with audiokit's CSV columns")
        committed = start = len(column_row)
        for row, end in _csv_rows_with_offsets(data, start):
            if len(row) != len(CSV_COLUMNS):
                break  # a torn row can only be the last
            if row[1] == "file":
                size = int(row[8]) if row[8] else None
                mtime = int(row[9]) if row[9] else None
                self._add(row[0], size, mtime, start, end, bool(row[7]))
                committed = start = end
        return committed

    def _check_header(self, found: Any) -> None:
        message = _header_mismatch(Path(self.output), found if isinstance(found, dict) else {}, self.header)
        if message:
            raise ResumeError(message)

    def _add(self, key: str, size: Any, mtime: Any, start: int, end: int, failed: bool) -> None:
        old = self._ledger.get(key)
        if old is not None:  # written again by a resumed run that did not finish: the later record holds
            self._superseded.append((old.start, old.end))
        self._ledger[key] = _Entry(size, mtime, start, end, failed)

    def _start(self) -> None:
        os.ftruncate(self._fd, 0)
        if self.fmt == "jsonl":
            self._put(jsonl_line({"header": self.header}))
        else:
            atomic_write(self.sidecar, json.dumps({"header": self.header}, indent=2) + "\n")
            self._put(csv_column_row())

    # The run.
    def skip(self, path: Path) -> bool:
        key = str(path)
        entry = self._ledger.get(key)
        if entry is None:
            return False
        if unchanged_since(path, entry.size, entry.mtime_ns):
            self.skipped += 1
            self.earlier_errors += entry.failed
            return True
        self._superseded.append((entry.start, entry.end))
        del self._ledger[key]
        return False

    def finish(self) -> None:
        if self._fd is None:
            return
        try:
            os.fsync(self._fd)
            if self._superseded:
                self._compact()
        except OSError as err:
            raise OutputWriteError(f"could not write {self.output}: {err.strerror or err}") from None

    def _compact(self) -> None:
        """Rewrite the file without the superseded records, atomically (the old file stays until the new one is
        whole)."""
        drop = sorted(self._superseded)
        with open(self.path, "rb") as f:
            data = f.read()
        kept, at = [], 0
        for start, end in drop:
            kept.append(data[at:start])
            at = end
        kept.append(data[at:])
        atomic_write(self.path, b"".join(kept))
        self._superseded = []


def unchanged_since(path: Path, size: int | None, mtime_ns: int | None) -> bool:
    """Whether ``path`` still has the size and mtime a record gave it (a name that cannot be read any more matches a
    record that could not read it either)."""
    try:
        st = os.stat(path)
        now: tuple[int | None, int | None] = (st.st_size, st.st_mtime_ns)
    except OSError:
        now = (None, None)
    return now == (size, mtime_ns)


def _lock(fd: int, name: str) -> None:
    try:
        import fcntl
    except ImportError:  # not on POSIX: no protection against two runs on one file
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise OutputPathError(f"--output {name} is being written by another audiokit run") from None


def _csv_rows_with_offsets(data: bytes, start: int) -> Iterator[tuple[list[str], int]]:
    """CSV rows of ``data[start:]`` with the byte offset where each ends (a quoted field may hold line breaks)."""
    position = start

    def lines() -> Iterator[str]:
        nonlocal position
        while position < len(data):
            end = data.find(b"\n", position)
            if end < 0:
                return  # an unterminated last line is torn
            line = data[position : end + 1]
            position = end + 1
            yield line.decode("utf-8", "surrogateescape")

    reader = csv.reader(lines(), strict=True)
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error:
            return  # a quoted field cut off by the kill
        yield row, position


def is_file_output(output: str | os.PathLike[str]) -> bool:
    """True for an output that gets a header and can be resumed: a regular file or a new path (not ``-``, not a
    descriptor path such as ``/dev/stdout``, not a pipe or device)."""
    text = os.fspath(output)
    if text == STDOUT or _descriptor(text) is not None:
        return False
    try:
        return stat.S_ISREG(os.stat(text).st_mode)
    except OSError:
        return True


def open_tag_sink(output: str | os.PathLike[str], fmt: str, header: dict[str, Any], *, resume: bool) -> LineSink:
    """The sink for a line format: a resumable file for a regular (or new) file, a plain stream otherwise."""
    if fmt not in LINE_FORMATS:
        raise ValueError(f"records are streamed as jsonl or csv, not {fmt!r}")
    text = os.fspath(output)
    if is_file_output(text):
        return ResumableFile(text, fmt, header, resume=resume)
    if resume:
        raise ResumeError(f"--resume needs a regular --output file to continue, not {text}")
    return LineSink(text, fmt)
