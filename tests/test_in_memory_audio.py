"""Audio in memory for ``ak.tag`` and ``ak.embed``: arrays, tensors, bytes and file objects give what the same audio
read from a file gives, and a bad item is an error record naming it while the others go on.

Each comparison is against an independent path: the same samples written with soundfile (float32 for exactness, or
PCM_16 from int16 samples) and tagged as a file."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf
import torch

import audiokit as ak
from tests.conftest import informative_model

MODEL = "efficientat_mn01.audioset"  # random but informative weights: scores spread over (0, 1)
RUN = {"device": "cpu", "num_workers": 0}


@pytest.fixture(scope="module")
def model():
    return informative_model(MODEL, seed=5)


def _noise(seconds: float, rate: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    """Float32 noise, ``(T,)`` or ``(channels, T)`` as ``ak.tag`` takes it."""
    x = 0.2 * np.random.default_rng(seed).standard_normal((channels, round(seconds * rate)))
    return x[0].astype(np.float32) if channels == 1 else x.astype(np.float32)


def _write(path, samples: np.ndarray, rate: int, subtype: str = "FLOAT", format: str | None = None):
    """``samples`` as ``ak.tag`` takes them, written in soundfile's ``(frames, channels)`` layout."""
    sf.write(path, samples.T if samples.ndim == 2 else samples, rate, subtype=subtype, format=format)
    return path


def _tag(inputs, model, **kwargs):
    return ak.tag(inputs, model, top_k=0, **RUN, **kwargs)


def _scores(record: dict, names) -> np.ndarray:
    """Every class's score in the model's label order (records list them by score)."""
    assert record["error"] is None, record["error"]
    by_label = {item["label"]: item["score"] for item in record["labels"]}
    return np.array([by_label[name] for name in names])


def _assert_same_tags(got: dict, expected: dict, names) -> None:
    np.testing.assert_array_equal(_scores(got, names), _scores(expected, names))
    assert got["duration"] == expected["duration"]
    assert got["warnings"] == expected["warnings"]
    assert [(w["start"], w["end"]) for w in got["windows"]] == [(w["start"], w["end"]) for w in expected["windows"]]
    for a, b in zip(got["windows"], expected["windows"]):
        np.testing.assert_array_equal(_scores(a | {"error": None}, names), _scores(b | {"error": None}, names))


@pytest.mark.parametrize("window", [None, 0.4])
def test_an_array_tags_as_its_float32_wav(model, tmp_path, window):
    x = _noise(1.0, 16000)  # upsampled to the model's 32 kHz by soxr on both paths
    wav = _write(tmp_path / "x.wav", x, 16000)
    (got,) = _tag(x, model, sample_rate=16000, window=window)
    (expected,) = _tag(wav, model, window=window)
    _assert_same_tags(got, expected, model.label_names)
    assert got["path"] == "<array 0>" and got["size"] is None and got["mtime_ns"] is None
    assert bool(got["windows"]) == (window is not None)


def test_an_array_embeds_as_its_file(model, tmp_path):
    x = _noise(0.8, 22050, seed=1)
    wav = _write(tmp_path / "x.wav", x, 22050)
    got = ak.embed(x, model, sample_rate=22050, **RUN)
    expected = ak.embed(wav, model, **RUN)
    assert got.ids == ["<array 0>"] and got.errors == {}
    np.testing.assert_array_equal(got.vectors, expected.vectors)
    windowed = ak.embed(x, model, sample_rate=22050, window=0.5, hop=0.25, **RUN)
    assert windowed.ids == ["<array 0>@0.000-0.500", "<array 0>@0.250-0.750", "<array 0>@0.300-0.800"]
    np.testing.assert_array_equal(windowed.vectors, ak.embed(wav, model, window=0.5, hop=0.25, **RUN).vectors)


def test_flac_bytes_and_file_objects_decode_as_the_file(model, tmp_path):
    flac = _write(tmp_path / "x.flac", _noise(0.9, 44100, channels=2, seed=2), 44100, subtype="PCM_16")
    data = flac.read_bytes()
    with open(flac, "rb") as handle:
        handle.read(100)  # a file object is read from its start, wherever it stands
        records = _tag([data, bytearray(data), io.BytesIO(data), handle], model)
        assert not handle.closed  # the caller's to close
    assert [r["path"] for r in records] == ["<bytes 0>", "<bytes 1>", "<file 2>", "<file 3>"]
    for got, expected in zip(records, _tag([flac] * 4, model)):  # batched alike: a batch's size moves scores ~1e-6
        _assert_same_tags(got, expected, model.label_names)
    # Encoded audio carries its rate: one rate for the arrays does not apply to it.
    (got,) = _tag(data, model, sample_rate=8000)
    _assert_same_tags(got, _tag(flac, model)[0], model.label_names)


