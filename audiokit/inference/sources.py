"""Sources: the files a run reads, from paths, directories, glob patterns and file lists, produced lazily.

``iter_inputs`` expands one argument at a time, so a list of a million names is never a list of a million paths
before the first file starts; a directory or pattern is sorted (which needs its own listing in memory), a file list
is taken in its own order, neither sorted nor deduplicated.
"""

from __future__ import annotations

import glob
import logging
import os
import stat
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from ..audio.io import AUDIO_EXTENSIONS

_logger = logging.getLogger(__name__)


def expand_inputs(inputs: Iterable[str | os.PathLike[str]], recursive: bool = False) -> list[Path]:
    """``iter_inputs`` as a list."""
    return list(iter_inputs(inputs, recursive))


def iter_inputs(inputs: Iterable[str | os.PathLike[str]], recursive: bool = False) -> Iterator[Path]:
    """Files, directories (their audio files, sorted; sub-directories with ``recursive``) and glob patterns.

    A directory and a pattern follow the same rules: ``**`` descends into real sub-directories only, never through a
    symlink to a directory (a link back to a parent would be an endless cycle), and each real file comes once, under
    the first name found for it within that directory or pattern (a symlink beside its target is the same file). A
    name that matches nothing, or that the OS refuses (too long, unreadable), is kept, so that it is reported for that
    file rather than silently dropped or ending the run.
    """
    for item in inputs:
        path = Path(os.fsdecode(item)).expanduser()
        text = str(path)
        if _is_dir(path):
            pattern = "**/*" if recursive else "*"
            found = _unique_files(p for p in path.glob(pattern) if p.suffix.lower() in AUDIO_EXTENSIONS)
            if not found:
                _logger.warning("%s: no audio files found%s", path, "" if recursive else " (use --recursive?)")
            yield from found
        elif glob.has_magic(text) and not _exists(path):
            yield from _glob(text, recursive) or [path]
        else:
            yield path


def _exists(path: Path) -> bool:
    try:
        path.stat()
    except OSError:
        return False
    return True


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:  # a name too long for the OS, a loop of links: the loader reports it for this file
        return False


def _glob(pattern: str, recursive: bool) -> list[Path]:
    """Files matching ``pattern`` with ``glob.glob``'s meaning, expanded by pathlib from the pattern's literal prefix
    (pathlib's ``**`` does not follow symlinked directories, ``glob.glob``'s does, endlessly on a cycle). As with
    ``glob.glob``, wildcards skip names starting with a dot unless the pattern spells the dot, and the matches keep the
    prefix as typed (``./``, ``~`` expanded)."""
    parts = pattern.split("/")
    literal = 0
    while literal < len(parts) - 1 and not glob.has_magic(parts[literal]):
        literal += 1
    prefix = "/".join(parts[:literal])
    if literal == 1 and parts[0] == "":
        prefix = "/"
    rest = [p for p in parts[literal:] if p]
    if not recursive:
        rest = [p.replace("**", "*") for p in rest]  # glob.glob without recursive=True reads "**" as "*"
    else:
        # "**" is special only as a whole component; glob.glob reads it as "*" inside a name (pathlib refuses it), and
        # a trailing "**" lists files too (pathlib's lists directories only).
        rest = [p if p == "**" else p.replace("**", "*") for p in rest]
        if rest and rest[-1] == "**":
            rest.append("*")
    if not rest:
        return []
    base = Path(prefix) if prefix else Path(".")
    spells_dot = any(p.startswith(".") for p in rest)
    try:
        found = []
        for match in base.glob("/".join(rest)):
            relative = match.relative_to(base)
            if not spells_dot and any(part.startswith(".") for part in relative.parts):
                continue
            found.append(Path(os.path.join(prefix, relative)) if prefix else relative)
        return _unique_files(found)
    except (OSError, ValueError):
        return []


def _unique_files(candidates: Iterable[Path]) -> list[Path]:
    """Regular files among ``candidates`` (symlinks to files included), sorted, each real file once."""
    seen: set[tuple[int, int]] = set()
    files = []
    for path in sorted(candidates):
        try:
            st = path.stat()
        except OSError:
            continue
        if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) in seen:
            continue
        seen.add((st.st_dev, st.st_ino))
        files.append(path)
    return files


def read_file_list(source: str | os.PathLike[str]) -> Iterator[str]:
    """The names in a file list (``"-"``: standard input), one per line, read as the run goes.

    The file is opened here, so a missing list fails at once (``FileNotFoundError`` / ``OSError``, naming it); its
    lines are then read lazily. A line is taken as it is, as a command-line argument would be (a file, a directory or
    a pattern): only the line ending (``\\n`` or ``\\r\\n``) is removed, blank lines are skipped, and names that are
    not UTF-8 keep their bytes (``os.fsdecode``).
    """
    if os.fspath(source) == "-":
        stream: IO[bytes] = getattr(sys.stdin, "buffer", None) or _TextAsBytes(sys.stdin)
        return _lines(stream, close=False)
    try:
        handle = open(source, "rb")  # noqa: SIM115 - closed by the generator
    except FileNotFoundError:
        raise FileNotFoundError(f"--files-from {os.fspath(source)}: no such file") from None
    except OSError as err:
        raise OSError(f"--files-from {os.fspath(source)}: cannot be read ({err.strerror or err})") from None
    return _lines(handle, close=True)


def _lines(stream: IO[bytes], close: bool) -> Iterator[str]:
    try:
        for raw in stream:
            line = raw.rstrip(b"\n")
            if line.endswith(b"\r"):
                line = line[:-1]
            if line:
                yield os.fsdecode(line)
    finally:
        if close:
            stream.close()


class _TextAsBytes:
    """A text stream put in place of stdin (a test's StringIO) read as the bytes a real stdin would give."""

    def __init__(self, text: IO[str]):
        self._text = text

    def __iter__(self) -> Iterator[bytes]:
        for line in self._text:
            yield line.encode("utf-8", "surrogateescape")
