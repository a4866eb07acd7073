"""Decoding and resampling: the one path by which audio files enter audiokit.

libsndfile (through soundfile) decodes WAV, FLAC, OGG/Vorbis/Opus and MP3; soxr resamples (its "HQ" preset is what
librosa >= 0.10 uses by default). Every failure is an ``AudioLoadError`` naming the file and the problem.
"""

from __future__ import annotations

import logging
import os
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
    longer files before decoding them (use windowed tagging for long recordings).

    Raises ``AudioLoadError`` for a missing, empty, undecodable or truncated file, a file with no samples, or
    NaN/infinite samples.
    """
    path = Path(path)
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
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as err:
        raise AudioLoadError(path, f"could not be decoded ({_sf_reason(err)})") from None
    if data.shape[0] == 0:
        raise AudioLoadError(path, "contains no audio samples (the header promises data the file does not hold)")
    if data.shape[0] < info.frames:
        # libsndfile returns what it could read from a cut-off file; using half a recording silently would be wrong.
        raise AudioLoadError(
            path, f"is truncated: the header promises {info.frames} frames but only {data.shape[0]} could be read"
        )
    if not np.isfinite(data).all():
        raise AudioLoadError(path, "contains NaN or infinite samples")
    if mono:
        data = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
    if sample_rate is not None and rate != sample_rate:
        data = resample(data, rate, sample_rate)
    data = np.ascontiguousarray(data if mono else data.T, dtype=np.float32)
    return torch.from_numpy(data)