def test_a_stereo_array_is_one_clip_downmixed_and_resampled_as_the_stereo_file(model, tmp_path):
    x = _noise(1.1, 44100, channels=2, seed=3)
    x[1] *= 0.3  # unequal channels: a wrong downmix (or only one channel) shows
    wav = _write(tmp_path / "stereo.wav", x, 44100)
    records = _tag(x, model, sample_rate=44100)
    assert len(records) == 1  # (C, T) is one clip, not a batch of C
    _assert_same_tags(records[0], _tag(wav, model)[0], model.label_names)
    # Preprocessing on the model's device takes audio in memory the same way as files: torchaudio's resampler there,
    # whose scores differ from soxr's by ~1e-3, so taking the other way would show.
    (on_device,) = _tag(x, model, sample_rate=44100, preprocess_on="device")
    _assert_same_tags(on_device, _tag(wav, model, preprocess_on="device")[0], model.label_names)
    names = model.label_names
    assert np.abs(_scores(on_device, names) - _scores(records[0], names)).max() > 1e-5


def test_tensors_and_float64_arrays_tag_as_the_float32_array(model):
    x = _noise(0.7, 32000, seed=4)
    inputs = [torch.from_numpy(x).requires_grad_(), x.astype(np.float64), torch.from_numpy(x.astype(np.float64))]
    records = _tag(inputs, model, sample_rate=32000)
    assert [r["path"] for r in records] == ["<tensor 0>", "<array 1>", "<tensor 2>"]
    for got, expected in zip(records, _tag([x] * 3, model, sample_rate=32000)):
        _assert_same_tags(got, expected, model.label_names)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_tensor_on_a_gpu_tags_as_the_same_array(model):
    x = _noise(0.7, 16000, channels=2, seed=5)
    (expected,) = _tag(x, model, sample_rate=16000)
    (got,) = _tag(torch.from_numpy(x).cuda(), model, sample_rate=16000)
    _assert_same_tags(got, expected, model.label_names)


def test_int16_samples_are_pcm_as_a_16_bit_wav_holds_them(model, tmp_path):
    pcm = (_noise(0.6, 16000, channels=2, seed=6) * 32767).astype(np.int16)
    wav = _write(tmp_path / "pcm16.wav", pcm, 16000, subtype="PCM_16")
    (got,) = _tag(pcm, model, sample_rate=16000)
    _assert_same_tags(got, _tag(wav, model)[0], model.label_names)


def test_clips_of_different_lengths_and_rates_each_equal_their_file(model, tmp_path):
    clips = [(_noise(0.7, 16000, seed=7), 16000), (_noise(1.2, 44100, 2, seed=8), 44100), (_noise(0.5, 32000), 32000)]
    files = [_write(tmp_path / f"c{i}.wav", x, rate) for i, (x, rate) in enumerate(clips)]
    arrays, rates = [x for x, _ in clips], [rate for _, rate in clips]
    records = _tag(arrays, model, sample_rate=rates)
    assert [r["path"] for r in records] == ["<array 0>", "<array 1>", "<array 2>"]
    for got, expected in zip(records, _tag(files, model)):
        _assert_same_tags(got, expected, model.label_names)
    embedded = ak.embed(arrays, model, sample_rate=rates, **RUN)
    np.testing.assert_array_equal(embedded.vectors, ak.embed(files, model, **RUN).vectors)


def test_in_memory_items_keep_their_places_among_files_decoded_by_workers(model, tmp_path):
    a, b = _noise(0.6, 16000, seed=9), _noise(0.9, 48000, 2, seed=10)
    wav_a, wav_b = _write(tmp_path / "a.wav", a, 16000), _write(tmp_path / "b.wav", b, 48000)
    flac = _write(tmp_path / "c.flac", _noise(0.5, 16000, seed=11), 16000, subtype="PCM_16")
    inputs = [wav_b, a, flac, b, flac.read_bytes(), wav_a]
    rates = [None, 16000, None, 48000, None, None]
    # Two worker processes decode the files while the main process converts what is in memory; the files alone run
    # with the same workers, streams and batches, which decide the float rounding.
    run = {"top_k": 0, "device": "cpu", "num_workers": 2, "batch_size": 2}
    records = ak.tag(inputs, model, sample_rate=rates, **run)
    assert [r["path"] for r in records] == [str(wav_b), "<array 1>", str(flac), "<array 3>", "<bytes 4>", str(wav_a)]
    as_files = ak.tag([wav_b, wav_a, flac, wav_b, flac, wav_a], model, **run)
    for got, expected in zip(records, as_files):
        _assert_same_tags(got, expected, model.label_names)


