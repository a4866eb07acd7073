"""load_audio: formats, channel handling, resampling, and a clear error for every kind of bad file."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from audiokit import AudioLoadError, load_audio
from audiokit.audio.io import pcm_to_waveform_on, read_pcm, stream_audio


def _tone(freq: float, rate: int, seconds: float, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.mark.parametrize(
    ("fmt", "subtype", "ext", "atol"),
    [
        ("WAV", "PCM_16", ".wav", 1 / 32768),
        ("WAV", "PCM_24", ".wav", 1 / 2**23),
        ("WAV", "FLOAT", ".wav", 0.0),
        ("FLAC", "PCM_16", ".flac", 1 / 32768),
        ("OGG", "VORBIS", ".ogg", 0.05),
        ("MP3", "MPEG_LAYER_III", ".mp3", 0.1),
    ],
)
def test_formats_decode_to_the_written_signal(tmp_path, fmt, subtype, ext, atol):
    rate = 16000
    x = _tone(440.0, rate, 1.0)
    path = tmp_path / f"tone{ext}"
    sf.write(path, x, rate, format=fmt, subtype=subtype)
    y = load_audio(path)
    assert y.dtype == torch.float32 and y.dim() == 1
    if fmt in ("OGG", "MP3"):  # lossy codecs (MP3 adds encoder delay): compare energy rather than samples
        assert abs(len(y) - len(x)) <= 2000
        assert np.sqrt(np.mean(y.numpy() ** 2)) == pytest.approx(np.sqrt(np.mean(x**2)), rel=0.1)
    else:
        np.testing.assert_allclose(y.numpy(), x, atol=atol + 1e-7)


def test_int16_scaling_is_full_scale(tmp_path):
    pcm = np.array([0, 16384, -32768, 32767], dtype=np.int16)
    path = tmp_path / "pcm.wav"
    sf.write(path, pcm, 8000, subtype="PCM_16")
    np.testing.assert_array_equal(load_audio(path).numpy(), pcm.astype(np.float32) / 32768)


@pytest.mark.parametrize(("subtype", "channels"), [("PCM_16", 1), ("PCM_16", 2), ("PCM_U8", 2), ("PCM_16", 3)])
def test_integer_fast_path_equals_libsndfile_float_decode(tmp_path, subtype, channels):
    # 8/16-bit PCM is read as int16 and scaled here; the result must be what libsndfile's own float decode gives.
    x = 0.4 * np.random.default_rng(3).standard_normal((8000, channels))
    path = tmp_path / "pcm.wav"
    sf.write(path, np.clip(x, -1, 1), 8000, subtype=subtype)
    reference, _ = sf.read(path, dtype="float32", always_2d=True)
    mono = load_audio(path).numpy()
    if channels <= 2:  # exact: sums of int16 values and power-of-two scales have no round-off
        np.testing.assert_array_equal(mono, reference.mean(axis=1, dtype=np.float32))
    else:
        np.testing.assert_allclose(mono, reference.mean(axis=1), atol=1e-7)
    np.testing.assert_array_equal(load_audio(path, mono=False).numpy(), reference.T)


@pytest.mark.parametrize(
    ("rate", "target", "subtype", "ext", "block"),
    [
        (44100, 32000, "PCM_16", ".wav", 0.37),
        (16000, None, "FLOAT", ".wav", 0.1),
        (48000, 16000, "PCM_16", ".flac", 1.0),
    ],
)
def test_streamed_decode_equals_whole_file_decode(tmp_path, rate, target, subtype, ext, block):
    x = 0.3 * np.random.default_rng(4).standard_normal((int(rate * 2.5), 2))
    path = tmp_path / f"long{ext}"
    sf.write(path, x.astype(np.float32), rate, subtype=subtype)
    whole = load_audio(path, target).numpy()
    chunks = list(stream_audio(path, target, block_seconds=block))
    assert len(chunks) > 1 and all(c.dtype == np.float32 and c.ndim == 1 for c in chunks)
    streamed = np.concatenate(chunks)
    assert streamed.shape == whole.shape
    np.testing.assert_allclose(streamed, whole, atol=1e-6)


def test_stereo_is_averaged_to_mono_and_kept_on_request(tmp_path):
    left, right = _tone(300, 48000, 0.5), _tone(500, 48000, 0.5, amp=0.25)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, right], axis=1), 48000, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(path).numpy(), (left + right) / 2, atol=1e-7)
    both = load_audio(path, mono=False)
    assert both.shape == (2, len(left))
    np.testing.assert_allclose(both[1].numpy(), right, atol=1e-7)


@pytest.mark.parametrize(("orig", "target"), [(8000, 32000), (48000, 32000), (44100, 16000)])
def test_resampling_preserves_a_tone(tmp_path, orig, target):
    path = tmp_path / "tone.wav"
    sf.write(path, _tone(1000.0, orig, 1.0), orig, subtype="FLOAT")
    y = load_audio(path, sample_rate=target).numpy()
    assert len(y) == target
    expected = _tone(1000.0, target, 1.0)
    middle = slice(target // 10, -target // 10)  # away from the filter's edge transients
    np.testing.assert_allclose(y[middle], expected[middle], atol=2e-3)


def test_same_rate_is_untouched(tmp_path):
    x = np.random.default_rng(0).uniform(-1, 1, 3200).astype(np.float32)
    path = tmp_path / "x.wav"
    sf.write(path, x, 32000, subtype="FLOAT")
    np.testing.assert_array_equal(load_audio(path, sample_rate=32000).numpy(), x)


# -- bad input ---------------------------------------------------------------------------------------------------------
def _wav_bytes(tmp_path, frames=16000) -> bytes:
    path = tmp_path / "good.wav"
    sf.write(path, _tone(440, 16000, frames / 16000), 16000, subtype="PCM_16")
    return path.read_bytes()


def _expect_error(path, *fragments):
    """Whole-file and streamed decoding must both refuse the file, naming it and the problem."""
    for decode in (load_audio, lambda p: list(stream_audio(p, 32000, block_seconds=0.01))):
        with pytest.raises(AudioLoadError) as info:
            decode(path)
        message = str(info.value)
        assert str(path) in message
        for fragment in fragments:
            assert fragment in message, message
    return message


def test_missing_file(tmp_path):
    _expect_error(tmp_path / "nope.wav", "not found")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    _expect_error(path, "empty")


def test_text_file_named_wav(tmp_path):
    path = tmp_path / "notes.wav"
    path.write_text("this is not audio\n" * 10)
    _expect_error(path, "not a readable audio file")


def test_header_without_data(tmp_path):
    path = tmp_path / "header_only.wav"
    path.write_bytes(_wav_bytes(tmp_path)[:44])
    _expect_error(path, "truncated")


def test_truncated_wav(tmp_path):
    data = _wav_bytes(tmp_path)
    path = tmp_path / "cut.wav"
    path.write_bytes(data[: len(data) // 2])
    _expect_error(path, "truncated")


def test_truncated_flac(tmp_path):
    src = tmp_path / "good.flac"
    sf.write(src, np.random.default_rng(1).uniform(-0.5, 0.5, 48000).astype(np.float32), 16000, subtype="PCM_16")
    data = src.read_bytes()
    path = tmp_path / "cut.flac"
    path.write_bytes(data[: len(data) // 2])
    _expect_error(path, "truncated")


def test_zero_length_audio(tmp_path):
    path = tmp_path / "zero.wav"
    sf.write(path, np.zeros(0, dtype=np.float32), 16000, subtype="PCM_16")
    _expect_error(path, "no audio samples")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_samples(tmp_path, bad):
    x = _tone(440, 16000, 0.1)
    x[100] = bad
    path = tmp_path / "nan.wav"
    sf.write(path, x, 16000, subtype="FLOAT")
    _expect_error(path, "NaN or infinite")


def test_directory_is_not_audio(tmp_path):
    _expect_error(tmp_path, "directory")


def test_max_seconds_refuses_before_decoding(tmp_path):
    path = tmp_path / "long.wav"
    sf.write(path, np.zeros(16000 * 3, dtype=np.float32), 16000, subtype="PCM_16")
    with pytest.raises(AudioLoadError, match="over the limit"):
        load_audio(path, max_seconds=2.0)
    assert len(load_audio(path, max_seconds=3.0)) == 48000


def test_silent_audio_loads(tmp_path):
    path = tmp_path / "silence.wav"
    sf.write(path, np.zeros(8000, dtype=np.float32), 8000, subtype="PCM_16")
    y = load_audio(path, sample_rate=32000)
    assert len(y) == 32000 and float(y.abs().max()) == 0.0


def test_device_conversion_equals_load_audio_in_band(tmp_path):
    # Scaling and downmix are the same arithmetic; the torch resampler agrees with soxr on in-band content.
    rate = 44100
    t = np.arange(rate) / rate
    x = np.stack([0.3 * np.sin(2 * np.pi * 1000 * t) + 0.2 * np.sin(2 * np.pi * 5000 * t), _tone(300, rate, 1.0)], 1)
    path = tmp_path / "tones.wav"
    sf.write(path, x.astype(np.float32), rate, subtype="PCM_16")
    pcm, file_rate = read_pcm(path)
    assert pcm.dtype == np.int16 and pcm.shape == (rate, 2)
    same_rate = pcm_to_waveform_on(torch.from_numpy(pcm), file_rate, file_rate)
    np.testing.assert_array_equal(same_rate.numpy(), load_audio(path).numpy())
    device = pcm_to_waveform_on(torch.from_numpy(pcm), file_rate, 32000).numpy()
    host = load_audio(path, 32000).numpy()
    assert device.shape == host.shape
    np.testing.assert_allclose(device[500:-500], host[500:-500], atol=1e-5)  # edges: the filters' different padding
