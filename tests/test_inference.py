"""The inference runner's machinery: streamed decoding of long files, memory layout and compilation options.

Every path must give the results the plain whole-file path gives; these tests compare the two.
"""

from __future__ import annotations

import copy
import logging
import threading
import tracemalloc

import numpy as np
import pytest
import soundfile as sf
import torch

from audiokit.inference import InferenceRunner, _stream_windows, placement, window_starts
from tests.conftest import informative_model

MODEL = "efficientat_mn01.audioset"


@pytest.fixture(scope="module")
def model():
    return informative_model(MODEL, seed=5)


@pytest.mark.parametrize(
    ("n", "window", "hop", "chunk"),
    [(1000, 100, 50, 37), (1000, 100, 100, 1000), (1001, 100, 30, 64), (99, 100, 50, 10), (100, 100, 50, 7),
     (950, 100, 250, 33), (5000, 480, 160, 1024)],
)  # fmt: skip
def test_stream_windows_cut_what_window_starts_prescribes(n, window, hop, chunk):
    signal = np.random.default_rng(n).standard_normal(n).astype(np.float32)
    chunks = [signal[i : i + chunk] for i in range(0, n, chunk)]
    got = list(_stream_windows(iter(chunks), window, hop, min_samples=1))
    expected = [(s, min(n, s + window)) for s in window_starts(n, window, hop)]
    assert [(s, e) for s, e, _ in got] == expected
    for s, e, samples in got:
        np.testing.assert_array_equal(samples, signal[s:e])


def test_stream_windows_pad_a_signal_shorter_than_the_minimum():
    (start, end, samples), = _stream_windows(iter([np.ones(30, np.float32)]), 100, 100, min_samples=64)  # fmt: skip
    assert (start, end) == (0, 30) and samples.shape == (64,) and samples[30:].sum() == 0


def _write(path, seconds, rate=44100, channels=2, subtype="PCM_16", seed=0):
    x = 0.2 * np.random.default_rng(seed).standard_normal((int(seconds * rate), channels))
    sf.write(path, x.astype(np.float32), rate, subtype=subtype)
    return path


@pytest.mark.parametrize(("window", "hop"), [(1.0, 0.5), (None, None)])
def test_streamed_long_files_give_the_whole_file_results(model, tmp_path, window, hop):
    paths = [_write(tmp_path / "long.wav", 4.3), _write(tmp_path / "short.flac", 1.2, rate=16000, channels=1)]
    whole = InferenceRunner(model, mode="scores", window=window, hop=hop, batch_size=3, device="cpu").run(paths)
    streamed = InferenceRunner(model, mode="scores", window=window, hop=hop, batch_size=3, device="cpu",
                               stream_seconds=2.0).run(paths)  # fmt: skip
    for a, b in zip(whole, streamed):
        assert a.ok and b.ok and a.path == b.path
        assert a.duration == pytest.approx(b.duration, abs=1e-9)
        assert [(s.start, s.end) for s in a.segments] == [(s.start, s.end) for s in b.segments]
        for sa, sb in zip(a.segments, b.segments):
            np.testing.assert_allclose(sa.values, sb.values, atol=1e-5)
        np.testing.assert_allclose(a.values, b.values, atol=1e-5)
    assert any("processed in" in w for w in streamed[0].warnings) == (window is None)


def test_streamed_decode_memory_does_not_grow_with_the_file(model, tmp_path):
    # tracemalloc sees numpy's buffers (the decode path), not torch's activations. Decoded whole, a file 4x as long
    # takes ~4x the memory (which shows the measurement can tell); streamed, the peak is the same.
    short = _write(tmp_path / "half_minute.wav", 30.0, rate=16000, channels=1)
    long = _write(tmp_path / "two_minutes.wav", 120.0, rate=16000, channels=1)

    def peak(path, stream_seconds: float) -> int:
        runner = InferenceRunner(model, mode="scores", window=2.0, batch_size=8, device="cpu",
                                 stream_seconds=stream_seconds)  # fmt: skip
        tracemalloc.start()
        try:
            (result,) = runner.run([path])
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
            assert result.ok and len(result.segments) == round(result.duration / 2)

    assert peak(long, 1e9) > 3 * peak(short, 1e9)
    assert peak(long, 5.0) < 1.3 * peak(short, 5.0)