def test_bad_items_are_error_records_naming_them_while_the_others_go_on(model, tmp_path):
    good = _noise(0.6, 16000, seed=12)
    wav = _write(tmp_path / "good.wav", good, 16000)
    nan = good.copy()
    nan[100] = np.nan
    garbage = b"RIFF not really a WAV file at all" * 10
    inputs = [good, nan, np.zeros(0, np.float32), np.zeros((2, 3, 4), np.float32), garbage, b"", good,
              good.reshape(-1, 2), good.astype(np.int32), wav]  # fmt: skip
    rates = [16000, 16000, 16000, 16000, None, None, None, 16000, 16000, None]
    records = _tag(inputs, model, sample_rate=rates)
    problems = {
        1: "<array 1>: contains NaN or infinite samples",
        2: "<array 2>: contains no audio samples",
        3: "<array 3>: has shape (2, 3, 4)",
        4: "<bytes 4>: not a readable audio file",
        5: "<bytes 5>: is empty (0 bytes)",
        6: "<array 6>: an array carries no sample rate: give it (sample_rate=)",
        7: "<array 7>: has shape (4800, 2): more channels than samples",
        8: "<array 8>: has samples of type int32",
    }
    for i, record in enumerate(records):
        if i in problems:
            assert record["error"].startswith(problems[i]), record["error"]
            assert record["labels"] == [] and record["duration"] is None
    as_files = _tag([wav, wav], model)
    _assert_same_tags(records[0], as_files[0], model.label_names)
    _assert_same_tags(records[-1], as_files[1], model.label_names)
    embedded = ak.embed(inputs, model, sample_rate=rates, **RUN)
    assert embedded.ids == ["<array 0>", str(wav)]
    assert sorted(embedded.errors) == sorted(f"<{'bytes' if i in (4, 5) else 'array'} {i}>" for i in problems)
    assert embedded.errors["<array 1>"] == records[1]["error"]


def test_audio_in_memory_longer_than_stream_seconds_gets_the_windows_of_the_streamed_file(model, tmp_path):
    x = _noise(2.5, 16000, seed=13)
    wav = _write(tmp_path / "long.wav", x, 16000)
    # The file is decoded block by block (soxr's streaming resampler), the array whole.
    (got,) = _tag(x, model, sample_rate=16000, stream_seconds=1.0)
    (expected,) = _tag(wav, model, stream_seconds=1.0)
    assert expected["warnings"] == ["longer than 1 s: processed in 10 s windows"]
    assert got["warnings"] == expected["warnings"] and got["duration"] == expected["duration"]
    names = model.label_names
    np.testing.assert_allclose(_scores(got, names), _scores(expected, names), rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    ("sample_rate", "message"),
    [
        (0, "sample_rate must be a positive whole number of Hz, got 0"),
        (16000.5, "sample_rate must be a positive whole number of Hz, got 16000.5"),
        (True, "sample_rate must be a positive whole number of Hz, got True"),
        ("16000", "sample_rate must be a number of Hz or one entry per input"),
        ([16000], "sample_rate has 1 entries for 2 inputs: give one per input"),
        ([16000, -1], r"sample_rate\[1\] must be a positive whole number of Hz, got -1"),
        ([16000, 16000], r"sample_rate\[1\] is given for <bytes 1>, which carries its own rate: give None there"),
    ],
)
def test_a_wrong_sample_rate_is_refused_before_the_model_loads(sample_rate, message):
    # A model name with downloads off: reaching the model would raise something else.
    with pytest.raises(ValueError, match=message):
        ak.tag([_noise(0.1, 16000), b"RIFF"], MODEL, sample_rate=sample_rate, **RUN)


def test_a_rate_given_for_a_file_and_an_unknown_input_type_are_refused(tmp_path):
    wav = _write(tmp_path / "x.wav", _noise(0.1, 16000), 16000)
    with pytest.raises(ValueError, match=r"sample_rate\[0\] is given for '.*x\.wav', which carries its own rate"):
        ak.embed([wav], MODEL, sample_rate=[16000], **RUN)
    with pytest.raises(TypeError, match="input 1 is a list: give a path, a numpy array, a torch tensor"):
        ak.tag([wav, [0.0, 0.1]], MODEL, sample_rate=16000, **RUN)
