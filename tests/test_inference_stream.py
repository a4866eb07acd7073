"""Tagging at scale: records streamed to the output as files finish, file lists, the in-flight cap, and --resume
(after a kill -9, after a torn last record, with a changed input, and refused for other models or settings)."""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf
import torch

from audiokit.cli import EXIT_OK, EXIT_USAGE, main
from audiokit.inference import InferenceRunner, ResumeError, tag_to
from tests.conftest import informative_model

MODEL = "efficientat_mn01.audioset"


@pytest.fixture(scope="module")
def model():
    return informative_model(MODEL, seed=5)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "mn01.pt"
    torch.save(informative_model(MODEL, seed=3).state_dict(), path)
    return path


@pytest.fixture
def clips(tmp_path):
    """Ten short clips, two of them stereo at 44.1 kHz, and a name that does not exist (an error record)."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "clips"
    folder.mkdir()
    paths = []
    for i in range(10):
        rate, channels = (44100, 2) if i % 5 == 0 else (16000, 1)
        path = folder / f"c{i:02d}.wav"
        sf.write(path, (0.2 * rng.standard_normal((int(rate * (0.4 + 0.05 * i)), channels))).astype(np.float32), rate)
        paths.append(path)
    paths.insert(4, folder / "missing.wav")
    return paths


def _cli(checkpoint, *argv):
    base = ["--model", MODEL, "--checkpoint", str(checkpoint), "--num-workers", "0", "-q"]
    return main([*map(str, argv), *base])


def _records(path):
    """JSONL: (header, records); CSV: (sidecar header, rows grouped per file, in order)."""
    if path.suffix == ".jsonl":
        first, *rest = path.read_text().splitlines()
        return json.loads(first)["header"], [json.loads(line) for line in rest]
    header = json.loads(path.with_name(path.name + ".header.json").read_text())["header"]
    files: list[list[dict]] = [[]]
    for row in csv.DictReader(path.open(newline="")):
        files[-1].append(row)
        if row["scope"] == "file":
            files.append([])
    assert files[-1] == [], "rows after the last file row"
    return header, files[:-1]


def _assert_same_output(got, expected):
    """Same header, the same files once each in the same order, the same scores (to float rounding)."""
    (header_a, a), (header_b, b) = _records(got), _records(expected)
    assert header_a == header_b
    if got.suffix == ".jsonl":
        assert [r["path"] for r in a] == [r["path"] for r in b]
        for x, y in zip(a, b):
            assert (x["error"], x["size"], x["mtime_ns"]) == (y["error"], y["size"], y["mtime_ns"])
            assert [i["label"] for i in x["labels"]] == [i["label"] for i in y["labels"]]
            np.testing.assert_allclose([i["score"] for i in x["labels"]], [i["score"] for i in y["labels"]], atol=1e-6)
    else:
        assert [rows[-1]["path"] for rows in a] == [rows[-1]["path"] for rows in b]
        for x, y in zip(a, b):
            assert [(r["scope"], r["label"], r["size"], r["mtime_ns"], r["error"]) for r in x] == [
                (r["scope"], r["label"], r["size"], r["mtime_ns"], r["error"]) for r in y
            ]
            np.testing.assert_allclose([float(r["score"] or 0) for r in x], [float(r["score"] or 0) for r in y],
                                       atol=2e-6)  # fmt: skip


# -- streamed output -----------------------------------------------------------------------------------------------
def test_the_output_grows_by_one_complete_record_per_finished_file(model, clips, tmp_path):
    out = tmp_path / "tags.jsonl"
    seen = []

    def check(record):
        seen.append(record)
        lines = out.read_bytes().split(b"\n")
        assert lines[-1] == b"", "the file ends in the middle of a line"
        header, *written = lines[:-1]
        assert "header" in json.loads(header)
        assert [json.loads(line) for line in written] == seen

    run = tag_to(out, clips, model, batch_size=4, device="cpu", cpu_streams=1, num_workers=0, on_record=check)
    assert run.written == len(seen) == len(clips) and run.skipped == 0
    assert [r["path"] for r in seen] == [str(p) for p in clips]  # input order, through the reordering buffer
    missing = seen[4]
    assert "missing.wav" in missing["error"] and missing["size"] is None and run.errors == [missing["error"]]
    ok = seen[0]
    assert ok["error"] is None and ok["size"] == clips[0].stat().st_size
    assert ok["mtime_ns"] == clips[0].stat().st_mtime_ns and len(ok["labels"]) == 5


def test_streamed_records_hold_what_tag_returns(model, clips, tmp_path):
    from audiokit.inference import tag

    out = tmp_path / "tags.jsonl"
    tag_to(out, clips, model, top_k=3, window=0.3, hop=0.2, device="cpu", num_workers=0)
    expected = tag(clips, model, top_k=3, window=0.3, hop=0.2, device="cpu", num_workers=0, batch_size=1)
    header, records = _records(out)
    assert header["settings"]["window"] == 0.3 and header["settings"]["top_k"] == 3
    assert header["model"] == MODEL and len(header["weights_sha256"]) == 64
    assert [r["path"] for r in records] == [r["path"] for r in expected]
    for got, want in zip(records, expected):
        assert [w["start"] for w in got["windows"]] == [w["start"] for w in want["windows"]]
        for a, b in zip([got, *got["windows"]], [want, *want["windows"]]):
            np.testing.assert_allclose([x["score"] for x in a["labels"]], [x["score"] for x in b["labels"]], atol=1e-6)


def test_the_number_of_files_in_flight_is_capped(model, tmp_path):
    # Every file has its own length, so no batch ever fills: without the cap all of them would wait in the
    # reordering buffer until the end of the input.
    paths = []
    for i in range(24):
        path = tmp_path / f"len{i:02d}.wav"
        sf.write(path, np.full(3200 + 37 * i, 0.1, np.float32), 16000)
        paths.append(path)
    for workers in (0, 2):
        runner = InferenceRunner(model, mode="scores", batch_size=2, cpu_streams=1, num_workers=workers, device="cpu")
        pulled = 0

        def source():
            nonlocal pulled
            for path in paths:
                pulled += 1
                yield path

        in_flight = []
        for done, result in enumerate(runner.iter_results(source()), 1):
            assert result.ok
            in_flight.append(pulled - done + 1)
        assert done == len(paths)
        assert max(in_flight) <= runner.max_in_flight == runner.max_pending + 2 * workers
        assert max(in_flight) >= runner.max_pending  # the buffer did fill up to its cap: the cap was what held it


def test_an_existing_output_is_not_overwritten_without_resume(checkpoint, clips, tmp_path, capsys):
    out = tmp_path / "tags.jsonl"
    out.write_text("precious\n")
    assert _cli(checkpoint, "tag", *clips, "--format", "jsonl", "-o", out) == EXIT_USAGE
    assert "--resume continues it" in capsys.readouterr().err and out.read_text() == "precious\n"


# -- file lists ----------------------------------------------------------------------------------------------------
def test_files_from_a_list_and_from_stdin(checkpoint, clips, tmp_path, capsys, monkeypatch):
    order = [clips[3], clips[0], clips[4], clips[0]]  # the list's order, a repeat kept, a missing file reported
    listing = tmp_path / "list.txt"
    listing.write_bytes(b"".join(os.fsencode(p) + b"\n" for p in order[:2]) + b"\n" + os.fsencode(order[2]) + b"\r\n")
    code = _cli(checkpoint, "tag", clips[3], "--files-from", listing, "--format", "jsonl")
    out = capsys.readouterr().out
    assert code == 1  # the missing file
    assert [json.loads(line)["path"] for line in out.splitlines()] == [str(p) for p in [clips[3], *order[:3]]]
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"".join(os.fsencode(p) + b"\n" for p in order))))
    code = _cli(checkpoint, "tag", "--files-from", "-", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert code == 1 and [r["path"] for r in rows if r["scope"] == "file"] == [str(p) for p in order]
    assert _cli(checkpoint, "tag", "--files-from", tmp_path / "nope.txt") == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--files-from" in err and "nope.txt: no such file" in err


def test_files_from_is_read_as_the_run_goes(model, tmp_path):
    from audiokit.inference import iter_inputs, read_file_list

    listing = tmp_path / "list.txt"
    listing.write_text("".join(f"{tmp_path}/f{i}.wav\n" for i in range(1000)))
    names = iter_inputs(read_file_list(listing))
    assert str(next(names)) == f"{tmp_path}/f0.wav"  # nothing read past what was asked for but the file's buffer
    assert sum(1 for _ in names) == 999


# -- resume --------------------------------------------------------------------------------------------------------
def _complete_records(path, fmt):
    data = path.read_bytes() if path.exists() else b""
    data = data[: data.rfind(b"\n") + 1]
    if fmt == "jsonl":
        return max(0, data.count(b"\n") - 1)
    return sum(1 for row in csv.reader(io.StringIO(data.decode())) if len(row) > 1 and row[1] == "file")


def _open_fifo_writer(fifo, proc, deadline):
    while True:
        try:
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as err:
            if err.errno != errno.ENXIO or proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the run never opened its file list: {proc.communicate()[1]}") from None
            time.sleep(0.05)


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_kill_9_mid_run_then_resume_gives_the_uninterrupted_output(checkpoint, clips, tmp_path, fmt):
    # A real process killed with SIGKILL (a few seconds: it starts python and torch). Its file list is a FIFO, fed
    # five names; once five records are on disk the process is waiting for the sixth name, and is killed there.
    out, reference = tmp_path / f"killed.{fmt}", tmp_path / f"reference.{fmt}"
    fifo = tmp_path / "names.fifo"
    os.mkfifo(fifo)
    argv = ["tag", "--files-from", str(fifo), "--model", MODEL, "--checkpoint", str(checkpoint), "--format", fmt,
            "-o", str(out), "--num-workers", "0", "--cpu-streams", "1", "--batch-size", "1", "-q"]  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "audiokit", *argv], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        writer = _open_fifo_writer(fifo, proc, deadline)
        os.write(writer, b"".join(os.fsencode(p) + b"\n" for p in clips[:5]))
        while _complete_records(out, fmt) < 5:
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1]
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
        os.close(writer)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()
    assert _complete_records(out, fmt) == 5
    listing = tmp_path / "list.txt"
    listing.write_text("".join(f"{p}\n" for p in clips))
    options = ["--files-from", listing, "--format", fmt, "--batch-size", "3"]
    assert _cli(checkpoint, "tag", *options, "-o", out, "--resume") == 1  # the missing file, recorded before the kill
    assert _cli(checkpoint, "tag", *options, "-o", reference) == 1
    _assert_same_output(out, reference)
    assert _cli(checkpoint, "tag", *options, "-o", out, "--resume") == 1  # nothing left to do: nothing changes
    _assert_same_output(out, reference)


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_a_torn_last_record_is_dropped_and_redone(checkpoint, clips, tmp_path, fmt, caplog):
    reference, out = tmp_path / f"reference.{fmt}", tmp_path / f"torn.{fmt}"
    assert _cli(checkpoint, "tag", *clips, "--format", fmt, "-o", reference) == 1
    data = reference.read_bytes()
    # Keep four complete records, then half of the fifth (for CSV: its first rows and half a row, no file row).
    if fmt == "jsonl":
        cut = [i for i, b in enumerate(data) if b == ord("\n")][4]
        torn = data[: cut + 1] + data[cut + 1 : cut + 60]
    else:
        ends = [i for i, line in enumerate(data.splitlines(keepends=True)) if b",file," in line]
        lines = data.splitlines(keepends=True)
        torn = b"".join(lines[: ends[3] + 1]) + b"".join(lines[ends[3] + 1 : ends[3] + 3]) + lines[ends[3] + 3][:20]
        (tmp_path / f"torn.{fmt}.header.json").write_bytes((tmp_path / f"reference.{fmt}.header.json").read_bytes())
    out.write_bytes(torn)
    with caplog.at_level("WARNING"):
        assert _cli(checkpoint, "tag", *clips, "--format", fmt, "-o", out, "--resume") == 1
    assert "dropped an incomplete last record" in caplog.text
    _assert_same_output(out, reference)


def test_a_changed_file_is_redone_and_recorded_once(model, clips, tmp_path):
    out = tmp_path / "tags.jsonl"
    tag_to(out, clips, model, device="cpu", num_workers=0)
    _, before = _records(out)
    changed = clips[2]
    sf.write(changed, (0.3 * np.random.default_rng(9).standard_normal(12345)).astype(np.float32), 16000)
    run = tag_to(out, clips, model, device="cpu", num_workers=0, resume=True)
    assert (run.written, run.skipped, run.earlier_errors) == (1, len(clips) - 1, 1)
    _, after = _records(out)
    assert sorted(r["path"] for r in after) == sorted(str(p) for p in clips)  # each file once
    redone = next(r for r in after if r["path"] == str(changed))
    assert redone["size"] == changed.stat().st_size and redone["labels"] != before[2]["labels"]
    fresh = tmp_path / "fresh.jsonl"
    tag_to(fresh, clips, model, device="cpu", num_workers=0)
    want = next(r for r in _records(fresh)[1] if r["path"] == str(changed))
    np.testing.assert_allclose([x["score"] for x in redone["labels"]], [x["score"] for x in want["labels"]], atol=1e-6)
    assert [r for r in after if r["path"] != str(changed)] == [r for r in before if r["path"] != str(changed)]


def test_resume_refuses_other_settings_another_model_and_foreign_files(checkpoint, clips, tmp_path, capsys, model):
    out = tmp_path / "tags.jsonl"
    assert _cli(checkpoint, "tag", *clips[:3], "--format", "jsonl", "-o", out, "--top-k", "3") == EXIT_OK
    before = out.read_bytes()
    assert _cli(checkpoint, "tag", *clips[:3], "--format", "jsonl", "-o", out, "--resume") == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "top_k 3 (now 5)" in err and str(out) in err
    other = tmp_path / "other.pt"
    torch.save(informative_model(MODEL, seed=4).state_dict(), other)
    assert _cli(other, "tag", *clips[:3], "--format", "jsonl", "-o", out, "--resume", "--top-k", "3") == EXIT_USAGE
    assert "other weights" in capsys.readouterr().err
    assert out.read_bytes() == before
    foreign = tmp_path / "notes.jsonl"
    foreign.write_text('{"path": "x.wav"}\n')
    with pytest.raises(ResumeError, match="audiokit tag header"):
        tag_to(foreign, clips[:1], model, device="cpu", resume=True)
    assert _cli(checkpoint, "tag", *clips[:1], "--format", "json", "-o", tmp_path / "t.json", "--resume") == EXIT_USAGE
    assert "--resume continues a --format jsonl or csv" in capsys.readouterr().err
