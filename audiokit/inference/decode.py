"""Decoding: files to waveforms in DataLoader worker processes, long files block by block in the main process, and
audio in memory in the main process too (sending it to a worker would only copy it there and back).

The loader is fed ``(index, path)`` keys from an iterator, so it pulls names only as fast as it decodes them: at most
``prefetch`` files are read ahead of the consumer, however long the list. An in-memory item's key holds its place in
that order; its samples go through the same conversion (``prepared``) as a file's.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..audio.io import (
    AudioLoadError,
    array_pcm,
    audio_info,
    audio_warnings,
    device_resampling_supported,
    pcm_to_waveform,
    read_encoded,
    read_pcm,
    stream_audio,
)
from .sources import InMemoryAudio
from .window import Windowing, _stream_windows

# Files longer than this are decoded block by block in the main process, so memory does not grow with the file (a
# one-hour 44.1 kHz stereo file is 1.3 GB as float32); shorter ones are decoded whole in the loader's workers.
STREAM_SECONDS = 300.0
# Keys each worker holds ahead of the consumer (torch's default, named here because the runner's cap counts them).
PREFETCH_PER_WORKER = 2


@dataclass
class _Decoded:
    """What a loader worker hands back for one file: the waveform, or the samples as stored (``pcm`` at ``rate``, for
    preprocessing on the model's device), or ``stream`` (too long: the main process reads it block by block), or the
    error message. ``size``/``mtime_ns`` are the file's when it was opened."""

    index: int
    wave: torch.Tensor | None = None
    pcm: torch.Tensor | None = None
    rate: int = 0
    stream: bool = False
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    path: str = ""
    size: int | None = None
    mtime_ns: int | None = None

    def pin_memory(self) -> _Decoded:
        # Called by the DataLoader's pinning thread, so host-to-device copies can be asynchronous.
        if self.pcm is not None:
            self.pcm = self.pcm.pin_memory()
        return self


def _unexpected(path: str | Path, err: Exception) -> str:
    return f"{path}: unexpected error while decoding ({type(err).__name__}: {err})"


def prepared(
    index: int, pcm: np.ndarray, rate: int, sample_rate: int, raw: bool, name: str, warnings: list[str]
) -> _Decoded:
    """Samples as read (``read_pcm``'s layout, at ``rate``) made ready for the runner: a waveform at the model's rate
    (soxr, here), or, with ``raw``, left as PCM for the model's device where the device resampler takes this pair of
    rates. The one conversion for files and for audio in memory."""
    # Upsampled audio stays on the soxr path: its empty upper bands are where the log of the mel energies magnifies
    # the two resamplers' different stopbands (16 -> 32 kHz moved sigmoid scores by up to 0.3). Rates sharing few
    # factors with the model's would need a huge device kernel: soxr here instead.
    if raw and rate >= sample_rate and device_resampling_supported(rate, sample_rate):
        return _Decoded(index, pcm=torch.from_numpy(pcm), rate=rate, warnings=warnings)
    return _Decoded(index, wave=pcm_to_waveform(pcm, rate, sample_rate, name=name), warnings=warnings)


def decoded_in_memory(index: int, item: InMemoryAudio, sample_rate: int, raw: bool) -> _Decoded:
    """An in-memory item decoded as a file would be: its samples (decoded from bytes by the file loader), the same
    checks, the same conversion; a bad item becomes an error, as a bad file does."""
    try:
        if item.kind in ("array", "tensor"):
            if item.sample_rate is None:
                raise AudioLoadError(item.name, f"an {item.kind} carries no sample rate: give it (sample_rate=)")
            pcm, rate, warnings = array_pcm(item.audio, item.name), item.sample_rate, []
        else:
            pcm, rate, warnings = read_encoded(item.audio, item.name)
        decoded = prepared(index, pcm, rate, sample_rate, raw, item.name, warnings)
    except AudioLoadError as err:
        decoded = _Decoded(index, error=str(err))
    except Exception as err:  # as for files: one bad item must not end the run
        decoded = _Decoded(index, error=_unexpected(item.name, err))
    decoded.path = item.name
    return decoded


class _AudioFiles(Dataset):
    """Decodes one file per item in a worker: to the model's rate (``raw=False``) or only to PCM samples.

    An item is an ``(index, path)`` key, or an index into ``paths``; ``(index, None)`` is an in-memory item's place,
    handed back empty (the main process decodes it)."""

    def __init__(
        self, paths: Sequence[Path] = (), sample_rate: int = 0, stream_seconds: float = STREAM_SECONDS,
        raw: bool = False,
    ):  # fmt: skip
        self.paths = list(paths)
        self.sample_rate = sample_rate
        self.stream_seconds = stream_seconds
        self.raw = raw

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key: int | tuple[int, Path | None]) -> _Decoded:
        index, path = key if isinstance(key, tuple) else (key, self.paths[key])
        if path is None:
            return _Decoded(index)
        item = self._decode(index, path)
        item.path = str(path)
        try:
            st = os.stat(path)
            item.size, item.mtime_ns = st.st_size, st.st_mtime_ns
        except OSError:
            pass
        return item

    def _decode(self, index: int, path: Path) -> _Decoded:
        try:
            info = audio_info(path)
            if info.frames > self.stream_seconds * info.samplerate:
                return _Decoded(index, stream=True)
            pcm, rate = read_pcm(path)
            return prepared(index, pcm, rate, self.sample_rate, self.raw, str(path), audio_warnings(path, info))
        except AudioLoadError as err:
            return _Decoded(index, error=str(err))
        except Exception as err:  # a decoder crash on one file must not end the batch
            return _Decoded(index, error=_unexpected(path, err))