def test_a_file_that_breaks_mid_stream_is_reported_and_the_rest_go_on(model, tmp_path):
    x = 0.1 * np.random.default_rng(1).standard_normal(32000 * 30).astype(np.float32)
    x[32000 * 25] = np.nan  # far past the first block
    bad = tmp_path / "nan_late.wav"
    sf.write(bad, x, 32000, subtype="FLOAT")
    good = _write(tmp_path / "good.wav", 3.0)
    runner = InferenceRunner(model, mode="scores", window=1.0, batch_size=4, device="cpu", stream_seconds=2.0)
    first, second, third = runner.run([good, bad, good])
    assert first.ok and third.ok
    assert not second.ok and str(bad) in second.error and "NaN" in second.error
    np.testing.assert_allclose(first.values, third.values, atol=1e-6)


def test_channels_last_does_not_change_results(tmp_path):
    cnn = informative_model("panns_cnn6.audioset")
    assert cnn.prefers_channels_last
    path = _write(tmp_path / "clip.wav", 2.0)
    plain = InferenceRunner(cnn, mode="scores", device="cpu", channels_last=False).run([path])[0].values
    runner = InferenceRunner(cnn, mode="scores", device="cpu")
    assert next(p for p in cnn.parameters() if p.dim() == 4).is_contiguous(memory_format=torch.channels_last)
    np.testing.assert_allclose(runner.run([path])[0].values, plain, atol=1e-5)


def test_compile_failure_falls_back_to_eager(model, tmp_path, monkeypatch, caplog):
    def broken_compile(fn, **kwargs):
        def run(*args):
            raise RuntimeError("no C++ compiler")

        return run

    path = _write(tmp_path / "clip.wav", 1.0)
    eager = InferenceRunner(model, mode="scores", device="cpu").run([path])[0].values
    monkeypatch.setattr(torch, "compile", broken_compile)
    runner = InferenceRunner(model, mode="scores", device="cpu", compile=True)
    with caplog.at_level(logging.WARNING, logger="audiokit.inference"):
        result = runner.run([path])[0]
    assert "torch.compile failed" in caplog.text and "no C++ compiler" in caplog.text
    np.testing.assert_array_equal(result.values, eager)


def test_invalid_stream_seconds_is_refused(model):
    with pytest.raises(ValueError, match="stream_seconds"):
        InferenceRunner(model, mode="scores", device="cpu", stream_seconds=0)


@pytest.mark.parametrize(
    ("cores", "device", "workers"), [(2, "cpu", 0), (4, "cpu", 0), (16, "cpu", 2), (2, "cuda", 1), (16, "cuda", 8)]
)
def test_default_workers_follow_the_cores_and_the_device(monkeypatch, cores, device, workers):
    monkeypatch.setattr(placement, "usable_cores", lambda: cores)
    assert placement.default_num_workers(torch.device(device)) == workers


def test_runner_resolves_default_workers_and_refuses_negative_ones(model, monkeypatch):
    monkeypatch.setattr(placement, "usable_cores", lambda: 16)
    assert InferenceRunner(model, mode="scores", device="cpu").num_workers == 2
    assert InferenceRunner(model, mode="scores", device="cpu", num_workers=1).num_workers == 1
    with pytest.raises(ValueError, match="num_workers"):
        InferenceRunner(model, mode="scores", device="cpu", num_workers=-1)


def _files_at_rates(tmp_path):
    rng = np.random.default_rng(7)
    paths = []
    for i, (rate, channels) in enumerate([(32000, 2), (32000, 1), (44100, 2), (48000, 1), (16000, 1)]):
        x = 0.2 * rng.standard_normal((int(rate * 1.5), channels))
        subtype = "FLOAT" if i == 1 else "PCM_16"
        paths.append(tmp_path / f"r{i}.wav")
        sf.write(paths[-1], x.astype(np.float32), rate, subtype=subtype)
    return paths


