"""Writing outputs without destroying anything: atomic replacement of regular files, direct writes to everything else.

A results file is written to a temporary file beside its target and renamed over it, so a reader (or a run killed
mid-write) never sees half a file and a failed write keeps the previous file. The rename must only ever replace a
regular file: a symlink is followed (the replacement happens beside its target), and a device, FIFO or terminal
(``/dev/null``, ``/dev/stdout``, a named pipe) is written to as it is, never swapped for a plain file.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import stat
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

STDOUT = "-"


class OutputPathError(ValueError):
    """An output destination that cannot be used, found before any work is done; names the path and the reason."""


class OutputWriteError(OSError):
    """Writing results failed (disk full, permissions, ...); the message names the path and the reason."""


def _json_ready(value: Any) -> Any:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.ndarray):
        return _json_ready(value.tolist())
    if isinstance(value, dict):
        return {k if isinstance(k, str) else str(_json_ready(k)): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    return value


def to_json(value: Any, indent: int | None = None) -> str:
    """``json.dumps`` for files people and programs read: strict RFC 8259, so NaN and infinities (an undefined
    metric, say) are written as ``null`` rather than as tokens that strict parsers reject; numpy numbers as numbers."""
    return json.dumps(_json_ready(value), indent=indent, allow_nan=False)


def _umask() -> int:
    # Reading the umask without setting it is only possible through /proc; os.umask() would briefly change it for
    # every thread of the process.
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _reason(err: OSError) -> str:
    return err.strerror or str(err)


def _existing_stat(path: Path) -> os.stat_result | None:
    try:
        return path.stat()
    except FileNotFoundError:
        return None


def _resolve(path: Path) -> tuple[Path, os.stat_result | None]:
    """Where to write for ``path``, and what is there now. Something that exists is written where ``path`` leads: the
    path itself for a device or pipe (``/dev/stdout`` resolves to a ``pipe:[...]`` name that cannot be opened), the
    real file behind any symlinks for a regular file, whose replacement must happen beside it. A missing path (or a
    dangling symlink) resolves to where the file will be created."""
    st = _existing_stat(path)
    if st is not None and not stat.S_ISREG(st.st_mode):
        return path, st
    return Path(os.path.realpath(path)), st


def _nearest_existing_parent(path: Path) -> Path:
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    return parent


# Paths that name one of this process's open descriptors. Resolving them leads to the file behind the descriptor
# (replacing it would wipe a log that stdout appends to) or to "pipe:[...]", which cannot be opened: they are written
# through the descriptor itself.
_FD_PATH = re.compile(r"^/(?:dev|proc/self|proc/(?P<pid>\d+))/fd/(?P<fd>\d+)$")
_STD_PATHS = {"/dev/stdout": 1, "/dev/stderr": 2}


def _descriptor(path: str | os.PathLike[str]) -> int | None:
    text = os.fspath(path)
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    if text in _STD_PATHS:
        return _STD_PATHS[text]
    match = _FD_PATH.match(text)
    if match and (match["pid"] is None or int(match["pid"]) == os.getpid()):
        return int(match["fd"])
    return None


def check_output_path(
    path: str | os.PathLike[str], inputs: Iterable[str | os.PathLike[str]] = (), *, what: str = "output"
) -> None:
    """Refuse a destination that cannot take the results, before any work: raises ``OutputPathError``.

    Refused: an empty name, a name ending in a separator, an existing directory, a socket or block device, a path
    under a regular file, an existing file this user may not write or replace, a directory where no file can be
    created (tried, so read-only file systems are caught too), and a path that is one of ``inputs`` (the results would
    replace the audio or weights they were computed from). ``"-"``, ``/dev/stdout`` and ``/dev/fd/N`` name open
    descriptors and are accepted while those are open.
    """
    text = os.fspath(path)
    if text == STDOUT:
        return
    if not text:
        raise OutputPathError(f"{what} is empty; give a file name or - for standard output")
    given = Path(text)
    try:
        fd = _descriptor(text)
        if fd is not None:
            os.fstat(fd)  # EBADF when it is closed
            return
        if text.endswith(os.sep) and not given.is_dir():
            raise OutputPathError(f"{what} {text} names a directory; give a file name")
        target, st = _resolve(given)
        if st is not None:
            if stat.S_ISDIR(st.st_mode):
                raise OutputPathError(f"{what} {given} is a directory; give a file name")
            if stat.S_ISSOCK(st.st_mode) or stat.S_ISBLK(st.st_mode):
                kind = "a socket" if stat.S_ISSOCK(st.st_mode) else "a block device (a disk)"
                raise OutputPathError(f"{what} {given} is {kind}; refusing to write results there")
            for item in inputs:
                try:
                    other = os.stat(item)
                except OSError:
                    continue
                if (other.st_dev, other.st_ino) == (st.st_dev, st.st_ino):
                    raise OutputPathError(f"{what} {given} is also an input ({item}); writing it would destroy it")
            if not os.access(target, os.W_OK):
                raise OutputPathError(f"{what} {given}: not writable")
            if not stat.S_ISREG(st.st_mode):  # character device, FIFO, terminal: written to directly
                return
            parent_st = target.parent.stat()
            euid = os.geteuid() if hasattr(os, "geteuid") else None
            if parent_st.st_mode & stat.S_ISVTX and euid not in (0, None, st.st_uid, parent_st.st_uid):
                # In a sticky directory (/tmp) only the file's owner may replace it.
                raise OutputPathError(f"{what} {given}: owned by another user in a sticky directory; cannot replace")
        parent = _nearest_existing_parent(target)
        if not parent.is_dir():
            raise OutputPathError(f"{what} {given}: {parent} is not a directory")
        _probe(parent)  # the nearest directory that exists: the missing ones are created beneath it at write time
    except OSError as err:
        raise OutputPathError(f"{what} {given}: cannot be written ({_reason(err)})") from None


def check_output_directory(path: str | os.PathLike[str], *, what: str = "output directory") -> None:
    """Refuse, before any work, a directory that could not take outputs: raises ``OutputPathError``.

    ``path`` may not exist yet (it is created later); then its nearest existing ancestor must be a directory where a
    file can be created. An existing file at ``path`` or at any ancestor is refused by name.
    """
    given = Path(path)
    try:
        target = Path(os.path.realpath(given))
        if target.exists() and not target.is_dir():
            raise OutputPathError(f"{what} {given} is a file, not a directory")
        parent = target if target.exists() else _nearest_existing_parent(target)
        if not parent.is_dir():
            raise OutputPathError(f"{what} {given}: {parent} is a file, not a directory")
        _probe(parent)
    except OSError as err:
        raise OutputPathError(f"{what} {given}: cannot be written ({_reason(err)})") from None


def _probe(directory: Path) -> None:
    # Creating a file is the only test that knows about read-only mounts, ACLs and root (os.access says yes to root).
    fd, probe = tempfile.mkstemp(dir=directory, prefix=".audiokit-", suffix=".probe")
    os.close(fd)
    os.unlink(probe)


def atomic_write(path: str | os.PathLike[str], data: bytes | str) -> None:
    """Write ``data`` to ``path`` so that it holds either its old content or all of ``data``.

    Regular files (and new paths) are written to a temporary file beside the real target, flushed to disk and renamed
    over it; an existing file keeps its permission bits (and owner, where allowed), a new one gets ``0o666 & ~umask``
    as ``open()`` would give. A symlink is followed, so the link stays and its target is replaced. Anything else that
    exists (a device, FIFO or terminal) is opened and written as it is. ``str`` is encoded as UTF-8, with file names
    that are not UTF-8 kept as the bytes the OS gave (``surrogateescape``). Raises ``OSError``.
    """
    payload = data.encode("utf-8", "surrogateescape") if isinstance(data, str) else data
    fd = _descriptor(path)
    if fd is not None:
        _write_all(fd, payload)
        return
    target, st = _resolve(Path(path))
    if st is not None and not stat.S_ISREG(st.st_mode):
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(21, "Is a directory", str(path))
        with open(target, "wb") as f:
            f.write(payload)
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        # By name rather than descriptor: os.fchmod exists on Windows only from Python 3.13, os.fchown not at all.
        os.chmod(tmp, stat.S_IMODE(st.st_mode) if st is not None else 0o666 & ~_umask())
        if st is not None and hasattr(os, "chown"):
            # Only root may give a file away; for anyone else the replacement is theirs, with the old mode.
            with contextlib.suppress(PermissionError):
                os.chown(tmp, st.st_uid, st.st_gid)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_all(fd: int, payload: bytes) -> None:
    view = memoryview(payload)
    while view:
        view = view[os.write(fd, view) :]


def write_output(path: str | os.PathLike[str], data: bytes | str) -> None:
    """``atomic_write``, or standard output for ``"-"``; failures become one ``OutputWriteError`` naming the path."""
    if os.fspath(path) == STDOUT:
        try:
            _write_stdout(data)
        except BrokenPipeError:
            # The reader left (| head); stop Python's own flush at exit from failing on the same pipe.
            with contextlib.suppress(OSError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise OutputWriteError("could not write standard output: the reading end of the pipe was closed") from None
        except (OSError, ValueError) as err:
            reason = _reason(err) if isinstance(err, OSError) else str(err)
            raise OutputWriteError(f"could not write standard output: {reason}") from None
        return
    try:
        atomic_write(path, data)
    except OSError as err:
        raise OutputWriteError(f"could not write {os.fspath(path)}: {_reason(err)}") from None


def _write_stdout(data: bytes | str) -> None:
    if sys.stdout is None:  # started with standard output closed (1>&-)
        raise ValueError("it is closed")
    buffer = getattr(sys.stdout, "buffer", None)
    if buffer is None:  # a text-only stream put in place of stdout (io.StringIO)
        sys.stdout.write(data if isinstance(data, str) else data.decode("utf-8", "surrogateescape"))
        return
    sys.stdout.flush()
    buffer.write(data.encode("utf-8", "surrogateescape") if isinstance(data, str) else data)
    buffer.flush()
