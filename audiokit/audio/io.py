"""Decoding and resampling: the one path by which audio files enter audiokit.

libsndfile (through soundfile) decodes WAV, FLAC, OGG/Vorbis/Opus and MP3; soxr resamples (its "HQ" preset is what
librosa >= 0.10 uses by default). Every failure is an ``AudioLoadError`` naming the file and the problem.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

_logger = logging.getLogger(__name__)

# Extensions `audiokit tag <dir>` picks up; decoding itself is decided by libsndfile from the content.
AUDIO_EXTENSIONS = frozenset(
    {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif", ".au", ".w64", ".rf64"}
)


class AudioLoadError(ValueError):
    """An audio file that cannot be used; ``str()`` names the file and the problem."""

    def __init__(self, path: str | os.PathLike[str], problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


def audio_info(path: str | os.PathLike[str]) -> sf._SoundFileInfo:
    """Header information (sample rate, channels, frames) without decoding; raises ``AudioLoadError``."""
    path = Path(path)
    _check_file(path)
    try:
        return sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError) as err:
        raise AudioLoadError(path, f"not a readable audio file ({_sf_reason(err)})") from None


def _check_file(path: Path) -> None:
    if not path.exists():
        raise AudioLoadError(path, "file not found")
    if path.is_dir():
        raise AudioLoadError(path, "is a directory, not an audio file")
    if path.stat().st_size == 0:
        raise AudioLoadError(path, "file is empty (0 bytes)")


def _wav_missing_bytes(path: Path) -> int:
    """Bytes a RIFF/WAVE file's ``data`` chunk declares beyond the end of the file (0 if complete or not a WAV).

    libsndfile quietly clamps the frame count of a cut-off WAV to what is present, so truncation would pass unseen.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return 0
            size = path.stat().st_size
            while True:
                chunk = f.read(8)
                if len(chunk) < 8:
                    return 0
                chunk_id, chunk_size = chunk[:4], int.from_bytes(chunk[4:], "little")
                if chunk_id == b"data":
                    if chunk_size in (0, 0xFFFFFFFF):  # streamed writers leave the size unset
                        return 0
                    return max(0, f.tell() + chunk_size - size)
                f.seek(chunk_size + (chunk_size & 1), 1)
    except OSError:
        return 0


def _sf_reason(err: BaseException) -> str:
    text = str(err)
    # libsndfile messages repeat the path; keep only the reason.
    return text.split(": ", 1)[-1] if ": " in text else text


def resample(waveform: np.ndarray, orig_rate: int, target_rate: int) -> np.ndarray:
    """Band-limited resampling with soxr (HQ), float32 in and out, along the first axis."""
    if orig_rate == target_rate:
        return waveform
    import soxr

    return soxr.resample(waveform, orig_rate, target_rate, quality="HQ").astype(np.float32, copy=False)


# Subtypes whose samples libsndfile hands back exactly as int16; reading those as int16 is ~10x cheaper than as
# float32, and int16 / 32768 is exactly the float libsndfile would have produced.
_INT16_SUBTYPES = frozenset({"PCM_16", "PCM_S8", "PCM_U8"})


def _open_checked(path: Path, max_seconds: float | None) -> sf._SoundFileInfo:
    """Header checks shared by whole-file and streamed decoding."""
    info = audio_info(path)
    missing = _wav_missing_bytes(path)
    if missing:
        raise AudioLoadError(path, f"is truncated: its data chunk is {missing} bytes short of what the header declares")
    if info.frames == 0:
        raise AudioLoadError(path, "contains no audio samples (zero length)")
    if max_seconds is not None and info.frames > max_seconds * info.samplerate:
        raise AudioLoadError(
            path, f"is {info.frames / info.samplerate:.1f} s long, over the limit of {max_seconds:.1f} s"
        )
    return info


