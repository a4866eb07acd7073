"""Hostile and unlucky input to `audiokit tag`/`embed` and the audio loader: nothing destroyed, no traceback, no memory
bomb, no NaN sold as a score. Every test builds its hostile input itself."""

from __future__ import annotations

import contextlib
import json
import math
import os
import select
import signal
import stat
import struct
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import audiokit as ak
from audiokit._fileio import OutputPathError, atomic_write, check_output_path
from audiokit.audio import io as audio_io
from audiokit.audio.io import AudioLoadError
from audiokit.cli import EXIT_FILE_ERRORS, EXIT_OUTPUT, EXIT_USAGE, main
from audiokit.inference import _AudioFiles
from tests.conftest import informative_model

MODEL = "efficientat_mn01.audioset"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "mn01.pt"
    torch.save(informative_model(MODEL, seed=3).state_dict(), path)
    return path


def tag_cli(capsys, checkpoint, *argv):
    code = main(["tag", *map(str, argv), "--model", MODEL, "--checkpoint", str(checkpoint), "--num-workers", "0"])
    out, err = capsys.readouterr()
    return code, out, err


def strict_json(text: str):
    """json.loads that refuses NaN/Infinity, as RFC 8259 parsers do."""

    def refuse(token):
        raise ValueError(f"non-standard JSON token {token}")

    return json.loads(text, parse_constant=refuse)


@contextlib.contextmanager
def mounted_tmpfs(path: Path, size: str):
    path.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)]
    if subprocess.run(mount, capture_output=True).returncode:
        pytest.skip("mounting a tmpfs is not permitted here")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


# -- 1. --output never destroys what is at the path ---------------------------------------------------------------
def test_output_equal_to_an_input_is_refused_before_any_work(capsys, checkpoint, make_wav, tmp_path):
    wav = make_wav("x.wav", 1.0)
    before = wav.read_bytes()
    code, _, err = tag_cli(capsys, checkpoint, wav, "-o", wav)
    assert code == EXIT_USAGE and "is also an input" in err and str(wav) in err
    assert wav.read_bytes() == before
    # Through a symlink or a directory input, it is the same file.
    link = tmp_path / "link.json"
    link.symlink_to(wav)
    code, _, err = tag_cli(capsys, checkpoint, tmp_path, "-o", link)
    assert code == EXIT_USAGE and "is also an input" in err
    assert wav.read_bytes() == before and link.is_symlink()


def test_a_device_node_is_written_to_not_replaced(capsys, checkpoint, make_wav, tmp_path):
    node = tmp_path / "null"
    try:
        os.mknod(node, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # the numbers of /dev/null
    except PermissionError:
        pytest.skip("creating device nodes is not permitted here")
    try:
        node.open("wb").close()
    except OSError as err:
        pytest.skip(f"device nodes do not work on this file system (nodev?): {err}")
    code, _, _ = tag_cli(capsys, checkpoint, make_wav("x.wav", 1.0), "-o", node)
    assert code == 0
    assert stat.S_ISCHR(node.stat().st_mode) and os.major(node.stat().st_rdev) == 1


def test_a_fifo_receives_the_results(capsys, checkpoint, make_wav, tmp_path):
    fifo = tmp_path / "results.fifo"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()), daemon=True)
    reader.start()
    code, _, _ = tag_cli(capsys, checkpoint, make_wav("x.wav", 1.0), "--format", "json", "-o", fifo)
    reader.join(timeout=30)
    assert code == 0 and stat.S_ISFIFO(fifo.stat().st_mode)
    assert strict_json(received[0].decode())[0]["path"].endswith("x.wav")


def test_a_symlink_is_followed_and_modes_follow_umask_or_the_existing_file(capsys, checkpoint, make_wav, tmp_path):
    wav = make_wav("x.wav", 1.0)
    target = tmp_path / "real" / "tags.json"
    target.parent.mkdir()
    target.write_text("old")
    target.chmod(0o640)
    link = tmp_path / "tags-link.json"
    link.symlink_to(target)
    assert tag_cli(capsys, checkpoint, wav, "--format", "json", "-o", link)[0] == 0
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert strict_json(target.read_text())[0]["error"] is None
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    old = os.umask(0o027)
    try:
        fresh = tmp_path / "fresh.json"
        assert tag_cli(capsys, checkpoint, wav, "--format", "json", "-o", fresh)[0] == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o640  # 0o666 & ~0o027, as open() would give
    assert not [p.name for p in tmp_path.rglob(".*.tmp")]


