"""`torchrun --nproc_per_node 2 -m audiokit tag|embed ...`: two CPU processes (gloo), each an interleaved share of the
files into its own part, merged by rank 0 into the output a single process writes (tag: byte for byte; embed: the
same ids, times, errors and rows); --resume on the parts after a rank was interrupted."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import audiokit as ak
from audiokit.inference.embedding_store import INDEX_NAME
from audiokit.inference.shard import (
    Shard,
    foreign_part_directories,
    foreign_parts,
    merge_embedding_parts,
    part_directory,
    part_path,
    share,
)
from tests.test_inference_stream import MODEL, _cli, checkpoint, clips  # noqa: F401

# ruff: noqa: F811  (pytest fixtures imported from tests/test_inference_stream.py are redefined as arguments)


def _torchrun(checkpoint, *argv, nproc=2, command="tag"):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m",
               "audiokit", command, *map(str, argv), "--model", MODEL, "--checkpoint", str(checkpoint),
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


def _same_embeddings(a, b):
    one, other = ak.open_embeddings(a), ak.open_embeddings(b)
    assert one.ids == other.ids and one.errors.keys() == other.errors.keys()
    np.testing.assert_array_equal(one.starts, other.starts)
    # Each rank batches other files together than one process does: the rows agree to float32 rounding, not bits.
    np.testing.assert_allclose(np.asarray(one.vectors), np.asarray(other.vectors), rtol=1e-5, atol=1e-6)
    assert one.header == other.header


def test_embed_two_processes_equal_one(checkpoint, clips, tmp_path):
    single, sharded = tmp_path / "single", tmp_path / "sharded"
    assert _cli(checkpoint, "embed", *clips, "--window", "0.2", "--output", f"{single}/", "--shard-rows", "7") == 1
    done = _torchrun(checkpoint, *clips, "--window", "0.2", "--output", f"{sharded}/", "--shard-rows", "7",
                     command="embed")  # fmt: skip
    assert done.returncode != 0 and "missing.wav" in done.stderr  # the rank that had it fails; torchrun reports it
    assert "merged 11 record(s) from 2 processes" in done.stderr
    _same_embeddings(single, sharded)
    assert sorted(p.name for p in sharded.iterdir() if not p.name.startswith("shard-")) == [INDEX_NAME]
    again = _torchrun(checkpoint, *clips, "--output", f"{sharded}/", "--resume", command="embed")
    assert again.returncode == 0 and "already merged" in again.stderr


def test_embed_resume_continues_the_parts_and_an_interrupted_merge(checkpoint, clips, tmp_path):
    good = [p for p in clips if p.exists()]
    single, sharded = tmp_path / "single", tmp_path / "sharded"
    assert _cli(checkpoint, "embed", *good, "--output", f"{single}/") == 0
    # What an interrupted job leaves: rank 1's part with its first two files only, rank 0's not started.
    assert _cli(checkpoint, "embed", good[1], good[3], "--output", f"{part_directory(sharded, Shard(1, 2))}/") == 0
    refused = _torchrun(checkpoint, *good, "--output", f"{sharded}/", command="embed")
    assert refused.returncode != 0 and "--resume continues it" in refused.stderr
    done = _torchrun(checkpoint, *good, "--output", f"{sharded}/", "--resume", command="embed")
    assert done.returncode == 0, done.stderr
    _same_embeddings(single, sharded)
    assert foreign_part_directories(sharded, Shard(0, 2)) == [] and not list(sharded.glob("part-*"))


def test_embedding_merge_keeps_input_order_supersedes_redone_files_and_can_be_rerun(checkpoint, clips, tmp_path):
    good = [p for p in clips if p.exists()]
    model = ak.create_model(MODEL, checkpoint_path=checkpoint).eval()
    single, merged = tmp_path / "single", tmp_path / "merged"
    ak.embed_to(single, good, model, num_workers=0)
    for rank in range(3):
        ak.embed_to(part_directory(merged, Shard(rank, 3)), good[rank::3], model, num_workers=0, shard_rows=2)
    # A file redone by a resumed rank: its new record comes last in the part, and replaces the old one in place.
    changed = good[3]
    os.utime(changed, ns=(1, 1))
    ak.embed_to(part_directory(merged, Shard(0, 3)), good[0::3], model, num_workers=0, resume=True)
    index = (part_directory(merged, Shard(0, 3)) / INDEX_NAME).read_text().splitlines()
    assert json.loads(index[-1])["path"] == str(changed) and len(index) == 1 + len(good[0::3]) + 1
    # A merge killed after linking shards but before its index landed: the parts are intact, the merge runs again.
    (merged / "shard-000099.npy").write_bytes(b"left by an interrupted merge")
    (merged / "shard-000000.npy").write_bytes(b"half-linked by an interrupted merge")
    assert merge_embedding_parts(merged, 3) == len(good)
    store = ak.open_embeddings(merged)
    assert store.paths == [str(p) for p in good]
    _same_embeddings(single, merged)
    assert not (merged / "shard-000099.npy").exists() and not list(merged.glob("part-*"))
    assert foreign_part_directories(tmp_path, Shard(0, 2)) == []


def test_embedding_parts_of_another_job_size_are_named(tmp_path):
    (tmp_path / "part-00000-of-00004").mkdir()
    assert foreign_part_directories(tmp_path, Shard(0, 2)) == ["part-00000-of-00004"]
    assert foreign_part_directories(tmp_path, Shard(0, 4)) == []
