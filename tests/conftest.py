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
