"""Sources: the files a run reads, from paths, directories, glob patterns and file lists, produced lazily; and, for
``tag`` and ``embed``, audio handed over in memory.

``iter_inputs`` expands one argument at a time, so a list of a million names is never a list of a million paths
before the first file starts; a directory or pattern is sorted (which needs its own listing in memory), a file list
is taken in its own order, neither sorted nor deduplicated. ``expand_sources`` adds ``InMemoryAudio`` items (arrays,
tensors, bytes, binary file objects) in their places among the files.
"""

from __future__ import annotations

import glob
import logging
import math
import numbers
import os
import stat
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO

import numpy as np
import torch

from ..audio.io import AUDIO_EXTENSIONS

_logger = logging.getLogger(__name__)


# What ``tag`` and ``embed`` take, one item or an iterable of them.
AudioInput = str | os.PathLike | np.ndarray | torch.Tensor | bytes | bytearray | memoryview | BinaryIO


@dataclass(frozen=True)
class InMemoryAudio:
    """Audio handed over in memory: ``kind`` "array" or "tensor" (decoded samples at ``sample_rate``, None if not
    given), "bytes" or "file" (an encoded file, which carries its own rate). ``name`` (``<array 0>``: its kind and
    its place among the inputs) stands for its path in results and messages."""

    name: str
    kind: str
    audio: Any
    sample_rate: int | None = None


def in_memory_kind(item: Any) -> str | None:
    """ "array", "tensor", "bytes" or "file" for audio in memory, None for anything else (a path)."""
    if isinstance(item, np.ndarray):
        return "array"
    if isinstance(item, torch.Tensor):
        return "tensor"
    if isinstance(item, (bytes, bytearray, memoryview)):
        return "bytes"  # never a file name here: os.fsdecode would take bytes for one
    if hasattr(item, "read"):
        return "file"
    return None


def expand_sources(
    inputs: Iterable[AudioInput], recursive: bool = False, sample_rate: int | Iterable[int | None] | None = None
) -> list[Path | InMemoryAudio]:
    """``expand_inputs`` with audio in memory kept in its place, as ``InMemoryAudio`` named by its kind and index.

    ``sample_rate``: the rate of the arrays and tensors, one for all (bytes, file objects and files carry their own,
    to which it does not apply), or one entry per input (None where the input carries its rate, a ValueError
    otherwise). An array without a rate is not refused here: it becomes its own error record, as a bad file does.
    """
    inputs = list(inputs)
    if sample_rate is None or isinstance(sample_rate, numbers.Real):
        rates = [None if sample_rate is None else _checked_rate(sample_rate, "sample_rate")] * len(inputs)
        per_input = False
    else:
        if isinstance(sample_rate, str):
            raise ValueError(f"sample_rate must be a number of Hz or one entry per input, got {sample_rate!r}")
        rates = [None if r is None else _checked_rate(r, f"sample_rate[{i}]") for i, r in enumerate(sample_rate)]
        if len(rates) != len(inputs):
            raise ValueError(f"sample_rate has {len(rates)} entries for {len(inputs)} inputs: give one per input")
        per_input = True
    sources: list[Path | InMemoryAudio] = []
    for index, (item, rate) in enumerate(zip(inputs, rates)):
        kind = in_memory_kind(item)
        if kind is None and not isinstance(item, (str, os.PathLike)):
            raise TypeError(
                f"input {index} is a {type(item).__name__}: give a path, a numpy array, a torch tensor, bytes or a "
                "binary file object"
            )
        takes_rate = kind in ("array", "tensor")
        if per_input and rate is not None and not takes_rate:
            what = f"<{kind} {index}>" if kind else repr(os.fspath(item))
            raise ValueError(f"sample_rate[{index}] is given for {what}, which carries its own rate: give None there")
        if kind is None:
            sources.extend(iter_inputs([item], recursive))
        else:
            sources.append(InMemoryAudio(f"<{kind} {index}>", kind, item, rate if takes_rate else None))
    return sources


def _checked_rate(rate: Any, what: str) -> int:
    whole = isinstance(rate, numbers.Real) and not isinstance(rate, bool) and math.isfinite(rate) and rate == int(rate)
    if not whole or rate < 1:
        raise ValueError(f"{what} must be a positive whole number of Hz, got {rate!r}")
    return int(rate)


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
