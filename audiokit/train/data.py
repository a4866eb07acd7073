"""Datasets for fine-tuning: ESC-50, class-per-folder and CSV manifests, decoded once into a memory-mapped cache.

Every clip is decoded, downmixed, resampled to the model's rate and padded/cropped to ``clip_seconds`` once; epochs
then read int16 rows from a ``.npy`` memory map (the cache depends on the files, the sample rate and the clip length,
not on the frontend). Unreadable clips are reported with their path and skipped, and the count is kept.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..audio.io import AUDIO_EXTENSIONS, AudioLoadError, load_audio
from .config import ConfigError, DataConfig

_logger = logging.getLogger(__name__)

ESC50_FOLDS = (1, 2, 3, 4, 5)


@dataclass
class ClipList:
    """Files with their label indices and a group (ESC-50 fold, or ``"train"``/``"val"``/``"test"`` split)."""

    paths: list[Path]
    labels: list[list[int]]
    groups: list[int | str]
    label_names: list[str]
    multilabel: bool = False

    def select(self, keep: list[int]) -> ClipList:
        return ClipList(
            [self.paths[i] for i in keep],
            [self.labels[i] for i in keep],
            [self.groups[i] for i in keep],
            self.label_names,
            self.multilabel,
        )

    def __len__(self) -> int:
        return len(self.paths)


def read_esc50(root: str | Path) -> ClipList:
    """ESC-50's standard layout: ``audio/*.wav`` and ``meta/esc50.csv`` (filename, fold, target, category, ...)."""
    root = Path(root)
    meta = root / "meta" / "esc50.csv"
    if not root.is_dir():
        raise ConfigError(f"data.root {root} does not exist")
    if not meta.is_file():
        raise ConfigError(f"{root} is not an ESC-50 root: {meta} is missing")
    with meta.open(newline="") as f:
        rows = list(csv.DictReader(f))
    required = {"filename", "fold", "target", "category"}
    if not rows or not required <= set(rows[0]):
        raise ConfigError(f"{meta}: expected columns {sorted(required)}")
    names: dict[int, str] = {}
    for row in rows:
        names.setdefault(int(row["target"]), row["category"])
    if sorted(names) != list(range(len(names))):
        raise ConfigError(f"{meta}: targets are not 0..{len(names) - 1}")
    return ClipList(
        paths=[root / "audio" / row["filename"] for row in rows],
        labels=[[int(row["target"])] for row in rows],
        groups=[int(row["fold"]) for row in rows],
        label_names=[names[i] for i in range(len(names))],
    )


def read_folder(root: str | Path) -> ClipList:
    """One sub-directory per class (``root/<class>/*.wav``); the class order is the sorted directory names."""
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"data.root {root} does not exist")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise ConfigError(f"{root}: a class-per-folder dataset needs at least two class directories")
    paths, labels = [], []
    for index, name in enumerate(classes):
        files = sorted(p for p in (root / name).rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS)
        if not files:
            raise ConfigError(f"{root / name}: class directory holds no audio files")
        paths += files
        labels += [[index]] * len(files)
    return ClipList(paths, labels, [""] * len(paths), classes)


