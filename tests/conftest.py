"""Shared fixtures: where ../shared lives (CI has it, a user's clone may not) and small audio files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

SHARED = Path(__file__).resolve().parents[2] / "shared"
MN04_CHECKPOINT = SHARED / "weights" / "efficientat" / "mn04_as_mAP_432.pt"
FSDD = SHARED / "data" / "fsdd" / "recordings"


def require_shared(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is absent (../shared holds the real checkpoints and audio; CI has it)")
    return path


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """No test reads or writes the user's real weight cache, and none may reach the network by accident."""
    monkeypatch.setenv("AUDIOKIT_HOME", str(tmp_path_factory.mktemp("audiokit_home")))
    monkeypatch.setenv("AUDIOKIT_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)


@pytest.fixture
def make_wav(tmp_path):
    """Write a WAV: ``make_wav(name, seconds, rate=16000, channels=1, kind="noise"|"tone"|"silence")``."""

    def write(name: str, seconds: float, rate: int = 16000, channels: int = 1, kind: str = "noise", seed: int = 0):
        n = int(seconds * rate)
        rng = np.random.default_rng(seed)
        if kind == "noise":
            x = 0.2 * rng.standard_normal((n, channels))
        elif kind == "tone":
            t = np.arange(n)[:, None] / rate
            x = 0.5 * np.sin(2 * np.pi * 440 * t) * np.ones((1, channels))
        else:
            x = np.zeros((n, channels))
        path = tmp_path / name
        sf.write(path, x.astype(np.float32), rate, subtype="PCM_16")
        return path

    return write


# -- tiny fine-tuning datasets and configs (shared by the training, evaluation, head and study tests) ----------------
def informative_model(name: str, seed: int = 0) -> torch.nn.Module:
    """A randomly initialised model whose outputs change visibly with the input, in eval mode.

    Fresh initialisations of several families give near-constant outputs (EfficientAT's classifier starts at std
    0.01 and untrained BatchNorm statistics leave activations ~1e-8), so comparing two inference paths on them would
    pass whatever the paths did. Linear layers are redrawn at unit gain and BatchNorm statistics are measured on noise,
    which puts logits at O(0.1-1) and makes them depend on the input.
    """
    import audiokit as ak

    torch.manual_seed(seed)
    model = ak.create_model(name)
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            torch.nn.init.normal_(module.weight, std=module.in_features**-0.5, generator=generator)
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # cumulative average over the calibration batches
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(0.2 * torch.randn(4, 2 * model.sample_rate, generator=generator))
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.momentum = 0.1
    return model.eval()


def _tone_clip(label: int, seed: int, seconds: float, rate: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * (300 + 250 * label) * t) + 0.05 * rng.standard_normal(len(t))).astype(np.float32)


def write_manifest(
    root: Path,
    classes: int = 3,
    per_class: int = 8,
    seconds: float = 1.0,
    rate: int = 16000,
    split: bool = True,
    min_seconds: float | None = None,
) -> Path:
    """Synthetic clips whose class is a tone frequency; the last quarter of each class is the validation split.

    With ``min_seconds`` the clip lengths spread evenly from ``min_seconds`` to ``seconds`` within each class.
    """
    (root / "clips").mkdir(parents=True, exist_ok=True)
    rows = ["path,label,split" if split else "path,label"]
    for label in range(classes):
        for i in range(per_class):
            length = seconds if min_seconds is None else min_seconds + (seconds - min_seconds) * i / (per_class - 1)
            name = f"clips/c{label}_{i}.wav"
            sf.write(root / name, _tone_clip(label, 100 * label + i, length, rate), rate, subtype="PCM_16")
            part = ("val" if i >= per_class * 3 // 4 else "train") if split else None
            rows.append(f"{name},class{label}" + (f",{part}" if part else ""))
    path = root / "manifest.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def base_config(tmp_path: Path, manifest: Path, **train) -> dict:
    """A fine-tuning config for mn01 (random init) on a manifest: 1 s clips, 2 epochs, batch 6, Adam 1e-3."""
    return {
        "model": {"name": "efficientat_mn01.audioset", "pretrained": False},
        "data": {
            "kind": "manifest",
            "manifest": str(manifest),
            "clip_seconds": 1.0,
            "num_workers": 0,
            "cache_dir": str(tmp_path / "cache"),
        },
        "train": {"epochs": 2, "batch_size": 6, "optimizer": {"name": "adam", "lr": 1e-3}, "seed": 3, **train},
        "output_dir": str(tmp_path / "runs"),
        "run_name": "run",
    }
