"""`torchrun --nproc_per_node 2 -m audiokit tag ...`: two CPU processes (gloo), each an interleaved share of the
files into its own part, merged by rank 0 into the output a single process writes, byte for byte; --resume on the
parts after a rank was interrupted."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from audiokit.inference.shard import Shard, foreign_parts, part_path, share
from tests.test_inference_stream import MODEL, _cli, checkpoint, clips  # noqa: F401

# ruff: noqa: F811  (pytest fixtures imported from tests/test_inference_stream.py are redefined as arguments)


def _torchrun(checkpoint, *argv, nproc=2):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m",
               "audiokit", "tag", *map(str, argv), "--model", MODEL, "--checkpoint", str(checkpoint),
               "--num-workers", "0", "--cpu-streams", "1", "-q"]  # fmt: skip
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def test_shares_interleave_and_parts_are_named_by_rank(tmp_path):
    files = [tmp_path / f"{i}.wav" for i in range(7)]
    assert list(share(iter(files), Shard(1, 3))) == [files[1], files[4]]
    assert part_path("out.jsonl", Shard(1, 3)) == "out.jsonl.part-00001-of-00003"
    (tmp_path / "out.jsonl.part-00000-of-00004").write_text("")
    assert foreign_parts(tmp_path / "out.jsonl", Shard(0, 2)) == ["out.jsonl.part-00000-of-00004"]
    assert foreign_parts(tmp_path / "out.jsonl", Shard(0, 4)) == []


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_two_processes_equal_one(checkpoint, clips, tmp_path, fmt):
    single, sharded = tmp_path / f"single.{fmt}", tmp_path / f"sharded.{fmt}"
    assert _cli(checkpoint, "tag", *clips, "--format", fmt, "-o", single) == 1  # the missing file
    done = _torchrun(checkpoint, *clips, "--format", fmt, "-o", sharded)
    assert done.returncode != 0 and "missing.wav" in done.stderr  # the rank that had it fails; torchrun reports it
    assert "merged 11 record(s) from 2 processes" in done.stderr
    assert sharded.read_bytes() == single.read_bytes()
    if fmt == "csv":
        assert (tmp_path / "sharded.csv.header.json").read_bytes() == (tmp_path / "single.csv.header.json").read_bytes()
    assert not list(tmp_path.glob(f"sharded.{fmt}.part-*"))


def test_resume_continues_the_parts(checkpoint, clips, tmp_path):
    good = [p for p in clips if p.exists()]
    single, sharded = tmp_path / "single.jsonl", tmp_path / "sharded.jsonl"
    assert _cli(checkpoint, "tag", *good, "--format", "jsonl", "-o", single) == 0
    # What an interrupted job leaves: rank 1's part with its first two files only, rank 0's not started.
    assert _cli(checkpoint, "tag", good[1], good[3], "--format", "jsonl", "-o", part_path(sharded, Shard(1, 2))) == 0
    refused = _torchrun(checkpoint, *good, "--format", "jsonl", "-o", sharded)
    assert refused.returncode != 0 and "--resume continues it" in refused.stderr
    done = _torchrun(checkpoint, *good, "--format", "jsonl", "-o", sharded, "--resume")
    assert done.returncode == 0, done.stderr
    assert sharded.read_bytes() == single.read_bytes()
    again = _torchrun(checkpoint, *good, "--format", "jsonl", "-o", sharded, "--resume")
    assert again.returncode == 0 and "already merged" in again.stderr


def test_more_processes_than_files(checkpoint, clips, tmp_path):
    single, sharded = tmp_path / "single.jsonl", tmp_path / "sharded.jsonl"
    assert _cli(checkpoint, "tag", clips[0], "--format", "jsonl", "-o", single) == 0
    done = _torchrun(checkpoint, clips[0], "--format", "jsonl", "-o", sharded)  # rank 1 has nothing to do
    assert done.returncode == 0, done.stderr
    assert sharded.read_bytes() == single.read_bytes()