def read_manifest(path: str | Path) -> ClipList:
    """CSV with a header ``path,label[,split]``; paths relative to the manifest; ``a;b`` labels mean multi-label."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"data.manifest {path} does not exist")
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"path", "label"} <= set(reader.fieldnames):
            raise ConfigError(f"{path}: the header must contain 'path' and 'label' (and optionally 'split')")
        rows = list(reader)
    if not rows:
        raise ConfigError(f"{path}: the manifest has no rows")
    raw_labels = []
    for number, row in enumerate(rows, start=2):
        labels = [x.strip() for x in (row["label"] or "").split(";") if x.strip()]
        if not labels:
            raise ConfigError(f"{path}, line {number}: {row['path']!r} has no label")
        raw_labels.append(labels)
        split = (row.get("split") or "").strip()
        if split and split not in ("train", "val", "test"):
            raise ConfigError(f"{path}, line {number}: split {split!r} is not one of train, val, test")
    names = sorted({label for labels in raw_labels for label in labels})
    index = {name: i for i, name in enumerate(names)}
    return ClipList(
        paths=[(path.parent / row["path"]).resolve() for row in rows],
        labels=[[index[x] for x in labels] for labels in raw_labels],
        groups=[(row.get("split") or "").strip() for row in rows],
        label_names=names,
        multilabel=any(len(labels) > 1 for labels in raw_labels),
    )


def default_cache_dir(cfg: DataConfig) -> str:
    """Where decoded clips are cached: ``data.cache_dir``, else ``.audiokit_cache`` beside the data (the root, or the
    manifest's directory)."""
    return cfg.cache_dir or str(Path(cfg.root or Path(cfg.manifest or ".").parent) / ".audiokit_cache")


def read_clips(cfg: DataConfig) -> ClipList:
    if cfg.kind == "esc50":
        return read_esc50(cfg.root or "")
    if cfg.kind == "folder":
        return read_folder(cfg.root or "")
    return read_manifest(cfg.manifest or "")


def holdout_split(clips: ClipList, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices for train and validation: the ``split`` column if present, else a seeded split stratified by label."""
    if any(clips.groups):
        train = [i for i, g in enumerate(clips.groups) if g in ("train", "")]
        val = [i for i, g in enumerate(clips.groups) if g in ("val", "test")]
        if not val:
            raise ConfigError("the manifest's split column names no 'val' or 'test' rows")
        return train, val
    rng = np.random.default_rng(seed)
    by_class: dict[int, list[int]] = {}
    for i, labels in enumerate(clips.labels):
        by_class.setdefault(labels[0], []).append(i)
    train, val = [], []
    for members in by_class.values():
        members = list(rng.permutation(members))
        n_val = max(1, round(len(members) * val_fraction)) if len(members) > 1 else 0
        val += members[:n_val]
        train += members[n_val:]
    return sorted(train), sorted(val)


@dataclass
class DecodedClips:
    """Clips decoded to a fixed length: ``audio`` is an int16 memory map ``(N, samples)``."""

    audio: np.ndarray
    targets: np.ndarray  # (N, num_classes) float32 multi-hot
    paths: list[str]
    sample_rate: int
    label_names: list[str]
    multilabel: bool
    failed: dict[str, str] = field(default_factory=dict)  # path -> problem, skipped


class _DecodeJob(Dataset):
    def __init__(self, paths: list[Path], sample_rate: int, samples: int):
        self.paths, self.sample_rate, self.samples = paths, sample_rate, samples

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, np.ndarray | None, str | None]:
        try:
            wave = load_audio(self.paths[i], sample_rate=self.sample_rate).numpy()
        except AudioLoadError as err:
            return i, None, err.problem
        except Exception as err:  # a decoder crash on one file is reported, not fatal
            return i, None, f"{type(err).__name__}: {err}"
        out = np.zeros(self.samples, dtype=np.int16)
        clip = np.clip(wave[: self.samples], -1.0, 32767 / 32768)
        out[: len(clip)] = np.round(clip * 32768).astype(np.int16)
        return i, out, None


def _cache_key(paths: list[Path], sample_rate: int, samples: int) -> str:
    digest = hashlib.sha256(f"{sample_rate}:{samples}".encode())
    for p in paths:
        try:
            stat = p.stat()
            digest.update(f"{p}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{p}:missing\n".encode())
    return digest.hexdigest()[:16]


def decode_clips(
    clips: ClipList,
    sample_rate: int,
    clip_seconds: float,
    cache_dir: str | Path,
    num_workers: int = 0,
    progress: bool = True,
) -> DecodedClips:
    """Decode every clip once into ``cache_dir`` (reused when files, rate and length are unchanged); ``progress``
    shows a bar on stderr while decoding."""
    samples = round(clip_seconds * sample_rate)
    key = _cache_key(clips.paths, sample_rate, samples)
    folder = Path(cache_dir) / f"{sample_rate}hz_{samples}_{key}"
    index_file = folder / "index.json"
    if not index_file.is_file():
        _build_cache(clips, sample_rate, samples, folder, num_workers, progress)
    index = json.loads(index_file.read_text())
    audio = np.load(folder / "audio.npy", mmap_mode="r")
    kept = index["kept"]
    targets = np.zeros((len(kept), len(clips.label_names)), dtype=np.float32)
    for row, i in enumerate(kept):
        targets[row, clips.labels[i]] = 1.0
    return DecodedClips(
        audio=audio,
        targets=targets,
        paths=[str(clips.paths[i]) for i in kept],
        sample_rate=sample_rate,
        label_names=list(clips.label_names),
        multilabel=clips.multilabel,
        failed=index["failed"],
    )


def _build_cache(
    clips: ClipList, sample_rate: int, samples: int, folder: Path, num_workers: int, progress: bool
) -> None:
    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    audio = np.lib.format.open_memmap(tmp / "audio.npy", mode="w+", dtype=np.int16, shape=(len(clips), samples))
    ok = np.zeros(len(clips), dtype=bool)
    failed: dict[str, str] = {}
    loader = DataLoader(_DecodeJob(clips.paths, sample_rate, samples), batch_size=None, num_workers=num_workers)
    from tqdm.auto import tqdm

    bar = tqdm(loader, total=len(clips), desc="decoding", unit="file", leave=False, disable=not progress)
    for i, wave, problem in bar:
        if wave is None:
            failed[str(clips.paths[i])] = problem or "unreadable"
            _logger.warning("skipping %s: %s", clips.paths[i], problem)
            continue
        audio[i] = wave
        ok[i] = True
    kept = [int(i) for i in np.flatnonzero(ok)]
    if len(kept) < len(clips):
        # Compact the rows so the memory map holds only usable clips.
        compact = np.lib.format.open_memmap(tmp / "kept.npy", mode="w+", dtype=np.int16, shape=(len(kept), samples))
        for row, i in enumerate(kept):
            compact[row] = audio[i]
        compact.flush()
        del audio, compact
        os.replace(tmp / "kept.npy", tmp / "audio.npy")
    else:
        audio.flush()
        del audio
    (tmp / "index.json").write_text(json.dumps({"kept": kept, "failed": failed, "sample_rate": sample_rate}))
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    if failed:
        _logger.warning("%d of %d clips could not be read and are skipped", len(failed), len(clips))


class ClipDataset(Dataset):
    """Rows of a ``DecodedClips`` as ``(waveform float32 (T,), target (C,))``."""

    def __init__(self, decoded: DecodedClips, rows: list[int] | None = None):
        self.decoded = decoded
        self.rows = list(range(len(decoded.paths))) if rows is None else list(rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        row = self.rows[i]
        wave = torch.from_numpy(np.asarray(self.decoded.audio[row], dtype=np.float32) / 32768.0)
        return wave, torch.from_numpy(self.decoded.targets[row])

    def class_counts(self) -> np.ndarray:
        return self.decoded.targets[self.rows].sum(axis=0)


def label_histogram(clips: ClipList) -> Counter:
    return Counter(label for labels in clips.labels for label in labels)