def read_pcm(path: str | os.PathLike[str], *, max_seconds: float | None = None) -> tuple[np.ndarray, int]:
    """Samples as stored, ``(frames, channels)``: int16 for 8/16-bit PCM, float32 in [-1, 1] otherwise; and the rate.

    The same checks as ``load_audio`` (missing, empty, undecodable, truncated, NaN/inf). Use ``pcm_to_float`` (or
    ``load_audio``) to get float samples; keeping int16 is cheaper to move between processes and to a GPU.
    """
    path = Path(path)
    info = _open_checked(path, max_seconds)
    dtype = "int16" if info.subtype in _INT16_SUBTYPES else "float32"
    try:
        data, rate = sf.read(str(path), dtype=dtype, always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as err:
        raise AudioLoadError(path, f"could not be decoded ({_sf_reason(err)})") from None
    if data.shape[0] == 0:
        raise AudioLoadError(path, "contains no audio samples (the header promises data the file does not hold)")
    if data.shape[0] < info.frames:
        # libsndfile returns what it could read from a cut-off file; using half a recording silently would be wrong.
        raise AudioLoadError(
            path, f"is truncated: the header promises {info.frames} frames but only {data.shape[0]} could be read"
        )
    if data.dtype != np.int16 and not np.isfinite(data).all():
        raise AudioLoadError(path, "contains NaN or infinite samples")
    return data, rate


def pcm_to_float(data: np.ndarray, mono: bool = True) -> np.ndarray:
    """``(frames, channels)`` int16 or float32 -> float32, ``(frames,)`` channel mean if ``mono`` else unchanged layout.

    The downmix adds channel columns one at a time: numpy's ``mean(axis=1)`` over a short axis is ~30x slower.
    """
    scale = np.float32(1 / 32768) if data.dtype == np.int16 else np.float32(1)
    if not mono:
        return data.astype(np.float32) * scale if scale != 1 else data.astype(np.float32, copy=False)
    channels = data.shape[1]
    out = data[:, 0].astype(np.float32)
    for c in range(1, channels):
        out += data[:, c]
    if data.dtype == np.int16:
        out *= scale  # exact: int16 sums are exact in float32 and the scale is a power of two
    if channels > 1:
        out /= np.float32(channels)
    return out


def load_audio(
    path: str | os.PathLike[str],
    sample_rate: int | None = None,
    *,
    mono: bool = True,
    max_seconds: float | None = None,
) -> torch.Tensor:
    """Decode ``path`` to a float32 tensor in [-1, 1], downmixed to mono and resampled to ``sample_rate``.

    Returns ``(T,)`` when ``mono`` (the default), else ``(channels, T)``. ``sample_rate=None`` keeps the file's rate.
    Integer PCM is scaled by its full-scale value (libsndfile's convention: int16 / 32768). ``max_seconds`` refuses
    longer files before decoding them (``stream_audio`` reads long recordings in bounded memory).

    Raises ``AudioLoadError`` for a missing, empty, undecodable or truncated file, a file with no samples, or
    NaN/infinite samples.
    """
    data, rate = read_pcm(path, max_seconds=max_seconds)
    data = pcm_to_float(data, mono=mono)
    if sample_rate is not None and rate != sample_rate:
        data = resample(data, rate, sample_rate)
    data = np.ascontiguousarray(data if mono else data.T, dtype=np.float32)
    return torch.from_numpy(data)


def stream_audio(
    path: str | os.PathLike[str], sample_rate: int | None = None, *, block_seconds: float = 30.0
) -> Iterator[np.ndarray]:
    """Decode ``path`` block by block: float32 mono chunks at ``sample_rate``, memory bounded by ``block_seconds``.

    The chunks joined equal ``load_audio(path, sample_rate)`` up to float round-off of the streaming resampler (the
    same soxr HQ filter, kept in state across blocks). Raises ``AudioLoadError`` as ``load_audio`` does; a NaN or a
    truncation found mid-file raises when its block is reached.
    """
    path = Path(path)
    info = _open_checked(path, None)
    rate = info.samplerate
    dtype = "int16" if info.subtype in _INT16_SUBTYPES else "float32"
    resampler = None
    if sample_rate is not None and sample_rate != rate:
        import soxr

        resampler = soxr.ResampleStream(rate, sample_rate, 1, dtype="float32", quality="HQ")
    block = max(1, round(block_seconds * rate))
    frames = 0
    try:
        with sf.SoundFile(str(path)) as handle:
            while True:
                data = handle.read(block, dtype=dtype, always_2d=True)
                last = data.shape[0] < block or handle.tell() >= info.frames
                frames += data.shape[0]
                if data.dtype != np.int16 and not np.isfinite(data).all():
                    raise AudioLoadError(path, f"contains NaN or infinite samples (near {frames / rate:.1f} s)")
                chunk = pcm_to_float(data) if data.shape[0] else np.zeros(0, np.float32)
                if resampler is not None:
                    chunk = resampler.resample_chunk(chunk, last=last)
                if chunk.size:
                    yield chunk
                if last:
                    break
    except (sf.LibsndfileError, RuntimeError) as err:
        raise AudioLoadError(path, f"could not be decoded ({_sf_reason(err)})") from None
    if frames == 0:
        raise AudioLoadError(path, "contains no audio samples (the header promises data the file does not hold)")
    if frames < info.frames:
        raise AudioLoadError(
            path, f"is truncated: the header promises {info.frames} frames but only {frames} could be read"
        )


# librosa's "kaiser_best" (resampy) filter: the closest torchaudio setting to soxr HQ, ~2e-3 rms apart on white noise
# below 0.9 x Nyquist (they differ mostly in the transition band, which the mel banks of 32 kHz models barely use).
_KAISER_BEST = {
    "lowpass_filter_width": 64,
    "rolloff": 0.9475937167399596,
    "resampling_method": "sinc_interp_kaiser",
    "beta": 14.769656459379492,
}


@functools.lru_cache(maxsize=32)
def _torch_resampler(orig_rate: int, target_rate: int, device: str) -> torch.nn.Module:
    import torchaudio

    return torchaudio.transforms.Resample(orig_rate, target_rate, **_KAISER_BEST).to(device)


def pcm_to_waveform_on(pcm: torch.Tensor, rate: int, sample_rate: int) -> torch.Tensor:
    """``read_pcm`` output as a tensor ``(frames, channels)`` (already on its device) -> float32 mono ``(T,)``.

    The scaling and downmix equal ``load_audio``'s; resampling uses torchaudio's windowed-sinc filter (kaiser_best)
    instead of soxr, which is nearly free on a GPU but not bit-equal to the host path.
    """
    x = pcm.float()
    if pcm.dtype == torch.int16:
        x = x * (1 / 32768)
    x = x.mean(dim=1) if x.shape[1] > 1 else x[:, 0]
    if rate != sample_rate:
        x = _torch_resampler(rate, sample_rate, str(x.device))(x)
    return x