def _collate_decoded(item: _Decoded) -> _Decoded:
    return item


def decoded_inputs(
    sources: Iterable[Path | InMemoryAudio],
    sample_rate: int,
    stream_seconds: float,
    *,
    raw: bool,
    num_workers: int,
    pin: bool,
) -> Iterator[_Decoded]:
    """``_Decoded`` items in the order of ``sources``, which is consumed only as decoding proceeds."""
    numbered = enumerate(sources)
    for index, source in numbered:
        if not isinstance(source, InMemoryAudio):
            break
        # No loader until the first file: audio in memory alone starts no worker processes.
        yield decoded_in_memory(index, source, sample_rate, raw)
    else:
        return
    held: dict[int, InMemoryAudio] = {}  # filled by the sampler, which runs in this process

    def keys() -> Iterator[tuple[int, Path | None]]:
        for i, item in itertools.chain([(index, source)], numbered):
            if isinstance(item, InMemoryAudio):
                held[i] = item
                yield i, None  # its place in the loader's order and read-ahead; a worker hands back an empty item
            else:
                yield i, item

    for decoded in _loader(keys(), sample_rate, stream_seconds, raw=raw, num_workers=num_workers, pin=pin):
        item = held.pop(decoded.index, None)
        yield decoded if item is None else decoded_in_memory(decoded.index, item, sample_rate, raw)


def _loader(
    keys: Iterable[tuple[int, Path | None]],
    sample_rate: int,
    stream_seconds: float,
    *,
    raw: bool,
    num_workers: int,
    pin: bool,
) -> Iterator[_Decoded]:
    loader = DataLoader(
        _AudioFiles((), sample_rate, stream_seconds, raw=raw),
        batch_size=None,
        sampler=_Keys(keys),
        collate_fn=_collate_decoded,
        num_workers=num_workers,
        prefetch_factor=PREFETCH_PER_WORKER if num_workers else None,
        # Raw PCM goes to the device file by file, so it is pinned (in the loader's thread); decoded waveforms are
        # stacked into pinned memory per batch by the batching stage.
        pin_memory=pin,
        persistent_workers=False,
    )
    return iter(loader)


class _Keys:
    """The sampler: ``(index, path)`` keys drawn lazily from the source (DataLoader needs no length for these); a
    path of None is an in-memory item's place."""

    def __init__(self, keys: Iterable[tuple[int, Path | None]]):
        self._keys = keys

    def __iter__(self) -> Iterator[tuple[int, Path | None]]:
        return iter(self._keys)


def prefetched(num_workers: int) -> int:
    """Files the loader may hold decoded or decoding ahead of the consumer."""
    return PREFETCH_PER_WORKER * num_workers  # without workers, the next file is read only when asked for


def streamed_windows(
    path: Path, windowing: Windowing, min_samples: int, warnings: list[str]
) -> tuple[Iterator[tuple[int, int, np.ndarray]], int]:
    """Windows of a long file decoded block by block (at most a window and a block in memory), and the number of
    samples expected at the model's rate. Raises ``AudioLoadError`` (or what the decoder raises) for a bad file."""
    info = audio_info(path)
    rate = windowing.sample_rate
    expected = round(info.frames * rate / info.samplerate)
    plan = windowing.plan(expected, warnings, streamed=True)
    assert plan is not None  # streamed files are always longer than any automatic window
    window, hop = plan
    warnings.extend(audio_warnings(path, info))
    chunks = stream_audio(path, rate, block_seconds=max(10.0, 2 * window / rate))
    return _stream_windows(chunks, window, hop, min_samples), expected