def test_dash_and_dev_stdout_mean_stdout(capsys, checkpoint, make_wav):
    wav = make_wav("x.wav", 1.0)
    code, out, _ = tag_cli(capsys, checkpoint, wav, "--format", "jsonl", "-o", "-")
    assert code == 0 and not Path("-").exists()
    assert strict_json(out.splitlines()[0])["path"].endswith("x.wav")
    # Into a pipe, /dev/stdout resolves to "pipe:[...]", which is no path to create a file beside.
    argv = ["tag", wav, "--model", MODEL, "--checkpoint", checkpoint, "--format", "jsonl", "-o", "/dev/stdout"]
    done = subprocess.run([sys.executable, "-m", "audiokit", *map(str, argv)], capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert strict_json(done.stdout.decode())["path"] == str(wav)


def test_dev_stdout_redirected_to_a_file_appends_there_and_keeps_the_rest(checkpoint, make_wav, tmp_path):
    wav = make_wav("x.wav", 1.0)
    log = tmp_path / "log.txt"
    log.write_text("HEADER\n")
    argv = ["tag", wav, "--model", MODEL, "--checkpoint", checkpoint, "--format", "jsonl", "-o", "/dev/stdout"]
    with log.open("ab") as out:  # the shell's >>
        done = subprocess.run([sys.executable, "-m", "audiokit", *map(str, argv)], stdout=out,
                              stderr=subprocess.PIPE, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    header, line = log.read_text().splitlines()
    assert header == "HEADER" and strict_json(line)["path"] == str(wav)


def test_a_failing_standard_output_is_one_line_with_exit_3(checkpoint, make_wav):
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full on this system")
    argv = ["tag", make_wav("x.wav", 1.0), "--model", MODEL, "--checkpoint", checkpoint]
    with open("/dev/full", "wb") as full:
        done = subprocess.run([sys.executable, "-m", "audiokit", *map(str, argv)], stdout=full,
                              stderr=subprocess.PIPE, timeout=300)  # fmt: skip
    assert done.returncode == EXIT_OUTPUT
    assert done.stderr.decode().strip() == "audiokit: error: could not write standard output: No space left on device"


def test_the_checkpoint_and_an_empty_name_are_refused_as_output(capsys, checkpoint, make_wav, tmp_path):
    copy = tmp_path / "copy.pt"
    copy.write_bytes(checkpoint.read_bytes())
    code = main(["tag", str(make_wav("x.wav", 1.0)), "--model", MODEL, "--checkpoint", str(copy), "-o", str(copy)])
    assert code == EXIT_USAGE and "is also an input" in capsys.readouterr().err
    assert copy.read_bytes() == checkpoint.read_bytes()
    model_dir = tmp_path / "saved"
    ak.create_model(MODEL, checkpoint_path=checkpoint).save_pretrained(model_dir)
    code = main(["embed", str(make_wav("x.wav", 1.0)), "--model", f"local-dir:{model_dir}", "-o",
                 str(model_dir / "model.safetensors")])  # fmt: skip
    assert code == EXIT_USAGE and "is also an input" in capsys.readouterr().err
    for command in ("tag", "embed"):
        code = main([command, str(make_wav("x.wav", 1.0)), "--model", MODEL, "--checkpoint", str(checkpoint), "-o", ""])
        assert code == EXIT_USAGE and "--output is empty" in capsys.readouterr().err
    assert ak.create_model(f"local-dir:{model_dir}") is not None


# -- 2. the destination is checked first; a failing write is one line and keeps the old file -----------------------
@pytest.mark.parametrize("case", ["directory", "under_a_file", "socket"])
def test_unusable_destinations_fail_before_any_file_is_processed(capsys, checkpoint, make_wav, tmp_path, case):
    wav = make_wav("x.wav", 1.0)
    if case == "directory":
        destination = tmp_path / "out"
        destination.mkdir()
    elif case == "under_a_file":
        (tmp_path / "plain").write_text("")
        destination = tmp_path / "plain" / "tags.json"
    else:
        import socket

        destination = tmp_path / "s.sock"
        if len(str(destination)) > 100:
            pytest.skip("the temporary directory's path is too long for a Unix socket")
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(destination))
    # The only checkpoint given does not exist: an error about it would mean the model was loaded first.
    code = main(["tag", str(wav), "--model", MODEL, "--checkpoint", str(tmp_path / "never-read.pt"), "-o",
                 str(destination)])  # fmt: skip
    err = capsys.readouterr().err
    assert code == EXIT_USAGE and str(destination) in err and "never-read" not in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_read_only_file_system_and_full_disk(capsys, checkpoint, make_wav, tmp_path):
    wav = make_wav("x.wav", 1.0)
    with mounted_tmpfs(tmp_path / "small", "64k") as mount:
        (mount / "tags.json").write_text("previous results")
        (mount / "filler").write_bytes(bytes(48 * 1024))
        # A full disk: the results (~30 KB for all 527 labels) do not fit; the previous file stays as it was.
        code, _, err = tag_cli(capsys, checkpoint, wav, "--top-k", "0", "--format", "json", "-o", mount / "tags.json")
        assert code == EXIT_OUTPUT and "No space left on device" in err and str(mount / "tags.json") in err
        assert (mount / "tags.json").read_text() == "previous results"
        assert sorted(p.name for p in mount.iterdir()) == ["filler", "tags.json"]  # no temporary file left
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        code, _, err = tag_cli(capsys, checkpoint, wav, "-o", mount / "new.json")
        assert code == EXIT_USAGE and "Read-only file system" in err


def test_dev_full_reports_the_write_failure_in_one_line(capsys, checkpoint, make_wav):
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full on this system")
    code, _, err = tag_cli(capsys, checkpoint, make_wav("x.wav", 1.0), "-o", "/dev/full")
    assert code == EXIT_OUTPUT and err.strip().endswith("could not write /dev/full: No space left on device")


def test_atomic_write_refuses_a_directory_and_check_output_path_accepts_new_parents(tmp_path):
    with pytest.raises(IsADirectoryError):
        atomic_write(tmp_path, b"x")
    check_output_path(tmp_path / "a" / "b" / "out.json")  # parents are created at write time
    atomic_write(tmp_path / "a" / "b" / "out.json", "ok")
    assert (tmp_path / "a" / "b" / "out.json").read_text() == "ok"
    with pytest.raises(OutputPathError, match="is a directory"):
        check_output_path(tmp_path / "a")


# -- 3. files that resample to nothing -------------------------------------------------------------------------------
def _wav_with_header_rate(path: Path, frames: int, rate: int) -> Path:
    sf.write(path, np.full(frames, 0.1, np.float32), 16000, subtype="PCM_16")
    data = bytearray(path.read_bytes())
    assert data[12:16] == b"fmt "
    struct.pack_into("<II", data, 24, rate, (rate * 2) & 0xFFFFFFFF)  # sample rate, byte rate
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("frames, rate", [(1, 96000), (2, 192000), (10, 2**31 - 1)])
def test_a_file_that_resamples_to_nothing_is_that_files_error(capsys, checkpoint, make_wav, tmp_path, frames, rate):
    bad = _wav_with_header_rate(tmp_path / "tiny.wav", frames, rate)
    assert sf.info(str(bad)).samplerate == rate
    with pytest.raises(AudioLoadError, match="too short"):
        ak.load_audio(bad, sample_rate=32000)
    good = make_wav("good.wav", 1.0)
    code, out, _ = tag_cli(capsys, checkpoint, bad, good, "--format", "json")
    records = strict_json(out)
    assert code == EXIT_FILE_ERRORS and "too short" in records[0]["error"] and records[1]["labels"]
    out_file = tmp_path / "e.npz"
    code = main(["embed", str(bad), str(good), "--model", MODEL, "--checkpoint", str(checkpoint), "-o", str(out_file)])
    assert code == EXIT_FILE_ERRORS and list(np.load(out_file)["ids"]) == [str(good)]


# -- 4. names the OS refuses, and names that are not UTF-8 -------------------------------------------------------------
def test_a_name_too_long_is_a_per_file_error(capsys, checkpoint, make_wav, tmp_path):
    good = make_wav("good.wav", 1.0)
    long_name = tmp_path / ("x" * 300 + ".wav")
    code, out, _ = tag_cli(capsys, checkpoint, long_name, good, "--format", "json")
    records = strict_json(out)
    assert code == EXIT_FILE_ERRORS
    assert "file name too long" in records[0]["error"] and records[1]["error"] is None


def test_a_non_utf8_name_is_tagged_under_its_own_bytes(capsys, checkpoint, tmp_path):
    folder = os.fsencode(tmp_path / "latin1")
    os.mkdir(folder)
    raw_name = os.path.join(folder, b"caf\xe9.wav")
    rng = np.random.default_rng(0)
    try:
        sf.write(raw_name, (0.2 * rng.standard_normal(16000)).astype(np.float32), 16000)
    except (OSError, RuntimeError) as err:
        pytest.skip(f"this file system accepts UTF-8 names only: {err}")
    code, out, _ = tag_cli(capsys, checkpoint, os.fsdecode(folder), "--format", "json")
    record = strict_json(out)[0]
    assert code == 0 and record["error"] is None
    assert os.fsencode(record["path"]) == raw_name
    # CSV to a file and the table to stdout carry the same bytes through.
    out_csv = tmp_path / "tags.csv"
    argv = [os.fsdecode(raw_name), "--model", MODEL, "--checkpoint", str(checkpoint), "--num-workers", "0"]
    assert main(["tag", *argv, "--format", "csv", "-o", str(out_csv)]) == 0
    assert out_csv.read_bytes().splitlines()[1].startswith(raw_name + b",clip,")
    done = subprocess.run([sys.executable, "-m", "audiokit", "tag", *argv], capture_output=True, timeout=300)
    assert done.returncode == 0 and done.stdout.startswith(raw_name + b"  ("), done.stderr


# -- 5. glob patterns do not follow symlink cycles ------------------------------------------------------------------
def test_recursive_patterns_follow_the_directory_rules(tmp_path):
    (tmp_path / "d" / "sub").mkdir(parents=True)
    for name in ("d/a.wav", "d/sub/b.wav"):
        sf.write(tmp_path / name, np.zeros(160, np.float32), 16000)
    (tmp_path / "d" / "sub" / "up").symlink_to("..")
    (tmp_path / "d" / "sub" / "top").symlink_to("../..")
    (tmp_path / "d" / "alias.wav").symlink_to("a.wav")
    (tmp_path / "d" / ".hidden.wav").write_bytes((tmp_path / "d" / "a.wav").read_bytes())
    script = (
        "import sys, json; from audiokit.inference import expand_inputs; "
        "print(json.dumps([[str(p) for p in expand_inputs([a], recursive=True)] for a in sys.argv[1:]]))"
    )
    # In a child process with a timeout: the old expansion never ended on two cycles.
    patterns = [f"{tmp_path}/d/**/*.wav", f"{tmp_path}/d/**", f"{tmp_path}/d/**.wav", f"{tmp_path}/d/.*.wav"]
    done = subprocess.run([sys.executable, "-c", script, *patterns, f"{tmp_path}/d"],
                          capture_output=True, text=True, timeout=120, check=True)  # fmt: skip
    recursive, trailing, in_a_name, dotted, directory = json.loads(done.stdout)
    # As glob.glob: wildcards skip dot files unless the pattern spells the dot; "**" inside a name is "*".
    assert recursive == trailing == [f"{tmp_path}/d/a.wav", f"{tmp_path}/d/sub/b.wav"]
    assert in_a_name == [f"{tmp_path}/d/a.wav"] and dotted == [f"{tmp_path}/d/.hidden.wav"]
    assert directory == [f"{tmp_path}/d/.hidden.wav", f"{tmp_path}/d/a.wav", f"{tmp_path}/d/sub/b.wav"]


# -- minor: unreadable files, FIFOs and devices as inputs, an Ogg cut short --------------------------------------------
def test_an_unreadable_file_says_permission_denied():
    # Outside pytest's 0700 tree, in a directory everyone may enter: only the file's own mode stands in the way.
    with tempfile.TemporaryDirectory(prefix="audiokit-") as folder:
        os.chmod(folder, 0o755)
        _check_unreadable(Path(folder) / "locked.wav")


def _check_unreadable(path: Path) -> None:
    sf.write(path, np.zeros(1600, np.float32), 16000)
    path.chmod(0)
    if os.geteuid() != 0:
        with pytest.raises(AudioLoadError, match="permission denied"):
            ak.load_audio(path)
        return
    assert as_nobody(lambda: ak.load_audio(path)) == f"AudioLoadError: {path}: permission denied"


def as_nobody(action) -> str:
    """Run ``action`` in a forked child that has become the unprivileged user "nobody" (root reads and writes
    everything); returns ``"ok"`` or ``"<ExceptionType>: <message>"``. Skips where changing user is not permitted."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.setgid(65534)
            os.setuid(65534)
            action()
            message = "ok"
        except BaseException as err:
            message = f"{type(err).__name__}: {err}"
        os.write(write_end, message.encode())
        os._exit(0)
    os.close(write_end)
    ready, _, _ = select.select([read_end], [], [], 120)
    if not ready:
        os.kill(pid, signal.SIGKILL)
    with os.fdopen(read_end, "rb") as pipe:
        message = pipe.read().decode() if ready else "timed out"
    os.waitpid(pid, 0)
    if message.startswith("PermissionError: [Errno 1]"):
        pytest.skip("cannot become another user here")
    return message


def test_an_existing_file_the_user_may_not_write_is_refused_not_replaced():
    if os.geteuid() != 0:
        pytest.skip("needs root to prepare another user's file")
    with tempfile.TemporaryDirectory(prefix="audiokit-") as folder:
        os.chmod(folder, 0o777)  # the directory is writable: only the file's own mode protects it
        theirs = Path(folder) / "root-owned.json"
        theirs.write_text("keep me")
        theirs.chmod(0o644)
        message = as_nobody(lambda: check_output_path(theirs))
        assert message == f"OutputPathError: output {theirs}: not writable"
        sticky = Path(folder) / "sticky"
        sticky.mkdir()
        sticky.chmod(0o1777)  # as /tmp
        shared = sticky / "shared.json"
        shared.write_text("keep me")
        shared.chmod(0o666)  # writable by all, but in a sticky directory only its owner may replace it
        assert "sticky directory" in as_nobody(lambda: check_output_path(shared))
        assert theirs.read_text() == shared.read_text() == "keep me"


def test_fifos_and_devices_are_refused_without_reading_them(tmp_path):
    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)
    with pytest.raises(AudioLoadError, match="is a FIFO"):
        ak.load_audio(fifo)  # opening it for reading would block forever
    with pytest.raises(AudioLoadError, match="is a character device"):
        ak.load_audio("/dev/urandom")


def test_an_ogg_cut_in_half_is_tagged_with_a_warning(checkpoint, tmp_path):
    rng = np.random.default_rng(1)
    whole = tmp_path / "whole.ogg"
    sf.write(whole, (0.2 * rng.standard_normal(4 * 16000)).astype(np.float32), 16000, format="OGG", subtype="VORBIS")
    cut = tmp_path / "cut.ogg"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    notes: list[str] = []
    ak.load_audio(whole, on_warning=notes.append)
    assert notes == []
    ak.load_audio(cut, on_warning=notes.append)
    assert len(notes) == 1 and "cut short" in notes[0]
    model = ak.create_model(MODEL, checkpoint_path=checkpoint)
    whole_record, cut_record = ak.tag([whole, cut], model=model, num_workers=0)
    assert not any("cut short" in w for w in whole_record["warnings"])
    assert any("cut short" in w for w in cut_record["warnings"]) and cut_record["error"] is None
    # Long files are decoded block by block, on another path: the same warning.
    (streamed,) = ak.tag([cut], model=model, num_workers=0, stream_seconds=1.0)
    assert any("cut short" in w for w in streamed["warnings"]) and streamed["error"] is None


# -- 6. device-side resampling never builds a huge kernel ----------------------------------------------------------
@pytest.mark.parametrize("orig, target", [(44100, 32000), (22050, 32000), (48000, 16000), (11025, 16000)])
def test_the_kernel_size_estimate_is_torchaudios(orig, target):
    import torchaudio

    resampler = torchaudio.transforms.Resample(orig, target, **audio_io._KAISER_BEST)
    assert audio_io.device_resampler_taps(orig, target) == resampler.kernel.numel()


def test_coprime_rates_take_the_host_resampler(tmp_path):
    assert audio_io.device_resampler_taps(96001, 32000) > 3e9  # 12 GB of float32: what used to be built
    assert not audio_io.device_resampling_supported(32001, 32000)
    assert audio_io.device_resampling_supported(44100, 32000)
    rng = np.random.default_rng(2)
    path = tmp_path / "odd_rate.wav"
    sf.write(path, (0.2 * rng.standard_normal(32001)).astype(np.float32), 32001)
    item = _AudioFiles([path], 32000, stream_seconds=300, raw=True)[0]
    assert item.error is None and item.pcm is None  # decoded to 32 kHz on the host, with soxr
    torch.testing.assert_close(item.wave, ak.load_audio(path, sample_rate=32000), rtol=0, atol=0)
    # Called directly, the device function takes the same way out for such a pair of rates.
    pcm = torch.from_numpy(audio_io.read_pcm(path)[0])
    torch.testing.assert_close(audio_io.pcm_to_waveform_on(pcm, 32001, 32000), item.wave, rtol=0, atol=0)


def test_the_resampler_cache_is_bounded_in_bytes(monkeypatch):
    monkeypatch.setattr(audio_io, "_resamplers", type(audio_io._resamplers)())
    monkeypatch.setattr(audio_io, "_RESAMPLER_CACHE_BYTES", 2_000_000)
    for orig in (44100, 22050, 11025, 88200):  # 0.8, 1.5, 1.5, 0.5 MB of kernel
        audio_io._torch_resampler(orig, 32000, "cpu")
    total = sum(size for _, size in audio_io._resamplers.values())
    assert total <= 2_000_000 and (88200, 32000, "cpu") in audio_io._resamplers


# -- 8. non-finite output is an error, and JSON is strict ----------------------------------------------------------
def test_a_finite_but_enormous_input_is_an_error_not_nan_scores(capsys, checkpoint, make_wav, tmp_path):
    rng = np.random.default_rng(0)
    loud = tmp_path / "loud.wav"
    sf.write(loud, (1e20 * rng.standard_normal(16000)).astype(np.float32), 16000, subtype="FLOAT")
    good = make_wav("good.wav", 1.0)
    for fmt in ("json", "jsonl"):
        code, out, err = tag_cli(capsys, checkpoint, loud, good, "--format", fmt)
        records = strict_json(out) if fmt == "json" else [strict_json(line) for line in out.splitlines()]
        assert code == EXIT_FILE_ERRORS
        assert "non-finite scores" in records[0]["error"] and "peak level" in records[0]["error"]
        assert records[0]["labels"] == [] and records[1]["error"] is None
        assert f"{loud}: the model produced non-finite scores" in err


# -- 10, 11. usage errors, one line each ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "option, value",
    [("--top-k", "-1"), ("--top-k", "-527"), ("--threshold", "nan"), ("--threshold", "inf"), ("--window", "inf"),
     ("--hop", "inf"), ("--window", "nan"), ("--batch-size", "0"), ("--num-workers", "-1")],
)  # fmt: skip
def test_bad_numbers_are_usage_errors(capsys, checkpoint, make_wav, option, value):
    with pytest.raises(SystemExit) as exit_info:
        tag_cli(capsys, checkpoint, make_wav("x.wav", 1.0), option, value, "--window", "1")
    assert exit_info.value.code == EXIT_USAGE
    err = capsys.readouterr().err
    assert option in err and "Traceback" not in err


@pytest.mark.parametrize("device", ["bogus", "meta", "cuda:99"])
def test_unknown_devices_are_one_line(capsys, checkpoint, make_wav, device):
    code, _, err = tag_cli(capsys, checkpoint, make_wav("x.wav", 1.0), "--device", device)
    assert code == EXIT_USAGE and err.count("\n") == 1 and "device" in err


def test_library_calls_check_the_same_numbers(checkpoint, make_wav):
    model = ak.create_model(MODEL, checkpoint_path=checkpoint)
    wav = make_wav("x.wav", 1.0)
    for kwargs in ({"top_k": -1}, {"threshold": math.nan}, {"window": math.inf}, {"window": 1.0, "hop": math.inf}):
        with pytest.raises(ValueError):
            ak.tag([wav], model=model, num_workers=0, **kwargs)
    with pytest.raises(ValueError, match="top_k"):
        ak.top_k(np.zeros(3), ["a", "b", "c"], k=-1)


def test_json_files_are_strict_rfc_8259():
    from audiokit._fileio import to_json

    text = to_json({"auc": float("nan"), "ece": np.float32(0.25), "n": np.int64(3), "curve": np.array([1.0, np.inf])})
    assert strict_json(text) == {"auc": None, "ece": 0.25, "n": 3, "curve": [1.0, None]}
