"""One tagging or embedding job over several processes or machines, as ``torchrun`` starts them.

Each rank takes an interleaved share of the input files (file ``i`` of the expanded inputs goes to rank
``i % world_size``) and writes its records to its own part, a resumable output like any other (``--resume`` continues
each part): ``OUTPUT.part-RRRRR-of-WWWWW`` for ``tag``, the shard directory ``DIR/part-RRRRR-of-WWWWW/`` for
``embed --output DIR/``. When every rank is done (a gloo barrier, whatever the devices), rank 0 merges the parts by
taking their records in turn, which is the input order again, lands the merged output atomically and only then
removes the parts: a kill during the merge leaves the parts, and the same command with ``--resume`` merges again.
An embedding merge moves no rows: the parts' shard files are hard-linked into ``DIR`` under new numbers (copied where
the filesystem has no hard links) and the index is rewritten to point at them.
"""

from __future__ import annotations

import contextlib
import datetime
import glob
import itertools
import json
import mmap
import os
import re
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._fileio import _umask, atomic_write
from .embedding_store import INDEX_NAME, shard_name
from .sinks import CSV_COLUMNS, _csv_rows_with_offsets, csv_column_row, jsonl_line

# The barrier waits for the slowest rank, which may finish hours after the others on an uneven archive; torchrun's
# agent stops the whole job when a rank fails, so a long timeout never leaves the others waiting on a dead one.
BARRIER_TIMEOUT = datetime.timedelta(hours=24)
_PART = re.compile(r"part-(\d+)-of-(\d+)")


@dataclass(frozen=True)
class Shard:
    """A process's place in a ``torchrun`` job (tagging, embedding and fine-tuning alike)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def current_shard() -> Shard:
    """This process's place in a ``torchrun`` job, from the environment torchrun sets (one process: rank 0 of 1)."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError:
        raise ValueError("WORLD_SIZE, RANK and LOCAL_RANK must be integers (as torchrun sets them)") from None
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"RANK {rank} is not within WORLD_SIZE {world}")
    return Shard(rank, world, local)


def share(paths: Iterable[Path], shard: Shard) -> Iterator[Path]:
    """This rank's files: every ``world_size``-th from its rank on (read as the run goes)."""
    return itertools.islice(paths, shard.rank, None, shard.world_size)


def part_path(output: str | os.PathLike[str], shard: Shard) -> str:
    return f"{os.fspath(output)}.part-{shard.rank:05d}-of-{shard.world_size:05d}"


def foreign_parts(output: str | os.PathLike[str], shard: Shard) -> list[str]:
    """Parts of ``output`` written by a job of another size (their records would be merged wrongly)."""
    target = Path(output)
    pattern = re.compile(re.escape(target.name) + r"\.part-(\d+)-of-(\d+)")
    found = []
    for entry in target.parent.glob(f"{glob.escape(target.name)}.part-*"):
        match = pattern.fullmatch(entry.name)
        if match and int(match.group(2)) != shard.world_size:
            found.append(entry.name)
    return sorted(found)


def barrier(shard: Shard) -> None:
    """Wait for every rank (gloo: a barrier needs no GPU)."""
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="gloo", timeout=BARRIER_TIMEOUT)
    dist.barrier()


def _part_records(data: Any, fmt: str) -> tuple[bytes, Iterator[bytes]]:
    """A part's header line (jsonl) or column row (csv), and its records as bytes, in order, read from ``data`` (a
    memory map: a part is never loaded whole)."""
    if fmt == "jsonl":
        end = data.find(b"\n") + 1

        def lines() -> Iterator[bytes]:
            at = end
            while at < len(data):
                stop = data.find(b"\n", at) + 1
                if stop <= 0:
                    return  # torn: the part's own resume drops it
                yield data[at:stop]
                at = stop

        return data[:end], lines()
    start = len(csv_column_row().encode())

    def groups() -> Iterator[bytes]:
        begin = start
        for row, end in _csv_rows_with_offsets(data, start):
            if len(row) == len(CSV_COLUMNS) and row[1] == "file":  # a file's rows end with its file row
                yield data[begin:end]
                begin = end

    return data[:start], groups()


