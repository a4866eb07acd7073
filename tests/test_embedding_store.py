"""Embeddings at scale: `audiokit embed --output DIR/` writes .npy shards and a JSONL index as files finish,
`ak.open_embeddings` reads them lazily, and `--resume` continues after a kill -9 (torn index line, orphan shard),
each checked against `ak.embed` on the same files."""

# ruff: noqa: F811  (pytest fixtures imported from tests/test_inference_stream.py are redefined as arguments)

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import audiokit as ak
from audiokit.inference import ResumeError
from audiokit.inference.embedding_store import INDEX_NAME, EmbeddingShardWriter, shard_name

# The tagging-at-scale tests' fixtures (a tiny informative mn01, its checkpoint, ten clips and a missing name).
from tests.test_inference_stream import MODEL, _cli, _open_fifo_writer, checkpoint, clips, model  # noqa: F401


def _records(directory):
    lines = (directory / INDEX_NAME).read_bytes().split(b"\n")
    return [json.loads(line) for line in lines[1:] if line.strip()]


def _shards(directory):
    return sorted(p.name for p in directory.glob("shard-*.npy"))


def test_shards_and_index_equal_embed(model, clips, tmp_path):
    reference = ak.embed(clips, model, device="cpu", num_workers=0)
    out = tmp_path / "emb"
    run = ak.embed_to(out, clips, model, shard_rows=3, device="cpu", num_workers=0)
    assert (run.written, run.skipped, len(run.errors)) == (11, 0, 1) and "missing.wav" in run.errors[0]
    assert _shards(out) == [shard_name(i) for i in range(4)]  # 10 rows, 3 per shard
    assert all(np.load(out / name).shape[0] <= 3 for name in _shards(out))
    store = ak.open_embeddings(out)
    assert store.ids == reference.ids and len(store) == 10
    assert store.vectors.shape == reference.vectors.shape and store.vectors.dtype == np.float32
    np.testing.assert_array_equal(np.asarray(store.vectors), reference.vectors)
    np.testing.assert_array_equal(store.vectors[7], reference.vectors[7])
    np.testing.assert_array_equal(store.vectors[2:8], reference.vectors[2:8])
    np.testing.assert_array_equal(store.vectors[[9, 0, 4]], reference.vectors[[9, 0, 4]])
    np.testing.assert_array_equal(store.vectors[1:5, :3], reference.vectors[1:5, :3])
    np.testing.assert_array_equal(store.ends, reference.ends)
    assert list(store.errors) == list(reference.errors)
    np.testing.assert_array_equal(store.rows_of(str(clips[5])), reference.vectors[4:5])
    assert store.header["model"] == model.pretrained_cfg.name and store.header["format"] == "audiokit.embed/1"
    with pytest.raises(KeyError, match="not in this embedding directory"):
        store.rows_of("elsewhere.wav")


def test_frame_rows_and_windows(tmp_path, make_wav):
    from tests.test_wav2vec2 import TINY

    net = ak.create_model("wav2vec2_base.librispeech", **TINY).eval()
    paths = [make_wav(f"s{i}.wav", 0.5 + 0.3 * i, rate=16000, seed=i) for i in range(3)]
    for kwargs in ({"frame_level": True}, {"window": 0.4, "hop": 0.2}, {"layer": 1}):
        reference = ak.embed(paths, net, device="cpu", num_workers=0, **kwargs)
        out = tmp_path / "_".join(kwargs)
        ak.embed_to(out, paths, net, shard_rows=20, device="cpu", num_workers=0, **kwargs)
        store = ak.open_embeddings(out)
        assert store.ids == reference.ids, kwargs
        np.testing.assert_allclose(np.asarray(store.vectors), reference.vectors, atol=1e-6)
        np.testing.assert_allclose(store.starts, reference.starts, atol=1e-9)
    # 24, 39 and 54 frames of 20 ms: each file is more than shard_rows, and gets a shard of its own.
    frames_dir = tmp_path / "frame_level"
    assert [np.load(frames_dir / name).shape[0] for name in _shards(frames_dir)] == [24, 39, 54]


