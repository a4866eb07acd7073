"""`audiokit tag`, `audiokit embed` and `audiokit models` end to end, and their handling of bad input."""

from __future__ import annotations

import csv
import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import audiokit as ak
from audiokit.cli import main
from tests.conftest import FSDD, MN04_CHECKPOINT, informative_model, require_shared

MN04_SHA256 = "899a8c6217063f6941793102a2780b3dd788ab11fce468d9cf5f0577c453321c"  # ../shared/README.md

MODEL = "efficientat_mn01.audioset"  # the smallest registered model keeps these tests fast


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A random mn01 checkpoint in the upstream layout (flat state dict, torch.save)."""
    model = informative_model(MODEL, seed=3)
    path = tmp_path_factory.mktemp("ckpt") / "mn01_as_mAP_298.pt"
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def model(checkpoint):
    return ak.create_model(MODEL, checkpoint_path=checkpoint).eval()


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _probs(model, path):
    wave = ak.load_audio(path, sample_rate=model.sample_rate)
    return model.predict_proba(wave[None])[0].numpy()


def test_tag_json_matches_direct_model_call(capsys, checkpoint, model, make_wav):
    a = make_wav("a.wav", 2.0, rate=44100, channels=2)
    b = make_wav("b.wav", 1.5, rate=8000, kind="tone")
    code, out, _ = run_cli(capsys, "tag", a, b, "--model", MODEL, "--checkpoint-path", checkpoint, "--format", "json",
                           "--top-k", "3", "--num-workers", "0")  # fmt: skip
    assert code == 0
    records = json.loads(out)
    assert [r["path"] for r in records] == [str(a), str(b)]
    for record, path in zip(records, (a, b)):
        probs = _probs(model, path)
        scores = [x["score"] for x in record["labels"]]
        # The three highest probabilities, in order; each label carries its own probability (labels whose scores tie
        # may come in either order).
        np.testing.assert_allclose(scores, np.sort(probs)[::-1][:3], rtol=1e-5, atol=1e-6)
        for x in record["labels"]:
            assert probs[model.label_names.index(x["label"])] == pytest.approx(x["score"], rel=1e-5, abs=1e-6)
        assert record["error"] is None and record["windows"] == []
    assert records[0]["duration"] == pytest.approx(2.0, abs=1e-3)


def test_batch_size_and_workers_do_not_change_results(checkpoint, make_wav):
    paths = [make_wav(f"c{i}.wav", 1.0 + (i % 2) * 0.5, seed=i) for i in range(5)]
    one = ak.tag(paths, MODEL, checkpoint_path=checkpoint, top_k=0, batch_size=1, num_workers=0)
    many = ak.tag(paths, MODEL, checkpoint_path=checkpoint, top_k=0, batch_size=4, num_workers=2)
    for x, y in zip(one, many):
        assert x["path"] == y["path"]
        np.testing.assert_allclose([s["score"] for s in x["labels"]], [s["score"] for s in y["labels"]], atol=1e-5)


def test_windows_score_each_slice_and_aggregate_by_max(capsys, checkpoint, model, make_wav, tmp_path):
    path = make_wav("long.wav", 3.2, rate=32000, kind="noise")
    out_csv = tmp_path / "out" / "tags.csv"
    code, out, _ = run_cli(capsys, "tag", path, "--model", MODEL, "--checkpoint", checkpoint, "--window", "1",
                           "--hop", "0.5", "--format", "csv", "--output", out_csv, "--top-k", "0")  # fmt: skip
    assert code == 0 and out == ""
    rows = list(csv.DictReader(out_csv.open()))
    windows = sorted({(float(r["start"]), float(r["end"])) for r in rows if r["scope"] == "window"})
    assert windows == [(0.0, 1.0), (0.5, 1.5), (1.0, 2.0), (1.5, 2.5), (2.0, 3.0), (2.2, 3.2)]
    wave = ak.load_audio(path, sample_rate=32000)
    per_window = []
    for start, end in windows:
        expected = model.predict_proba(wave[None, int(start * 32000) : round(end * 32000)])[0].numpy()
        got = {r["label"]: float(r["score"]) for r in rows if r["scope"] == "window" and float(r["start"]) == start}
        np.testing.assert_allclose([got[n] for n in model.label_names], expected, atol=2e-6)
        per_window.append(expected)
    clip = {r["label"]: float(r["score"]) for r in rows if r["scope"] == "clip"}
    np.testing.assert_allclose([clip[n] for n in model.label_names], np.max(per_window, axis=0), atol=2e-6)
    assert not list(out_csv.parent.glob(".*.tmp")), "temporary file left behind"


def test_bad_files_are_reported_and_the_rest_tagged(capsys, checkpoint, make_wav, tmp_path):
    good = make_wav("good.wav", 1.0)
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "text.wav").write_text("not audio at all")
    code, out, err = run_cli(capsys, "tag", tmp_path, tmp_path / "missing.flac", "--model", MODEL,
                             "--checkpoint", checkpoint, "--format", "jsonl", "--num-workers", "0")  # fmt: skip
    assert code == 1
    records = {r["path"]: r for r in map(json.loads, out.splitlines())}
    assert records[str(good)]["error"] is None and len(records[str(good)]["labels"]) == 5
    assert "empty" in records[str(tmp_path / "empty.wav")]["error"]
    assert "not a readable audio file" in records[str(tmp_path / "text.wav")]["error"]
    assert "not found" in records[str(tmp_path / "missing.flac")]["error"]
    assert "3 of 4 file(s) failed" in err and "text.wav" in err


def test_short_and_silent_audio_are_padded_with_a_warning(capsys, checkpoint, make_wav):
    short = make_wav("short.wav", 0.005, rate=16000)
    silent = make_wav("silent.wav", 1.0, kind="silence")
    code, out, _ = run_cli(capsys, "tag", short, silent, "--model", MODEL, "--checkpoint", checkpoint,
                           "--format", "json", "--num-workers", "0")  # fmt: skip
    assert code == 0
    short_rec, silent_rec = json.loads(out)
    assert any("zero-padded" in w for w in short_rec["warnings"]) and short_rec["labels"]
    assert any("silence" in w for w in silent_rec["warnings"])


def test_embed_npz_matches_model_embed(capsys, checkpoint, model, make_wav, tmp_path):
    paths = [make_wav(f"e{i}.wav", 1.0, seed=i) for i in range(3)]
    out = tmp_path / "emb.npz"
    code, _, err = run_cli(capsys, "embed", *paths, "--model", MODEL, "--checkpoint", checkpoint, "--output", out)
    assert code == 0 and "3 embeddings" in err
    data = np.load(out)
    assert list(data["ids"]) == [str(p) for p in paths] and data["embeddings"].dtype == np.float32
    for row, path in zip(data["embeddings"], paths):
        wave = ak.load_audio(path, sample_rate=model.sample_rate)
        np.testing.assert_allclose(row, model.embed(wave[None])[0].numpy(), atol=1e-5)


def test_embed_windows_to_npy(capsys, checkpoint, make_wav, tmp_path):
    path = make_wav("w.wav", 2.5, rate=32000)
    out = tmp_path / "emb.npy"
    code, _, _ = run_cli(capsys, "embed", path, "--model", MODEL, "--checkpoint", checkpoint, "--window", "1",
                         "--output", out)  # fmt: skip
    assert code == 0
    assert np.load(out).shape == (3, ak.create_model(MODEL).num_features)


def test_unknown_model_suggests_close_names(capsys, make_wav):
    code, _, err = run_cli(capsys, "tag", make_wav("x.wav", 1.0), "--model", "efficientat_mn100.audioset")
    assert code == 2 and "unknown model" in err and "efficientat_mn10" in err


def test_offline_without_checkpoint_explains_how(capsys, make_wav):
    code, _, err = run_cli(capsys, "tag", make_wav("x.wav", 1.0), "--model", "efficientat_mn10.audioset")
    assert code == 2 and "--checkpoint" in err and "mn10_as_mAP_471.pt" in err


def test_checkpoint_for_the_wrong_model_names_keys(capsys, checkpoint, make_wav):
    code, _, err = run_cli(capsys, "tag", make_wav("x.wav", 1.0), "--model", "panns_cnn6.audioset",
                           "--checkpoint", checkpoint)  # fmt: skip
    assert code == 2 and "does not fit panns_cnn6" in err
    assert "missing frontend.dft_real" in err and "unexpected features.0.0.weight" in err


def test_corrupt_checkpoint_is_a_clear_error(capsys, make_wav, tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_text("<html>rate limited</html>")
    code, _, err = run_cli(capsys, "tag", make_wav("x.wav", 1.0), "--model", MODEL, "--checkpoint", bad)
    assert code == 2 and str(bad) in err


def test_models_lists_names_and_metadata(capsys):
    code, out, _ = run_cli(capsys, "models", "efficientat_mn*", "--format", "json")
    assert code == 0
    rows = {r["name"]: r for r in json.loads(out)}
    assert rows["efficientat_mn10.audioset"]["metrics"]["audioset_map"] == pytest.approx(0.471)
    assert rows["efficientat_mn10.audioset"]["params"] == 4_876_831 and not rows["efficientat_mn10.audioset"]["cached"]
    assert "panns_cnn14.audioset" not in rows
    code, out, _ = run_cli(capsys, "models", "panns_*")
    assert code == 0 and "panns_cnn14.audioset" in out and "80.75M" in out
    assert run_cli(capsys, "models", "nothing_like_this*")[0] == 2


def test_models_hashes_say_how_each_download_is_verified(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("AUDIOKIT_HOME", str(tmp_path))
    code, out, _ = run_cli(capsys, "models", "--hashes", "efficientat_mn0*")
    assert code == 0
    rows = {line.split()[0]: line for line in out.splitlines()[2:]}
    assert "sha256 (published)" in rows["efficientat_mn04.audioset"]
    assert MN04_SHA256 in rows["efficientat_mn04.audioset"]
    assert " ".join(rows["efficientat_mn01.audioset"].split()[1:]) == "none published: pinned on first download -"

    # Once downloaded, the pinned digest is what the listing shows.
    cfg = ak.get_pretrained_cfg("efficientat_mn01.audioset")
    cached = ak._hub.cached_file_path(cfg.url, cfg.filename)
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"weights")
    ak._hub.resolve_weights(cfg.url, filename=cfg.filename)
    code, out, _ = run_cli(capsys, "models", "--hashes", "efficientat_mn01*", "--format", "json")
    (row,) = json.loads(out)
    assert row["checksum"] == "pinned" and row["pinned_sha256"] == hashlib.sha256(b"weights").hexdigest()


def test_python_dash_m_entry_point():
    done = subprocess.run([sys.executable, "-m", "audiokit", "models", "panns_cnn6"], capture_output=True, text=True)
    assert done.returncode == 0 and "panns_cnn6.audioset" in done.stdout


def test_real_mn04_tags_spoken_digits_as_speech(capsys):
    checkpoint = require_shared(MN04_CHECKPOINT)
    files = sorted(require_shared(FSDD).glob("*_theo_1*.wav"))[:4]
    code, out, _ = run_cli(capsys, "tag", *files, "--model", "efficientat_mn04.audioset", "--checkpoint", checkpoint,
                           "--format", "json", "--top-k", "3", "--num-workers", "0")  # fmt: skip
    assert code == 0
    tops = [[x["label"] for x in r["labels"]] for r in json.loads(out)]
    assert sum("Speech" in t for t in tops) >= 3, tops


def test_top_k_helper():
    scores = torch.tensor([0.1, 0.9, 0.5])
    assert ak.top_k(scores, ["a", "b", "c"], k=2) == [("b", pytest.approx(0.9)), ("c", pytest.approx(0.5))]
    assert ak.top_k(scores, ["a", "b", "c"], k=0, threshold=0.4) == [("b", pytest.approx(0.9)), ("c", 0.5)]


def test_embed_reports_bad_files_and_keeps_the_good_ones(capsys, checkpoint, make_wav, tmp_path):
    good = make_wav("good.wav", 1.0)
    broken = tmp_path / "broken.wav"
    broken.write_bytes(good.read_bytes()[:100])  # header promises data that is not there
    out = tmp_path / "emb.npz"
    code, _, err = run_cli(capsys, "embed", good, broken, tmp_path / "missing.wav", "--model", MODEL,
                           "--checkpoint", checkpoint, "--output", out, "--num-workers", "0")  # fmt: skip
    assert code == 1
    assert "broken.wav: is truncated" in err and "missing.wav: file not found" in err and "2 of 3" in err
    data = np.load(out)
    assert list(data["ids"]) == [str(good)] and data["embeddings"].shape[0] == 1