def test_device_preprocessing_matches_the_host_path(model, tmp_path):
    paths = _files_at_rates(tmp_path)
    host = InferenceRunner(model, mode="scores", device="cpu").run(paths)
    device = InferenceRunner(model, mode="scores", device="cpu", preprocess_on="device").run(paths)
    assert all(r.ok for r in host + device)
    # At the model's rate (int16 stereo, float mono) and when upsampling (kept on soxr) the paths are the same
    # arithmetic; downsampling uses torchaudio's kaiser_best filter instead of soxr HQ, which moves scores by ~1e-3.
    for i in (0, 1, 4):
        np.testing.assert_allclose(device[i].values, host[i].values, atol=1e-6)
    for i in (2, 3):
        np.testing.assert_allclose(device[i].values, host[i].values, atol=1e-2)
        assert not np.allclose(device[i].values, host[i].values, atol=1e-7)  # the device resampler did run


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_device_preprocessing_on_cuda_matches_the_cpu_path(model, tmp_path):
    paths = _files_at_rates(tmp_path)
    cpu = InferenceRunner(model, mode="scores", device="cpu").run(paths)
    gpu = InferenceRunner(copy.deepcopy(model), mode="scores", device="cuda", preprocess_on="device",
                          num_workers=2).run(paths)  # fmt: skip
    for a, b in zip(cpu, gpu):
        np.testing.assert_allclose(b.values, a.values, atol=1e-2)


def _record_forward_calls(model):
    """Attach a hook that records, per forward call: batch size, thread name and the thread's intra-op threads."""
    calls = []

    def hook(module, args):
        calls.append((args[0].shape[0], threading.current_thread().name, torch.get_num_threads()))

    return calls, model.register_forward_pre_hook(hook)


def test_cpu_streams_give_the_single_stream_results_in_input_order(model, tmp_path, monkeypatch):
    monkeypatch.setattr(placement, "usable_cores", lambda: 4)
    lengths = [1.0, 2.5, 1.0, 0.4, 2.5, 1.0, 3.0]
    paths = [_write(tmp_path / f"c{i}.wav", s, channels=1 + i % 2, seed=i) for i, s in enumerate(lengths)]
    paths.insert(3, tmp_path / "missing.wav")
    single = InferenceRunner(model, mode="scores", batch_size=2, device="cpu", cpu_streams=1).run(paths)
    threads_before = torch.get_num_threads()
    runner = InferenceRunner(model, mode="scores", batch_size=2, device="cpu")
    assert (runner.cpu_streams, runner.threads_per_stream) == (4, 1)
    calls, handle = _record_forward_calls(model)
    try:
        streamed = runner.run(paths)
    finally:
        handle.remove()
    assert [r.path for r in streamed] == [str(p) for p in paths]
    assert not streamed[3].ok and "missing.wav" in streamed[3].error
    for a, b in zip(single, streamed):
        assert a.ok == b.ok and a.duration == b.duration
        if a.ok:
            np.testing.assert_allclose(b.values, a.values, atol=1e-6)
    assert {name.startswith("audiokit-stream") for _, name, _ in calls} == {True}
    assert {threads for _, _, threads in calls} == {1}
    # The streams' setting does not leak to the caller, nor to threads started later (torch keeps a process default).
    assert torch.get_num_threads() == threads_before
    later = []
    probe = threading.Thread(target=lambda: later.append(torch.get_num_threads()))
    probe.start()
    probe.join()
    assert later == [threads_before]


@pytest.mark.parametrize(("files", "batch_size", "sizes"), [(5, 16, [2, 3]), (8, 8, [4, 4]), (9, 4, [2, 2, 2, 2, 1])])
def test_batches_are_split_among_the_streams(model, tmp_path, files, batch_size, sizes):
    paths = [_write(tmp_path / f"c{i}.wav", 1.0, seed=i) for i in range(files)]
    calls, handle = _record_forward_calls(model)
    try:
        runner = InferenceRunner(model, mode="scores", batch_size=batch_size, device="cpu", cpu_streams=2)
        results = runner.run(paths)
    finally:
        handle.remove()
    assert all(r.ok for r in results)
    assert sorted(size for size, _, _ in calls) == sorted(sizes)


def test_a_forward_that_fails_in_a_stream_reaches_the_caller(model, tmp_path):
    paths = [_write(tmp_path / f"c{i}.wav", 1.0, seed=i) for i in range(3)]

    def explode(module, args):
        raise RuntimeError("out of memory (simulated)")

    handle = model.register_forward_pre_hook(explode)
    try:
        with pytest.raises(RuntimeError, match="simulated"):
            InferenceRunner(model, mode="scores", batch_size=1, device="cpu", cpu_streams=2).run(paths)
    finally:
        handle.remove()


def test_invalid_cpu_streams_are_refused(model):
    with pytest.raises(ValueError, match="cpu_streams"):
        InferenceRunner(model, mode="scores", device="cpu", cpu_streams=0)