def test_kill_9_then_resume_gives_the_uninterrupted_result(checkpoint, clips, tmp_path):
    out, reference = tmp_path / "killed", tmp_path / "reference"
    fifo = tmp_path / "names.fifo"
    os.mkfifo(fifo)
    argv = ["embed", "--files-from", str(fifo), "--model", MODEL, "--checkpoint", str(checkpoint), "-o", f"{out}/",
            "--shard-rows", "1", "--num-workers", "0", "--cpu-streams", "1", "--batch-size", "1", "-q"]  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "audiokit", *argv], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        writer = _open_fifo_writer(fifo, proc, deadline)
        os.write(writer, b"".join(os.fsencode(p) + b"\n" for p in clips[:5]))
        while not (out / INDEX_NAME).exists() or len(_records(out)) < 5:
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1]
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
        os.close(writer)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()
    assert len(_records(out)) == 5 and _shards(out) == [shard_name(i) for i in range(4)]  # missing.wav: no rows
    # What a kill in the middle of a commit leaves: a shard nothing points to yet, and half an index line.
    np.save(out / shard_name(4), np.ones((1, 3), np.float32))
    with open(out / INDEX_NAME, "ab") as index:
        index.write(b'{"path": "half a rec')
    listing = tmp_path / "list.txt"
    listing.write_text("".join(f"{p}\n" for p in clips))
    options = ["--files-from", listing, "--shard-rows", "4"]
    assert _cli(checkpoint, "embed", *options, "-o", f"{out}/", "--resume") == 1  # missing.wav, recorded earlier
    assert _cli(checkpoint, "embed", *options, "-o", f"{reference}/") == 1
    resumed, whole = ak.open_embeddings(out), ak.open_embeddings(reference)
    assert resumed.ids == whole.ids and len(resumed.ids) == len(set(resumed.ids)) == 10
    np.testing.assert_array_equal(np.asarray(resumed.vectors), np.asarray(whole.vectors))
    assert [r["path"] for r in _records(out)] == [str(p) for p in clips]  # each file once, in input order
    assert _cli(checkpoint, "embed", *options, "-o", f"{out}/", "--resume") == 1  # nothing left: nothing changes
    assert len(_records(out)) == 11


def test_a_changed_file_is_redone_and_read_once(model, clips, tmp_path):
    out = tmp_path / "emb"
    ak.embed_to(out, clips, model, device="cpu", num_workers=0)
    import soundfile as sf

    sf.write(clips[2], np.zeros(8000, np.float32) + 0.1, 16000)
    run = ak.embed_to(out, clips, model, resume=True, device="cpu", num_workers=0)
    assert (run.written, run.skipped) == (1, 10)
    store = ak.open_embeddings(out)
    assert len(store) == 10 and store.ids[-1] == str(clips[2])  # the redone record is read, the old one is not
    np.testing.assert_array_equal(store.rows_of(str(clips[2])), ak.embed([clips[2]], model, num_workers=0).vectors)


def test_refusals(model, clips, tmp_path, checkpoint, capsys):
    out = tmp_path / "emb"
    ak.embed_to(out, clips[:2], model, device="cpu", num_workers=0)
    assert _cli(checkpoint, "embed", *clips[:2], "-o", f"{out}/") == 2
    assert "already holds embeddings" in capsys.readouterr().err
    with pytest.raises(ResumeError, match="layer none"):
        ak.embed_to(out, clips[:2], model, resume=True, layer=1, device="cpu", num_workers=0)
    assert _cli(checkpoint, "embed", *clips[:2], "-o", tmp_path / "x.npz", "--resume") == 2
    assert "--resume continues a shard directory" in capsys.readouterr().err
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / INDEX_NAME).write_text("not json\n")
    with pytest.raises(ValueError, match="not an audiokit embedding index"):
        ak.open_embeddings(tmp_path / "bad")
    with pytest.raises(ValueError, match="no embedding index"):
        ak.open_embeddings(tmp_path / "nothing")
    with pytest.raises(ValueError, match="shard_rows must be at least 1"):
        EmbeddingShardWriter(tmp_path / "w", {"format": "audiokit.embed/1"}, shard_rows=0)
    (out / shard_name(0)).unlink()
    with pytest.raises(ValueError, match=shard_name(0)):
        ak.open_embeddings(out)