def merge_parts(output: str | os.PathLike[str], fmt: str, world_size: int) -> int:
    """Rank 0: merge the parts into ``output``, their records taken in turn (the input order), streamed into a
    temporary file renamed over ``output``; then remove the parts. Returns the number of records."""
    parts = [part_path(output, Shard(rank, world_size)) for rank in range(world_size)]
    headers = []
    for part in parts:
        header = Path(part + ".header.json") if fmt == "csv" else Path(part)
        with open(header, "rb") as f:
            headers.append(json.loads(f.readline() if fmt == "jsonl" else f.read()))
    if any(h != headers[0] for h in headers):
        raise ValueError(f"{output}: the parts were written with different models or settings")
    target = Path(os.path.realpath(output))
    temporary = target.with_name(f".{target.name}.merge.tmp")
    count = 0
    with contextlib.ExitStack() as stack:
        maps = []
        for part in parts:
            f = stack.enter_context(open(part, "rb"))
            maps.append(stack.enter_context(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)))
        loaded = [_part_records(m, fmt) for m in maps]
        with open(temporary, "wb") as out:
            out.write(loaded[0][0])
            for group in itertools.zip_longest(*(records for _, records in loaded)):
                for record in group:
                    if record is not None:
                        out.write(record)
                        count += 1
            out.flush()
            os.fsync(out.fileno())
    os.chmod(temporary, 0o666 & ~_umask())
    if fmt == "csv":
        atomic_write(os.fspath(output) + ".header.json", Path(parts[0] + ".header.json").read_bytes())
    os.replace(temporary, target)
    for part in parts:
        Path(part).unlink(missing_ok=True)
        Path(part + ".header.json").unlink(missing_ok=True)
    return count


# -- embedding shard directories ---------------------------------------------------------------------------------------
def part_directory(directory: str | os.PathLike[str], shard: Shard) -> Path:
    return Path(directory) / f"part-{shard.rank:05d}-of-{shard.world_size:05d}"


def foreign_part_directories(directory: str | os.PathLike[str], shard: Shard) -> list[str]:
    """Part directories in ``directory`` written by a job of another size."""
    root = Path(directory)
    if not root.is_dir():
        return []
    found = []
    for entry in root.iterdir():
        match = _PART.fullmatch(entry.name)
        if match and entry.is_dir() and int(match.group(2)) != shard.world_size:
            found.append(entry.name)
    return sorted(found)


def _final_record_offsets(data: Any) -> tuple[dict[str, Any], list[int]]:
    """A part index's header, and where its records start, a file recorded twice (redone on resume) kept once: its
    last record, at its first place (the place its file has in the rank's share). Only offsets are kept, so a part
    of a million files costs rank 0 its paths and integers, not its records."""
    end = data.find(b"\n")
    header = json.loads(data[:end])["header"]
    slot: dict[str, int] = {}
    offsets: list[int] = []
    at = end + 1
    while at < len(data):
        stop = data.find(b"\n", at)
        if stop < 0:
            break  # torn (a part's own resume drops it)
        path = json.loads(data[at:stop])["path"]
        if path in slot:
            offsets[slot[path]] = at
        else:
            slot[path] = len(offsets)
            offsets.append(at)
        at = stop + 1
    return header, offsets


def merge_embedding_parts(directory: str | os.PathLike[str], world_size: int) -> int:
    """Rank 0: merge the part directories into ``directory`` (records in turn: the input order), link their shards
    in under new numbers, land the index atomically, then remove the parts. Returns the number of records."""
    root = Path(directory)
    parts = [part_directory(root, Shard(rank, world_size)) for rank in range(world_size)]
    numbers: dict[tuple[int, int], int] = {}
    temporary_index = root / f".{INDEX_NAME}.merge.tmp"
    count = 0
    with contextlib.ExitStack() as stack:
        maps, offsets, headers = [], [], []
        for part in parts:
            f = stack.enter_context(open(part / INDEX_NAME, "rb"))
            maps.append(stack.enter_context(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)))
            header, starts = _final_record_offsets(maps[-1])
            headers.append(header)
            offsets.append(starts)
        if any(header != headers[0] for header in headers):
            raise ValueError(f"{root}: the parts were written with different models or settings")
        with open(temporary_index, "wb") as out:
            out.write(jsonl_line({"header": headers[0]}).encode())
            for group in itertools.zip_longest(*offsets):
                for rank, at in enumerate(group):
                    if at is None:
                        continue
                    record = json.loads(maps[rank][at : maps[rank].find(b"\n", at)])
                    if record.get("shard") is not None:
                        record["shard"] = numbers.setdefault((rank, int(record["shard"])), len(numbers))
                    out.write(jsonl_line(record).encode("utf-8", "surrogateescape"))
                    count += 1
            out.flush()
            os.fsync(out.fileno())
    wanted = {shard_name(new) for new in numbers.values()}
    for entry in root.iterdir():  # shards of an earlier, interrupted merge that this one does not reuse
        if entry.name.startswith("shard-") and entry.name not in wanted:
            entry.unlink()
    for (rank, old), new in numbers.items():
        source, target = parts[rank] / shard_name(old), root / shard_name(new)
        temporary = root / f".{target.name}.merge.tmp"
        temporary.unlink(missing_ok=True)
        try:
            os.link(source, temporary)
        except OSError:  # a filesystem without hard links
            shutil.copyfile(source, temporary)
        os.replace(temporary, target)
    os.chmod(temporary_index, 0o666 & ~_umask())
    os.replace(temporary_index, root / INDEX_NAME)  # the merge lands here: before, the parts are all there is
    for part in parts:
        shutil.rmtree(part)
    return count
