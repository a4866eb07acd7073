"""Decoding and resampling: the one path by which audio enters audiokit, from files or from memory.

libsndfile (through soundfile) decodes WAV, FLAC, OGG/Vorbis/Opus and MP3, from a file or from an encoded file in
memory (``read_encoded``); ``array_pcm`` takes samples that are already decoded. All three give the same PCM layout,
which ``pcm_to_waveform`` downmixes and resamples with soxr (its "HQ" preset is what librosa >= 0.10 uses by default).
Every failure is an ``AudioLoadError`` naming the file (or the in-memory item) and the problem.
"""

from __future__ import annotations

import contextlib
import errno
import io
import logging
import math
import os
import stat
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf
import torch

_logger = logging.getLogger(__name__)

# Extensions `audiokit tag <dir>` picks up; decoding itself is decided by libsndfile from the content.
AUDIO_EXTENSIONS = frozenset(
    {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif", ".au", ".w64", ".rf64"}
)


class AudioLoadError(ValueError):
    """An audio file (or in-memory audio) that cannot be used; ``str()`` names it and the problem."""

    def __init__(self, path: str | os.PathLike[str], problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


def _sf_path(path: Path) -> str | bytes:
    """The name to hand libsndfile: the OS's own bytes, so that a file name that is not valid UTF-8 still opens
    (soundfile would encode a ``str`` strictly and fail on the surrogates Python decoded such bytes to)."""
    return str(path) if sys.platform == "win32" else os.fsencode(path)


# What libsndfile decodes: a file by name, or an encoded file in a seekable binary file object.
_Source = Path | BinaryIO


def _sf_source(source: _Source) -> str | bytes | BinaryIO:
    if isinstance(source, Path):
        return _sf_path(source)
    source.seek(0)  # each pass (header, checks, samples) reads from the start, wherever the last one stopped
    return source


@contextlib.contextmanager
def _binary(source: _Source) -> Iterator[BinaryIO]:
    """The source as an open binary file at its start (a file object stays open: its owner closes it)."""
    if isinstance(source, Path):
        with open(source, "rb") as f:
            yield f
    else:
        source.seek(0)
        yield source


def _byte_size(f: BinaryIO) -> int:
    here = f.tell()
    size = f.seek(0, os.SEEK_END)
    f.seek(here)
    return size


def audio_info(path: str | os.PathLike[str]) -> sf._SoundFileInfo:
    """Header information (sample rate, channels, frames) without decoding; raises ``AudioLoadError``."""
    path = Path(path)
    return _info(path, str(path))


def _info(source: _Source, name: str) -> sf._SoundFileInfo:
    if isinstance(source, Path):
        _check_file(source)
    elif _byte_size(source) == 0:
        raise AudioLoadError(name, "is empty (0 bytes)")
    try:
        info = sf.info(_sf_source(source))
    except (sf.LibsndfileError, RuntimeError, TypeError) as err:
        # Only now, on the failure path, is it worth an extra open to tell "permission denied" from a bad file.
        reason = _unreadable_reason(source) if isinstance(source, Path) else None
        raise AudioLoadError(name, reason or f"not a readable audio file ({_sf_reason(err)})") from None
    if info.samplerate <= 0:
        raise AudioLoadError(name, f"declares an impossible sample rate of {info.samplerate} Hz")
    return info


_OS_PROBLEMS = {
    errno.ENOENT: "file not found",
    errno.ENOTDIR: "file not found (a parent in the path is not a directory)",
    errno.ENAMETOOLONG: "file name too long for the operating system",
    errno.ELOOP: "too many levels of symbolic links",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
}


def _check_file(path: Path) -> None:
    try:
        st = path.stat()
    except OSError as err:
        raise AudioLoadError(path, _OS_PROBLEMS.get(err.errno, err.strerror or str(err))) from None
    if stat.S_ISDIR(st.st_mode):
        raise AudioLoadError(path, "is a directory, not an audio file")
    if not stat.S_ISREG(st.st_mode):
        # A FIFO would block the decoder, and /dev/urandom would never end.
        kinds = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                 (stat.S_ISSOCK, "a socket"))  # fmt: skip
        kind = next((name for test, name in kinds if test(st.st_mode)), "not a file")
        raise AudioLoadError(path, f"is {kind}, not a regular audio file")
    if st.st_size == 0:
        raise AudioLoadError(path, "file is empty (0 bytes)")


def _unreadable_reason(path: Path) -> str | None:
    """What the OS says when the file is opened, if it refuses (libsndfile only says "System error.")."""
    try:
        with open(path, "rb"):
            return None
    except OSError as err:
        return _OS_PROBLEMS.get(err.errno, err.strerror or str(err))


def _wav_missing_bytes(source: _Source) -> int:
    """Bytes a RIFF/WAVE file's ``data`` chunk declares beyond the end of the file (0 if complete or not a WAV).

    libsndfile quietly clamps the frame count of a cut-off WAV to what is present, so truncation would pass unseen.
    """
    try:
        with _binary(source) as f:
            head = f.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return 0
            size = _byte_size(f)
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


def _ogg_cut_short(source: _Source) -> bool:
    """Whether an Ogg file ends without its end-of-stream page: cut off mid-transfer or mid-write.

    Ogg has no length field, so libsndfile decodes what is there and reports that as the whole file. The last complete
    page must end the file and carry the end-of-stream flag (header byte 5, bit 2).
    """
    try:
        with _binary(source) as f:
            f.seek(max(0, _byte_size(f) - 70_000))  # more than one page can hold (27 + 255 + 255 * 255 bytes)
            tail = f.read()
    except OSError:
        return False
    offset = len(tail)
    while (offset := tail.rfind(b"OggS", 0, offset)) >= 0:
        header = tail[offset : offset + 27]
        if len(header) == 27 and header[4] == 0:
            segments = tail[offset + 27 : offset + 27 + header[26]]
            end = offset + 27 + header[26] + sum(segments)
            if len(segments) == header[26] and end <= len(tail):
                return end != len(tail) or not header[5] & 0x04
    return False


def audio_warnings(path: str | os.PathLike[str] | BinaryIO, info: sf._SoundFileInfo) -> list[str]:
    """What is suspicious about a file (by name, or a seekable binary file object) that decodes: today, an Ogg stream
    that ends without its end mark."""
    if info.format == "OGG" and _ogg_cut_short(path if hasattr(path, "read") else Path(path)):
        return [f"the Ogg stream has no end-of-stream mark: the file looks cut short (decoded {info.duration:.2f} s)"]
    return []


def _sf_reason(err: BaseException) -> str:
    if isinstance(getattr(err, "error_string", None), str):  # soundfile >= 0.11: libsndfile's reason alone
        return err.error_string
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


def _open_checked(source: _Source, name: str, max_seconds: float | None) -> sf._SoundFileInfo:
    """Header checks shared by whole-file and streamed decoding."""
    info = _info(source, name)
    missing = _wav_missing_bytes(source)
    if missing:
        raise AudioLoadError(name, f"is truncated: its data chunk is {missing} bytes short of what the header declares")
    if info.frames == 0:
        raise AudioLoadError(name, "contains no audio samples (zero length)")
    if max_seconds is not None and info.frames > max_seconds * info.samplerate:
        raise AudioLoadError(
            name, f"is {info.frames / info.samplerate:.1f} s long, over the limit of {max_seconds:.1f} s"
        )
    return info


def read_pcm(path: str | os.PathLike[str], *, max_seconds: float | None = None) -> tuple[np.ndarray, int]:
    """Samples as stored, ``(frames, channels)``: int16 for 8/16-bit PCM, float32 in [-1, 1] otherwise; and the rate.

    The same checks as ``load_audio`` (missing, empty, undecodable, truncated, NaN/inf). Use ``pcm_to_float`` (or
    ``load_audio``) to get float samples; keeping int16 is cheaper to move between processes and to a GPU.
    """
    path = Path(path)
    data, rate, _ = _read_checked(path, str(path), max_seconds)
    return data, rate


def _read_checked(source: _Source, name: str, max_seconds: float | None) -> tuple[np.ndarray, int, sf._SoundFileInfo]:
    info = _open_checked(source, name, max_seconds)
    dtype = "int16" if info.subtype in _INT16_SUBTYPES else "float32"
    try:
        data, rate = sf.read(_sf_source(source), dtype=dtype, always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as err:
        raise AudioLoadError(name, f"could not be decoded ({_sf_reason(err)})") from None
    if data.shape[0] == 0:
        raise AudioLoadError(name, "contains no audio samples (the header promises data the file does not hold)")
    if data.shape[0] < info.frames:
        # libsndfile returns what it could read from a cut-off file; using half a recording silently would be wrong.
        raise AudioLoadError(
            name, f"is truncated: the header promises {info.frames} frames but only {data.shape[0]} could be read"
        )
    if data.dtype != np.int16 and not np.isfinite(data).all():
        raise AudioLoadError(name, "contains NaN or infinite samples")
    return data, rate, info


def read_encoded(audio: bytes | bytearray | memoryview | BinaryIO, name: str) -> tuple[np.ndarray, int, list[str]]:
    """An encoded audio file held in memory (its bytes, or a binary file object read from its start) as ``read_pcm``
    reads a file, with the same checks: its samples as stored, its sample rate, and ``audio_warnings``. ``name``
    stands for the file's path in messages."""
    if isinstance(audio, io.TextIOBase):
        raise AudioLoadError(name, "is a file object opened in text mode: open the file in binary mode ('rb')")
    if isinstance(audio, (bytes, bytearray, memoryview)):
        source: BinaryIO = io.BytesIO(audio)
    elif getattr(audio, "seekable", lambda: False)():
        source = audio
    else:
        source = io.BytesIO(audio.read())  # a pipe or a socket: libsndfile seeks, so it reads a copy
    data, rate, info = _read_checked(source, name, None)
    return data, rate, audio_warnings(source, info)


# Sample types taken as they are (``read_pcm`` gives these two); other floats are rounded to float32 as a float WAV
# would store them.
_PCM_DTYPES = (np.dtype(np.float32), np.dtype(np.int16))


def array_pcm(audio: np.ndarray | torch.Tensor, name: str) -> np.ndarray:
    """Decoded samples, mono ``(T,)`` or ``(channels, T)``, in ``read_pcm``'s layout: ``(frames, channels)``, float32
    (in [-1, 1]) or int16 (PCM, full scale 32768), so that they take the same way to a waveform as a file's samples.

    The checks a file's samples get: ``AudioLoadError`` (naming ``name``) for no samples, NaN or infinite samples, a
    shape that is neither layout, and sample types that are neither float nor int16. A tensor on a GPU is copied
    to the host, where the checks and soxr run.
    """
    if isinstance(audio, torch.Tensor):
        audio = audio.detach().cpu()
        if audio.is_floating_point():
            audio = audio.float()  # numpy has no bfloat16
        audio = audio.numpy()
    data = np.asarray(audio)
    if data.ndim not in (1, 2):
        raise AudioLoadError(name, f"has shape {data.shape}: give mono samples (T,) or channels (C, T)")
    if data.size == 0:
        raise AudioLoadError(name, "contains no audio samples (zero length)")
    if data.ndim == 2 and data.shape[0] > data.shape[1]:
        # soundfile and librosa(mono=False) differ in layout; a (T, C) clip read as (C, T) would be T channels.
        raise AudioLoadError(
            name, f"has shape {data.shape}: more channels than samples; give (channels, samples) (transpose it: .T)"
        )
    if data.dtype.kind == "f" and data.dtype not in _PCM_DTYPES:
        data = data.astype(np.float32)
    if data.dtype not in _PCM_DTYPES:
        raise AudioLoadError(name, f"has samples of type {data.dtype}: give floats in [-1, 1] or int16 PCM")
    if data.dtype != np.int16 and not np.isfinite(data).all():
        raise AudioLoadError(name, "contains NaN or infinite samples")
    return np.ascontiguousarray(data[:, None] if data.ndim == 1 else data.T)


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
    on_warning: Callable[[str], None] | None = None,
) -> torch.Tensor:
    """Decode ``path`` to a float32 tensor in [-1, 1], downmixed to mono and resampled to ``sample_rate``.

    Returns ``(T,)`` when ``mono`` (the default), else ``(channels, T)``. ``sample_rate=None`` keeps the file's rate.
    Integer PCM is scaled by its full-scale value (libsndfile's convention: int16 / 32768). ``max_seconds`` refuses
    longer files before decoding them (``stream_audio`` reads long recordings in bounded memory).

    Raises ``AudioLoadError`` for a missing, empty, undecodable or truncated file, a file with no samples (also one
    too short to leave a sample at ``sample_rate``), or NaN/infinite samples. What decodes but looks wrong (an Ogg
    file cut short) goes to ``on_warning`` (default: logged), one message at a time.
    """
    data, rate, info = _read_checked(Path(path), str(path), max_seconds)
    for message in audio_warnings(path, info):
        (on_warning or (lambda m: _logger.warning("%s: %s", path, m)))(message)
    return pcm_to_waveform(data, rate, sample_rate, name=str(path), mono=mono)


def pcm_to_waveform(
    data: np.ndarray, rate: int, sample_rate: int | None, *, name: str, mono: bool = True
) -> torch.Tensor:
    """Samples in ``read_pcm``'s layout at ``rate`` -> float32 tensor, ``(T,)`` downmixed (``mono``) or
    ``(channels, T)``, resampled with soxr to ``sample_rate`` (None: kept). What ``load_audio`` does after reading;
    in-memory audio (``array_pcm``, ``read_encoded``) takes the same way. Raises ``AudioLoadError`` naming ``name``
    when no sample is left at ``sample_rate``."""
    frames = data.shape[0]
    data = pcm_to_float(data, mono=mono)
    if sample_rate is not None and rate != sample_rate:
        data = resample(data, rate, sample_rate)
        if data.shape[0] == 0:
            raise AudioLoadError(name, f"is too short: {frames} sample(s) at {rate} Hz leave none at {sample_rate} Hz")
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
    info = _open_checked(path, str(path), None)
    rate = info.samplerate
    dtype = "int16" if info.subtype in _INT16_SUBTYPES else "float32"
    resampler = None
    if sample_rate is not None and sample_rate != rate:
        import soxr

        resampler = soxr.ResampleStream(rate, sample_rate, 1, dtype="float32", quality="HQ")
    block = max(1, round(block_seconds * rate))
    frames = 0
    try:
        with sf.SoundFile(_sf_path(path)) as handle:
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


# torchaudio's windowed-sinc kernel has ``t * (o + 2 * width)`` taps for the reduced rates o = orig / g, t = target / g
# (g their gcd): 0.2 M for 44.1 -> 32 kHz, but 3 G (12 GB) for 96001 -> 32000 Hz. Pairs above this many taps (16 MB in
# float32) are resampled by soxr on the host, whose cost does not depend on the rates' common factors.
MAX_DEVICE_RESAMPLER_TAPS = 1 << 22
# Kernels kept for reuse, by their size in bytes, not their count: a count bound would let a few large ones pile up.
_RESAMPLER_CACHE_BYTES = 64 << 20
_resamplers: OrderedDict[tuple[int, int, str], tuple[torch.nn.Module, int]] = OrderedDict()
_resamplers_lock = threading.Lock()


def device_resampler_taps(orig_rate: int, target_rate: int) -> int:
    """Taps of the sinc kernel ``pcm_to_waveform_on`` would build for this pair of rates (its memory, in floats)."""
    g = math.gcd(orig_rate, target_rate)
    orig, target = orig_rate // g, target_rate // g
    width = math.ceil(_KAISER_BEST["lowpass_filter_width"] * orig / (min(orig, target) * _KAISER_BEST["rolloff"]))
    return target * (orig + 2 * width)


def device_resampling_supported(orig_rate: int, target_rate: int) -> bool:
    return orig_rate == target_rate or device_resampler_taps(orig_rate, target_rate) <= MAX_DEVICE_RESAMPLER_TAPS


def _torch_resampler(orig_rate: int, target_rate: int, device: str) -> torch.nn.Module:
    key = (orig_rate, target_rate, device)
    with _resamplers_lock:
        if key in _resamplers:
            _resamplers.move_to_end(key)
            return _resamplers[key][0]
    import torchaudio

    resampler = torchaudio.transforms.Resample(orig_rate, target_rate, **_KAISER_BEST).to(device)
    size = sum(b.numel() * b.element_size() for b in resampler.buffers())
    with _resamplers_lock:
        _resamplers[key] = (resampler, size)
        while len(_resamplers) > 1 and sum(n for _, n in _resamplers.values()) > _RESAMPLER_CACHE_BYTES:
            _resamplers.popitem(last=False)
    return resampler


def pcm_to_waveform_on(pcm: torch.Tensor, rate: int, sample_rate: int) -> torch.Tensor:
    """``read_pcm`` output as a tensor ``(frames, channels)`` (already on its device) -> float32 mono ``(T,)``.

    The scaling and downmix equal ``load_audio``'s; resampling uses torchaudio's windowed-sinc filter (kaiser_best)
    instead of soxr, which is nearly free on a GPU but not bit-equal to the host path. A pair of rates whose kernel
    would be too large (``device_resampling_supported``) goes through soxr on the host instead.
    """
    x = pcm.float()
    if pcm.dtype == torch.int16:
        x = x * (1 / 32768)
    x = x.mean(dim=1) if x.shape[1] > 1 else x[:, 0]
    if rate != sample_rate:
        if device_resampling_supported(rate, sample_rate):
            x = _torch_resampler(rate, sample_rate, str(x.device))(x)
        else:
            x = torch.from_numpy(resample(x.cpu().numpy(), rate, sample_rate)).to(x.device)
    return x
