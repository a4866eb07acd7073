"""A picture of one tagged file (``audiokit tag FILE --plot out.png``): its log-mel spectrogram over time, the top
classes' probabilities as a heat map beneath on the same time axis, and the sound events as bars.

The image has a bounded number of columns whatever the file's length (:data:`MAX_COLUMNS`): the spectrogram's hop
grows with the file (a 10 s clip at 10 ms, an hour at about 1.8 s, each column the mean power over its hop) and the
probability frames are drawn at their times, so an hour is as readable as 10 s.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ._fileio import atomic_write
from .events import Event

MAX_COLUMNS = 2000
TOP_CLASSES = 10


def spectrogram_image(wave: torch.Tensor, sample_rate: int, n_mels: int = 64) -> tuple[np.ndarray, float]:
    """Log-mel power in dB ``(n_mels, columns)`` of a mono ``wave``, at most :data:`MAX_COLUMNS` columns, and the
    seconds per column."""
    import torchaudio

    n = wave.shape[-1]
    hop = max(round(0.01 * sample_rate), -(-n // MAX_COLUMNS))
    n_fft = 1 << max(8, int(np.ceil(np.log2(0.025 * sample_rate))))
    # A hop longer than the window would skip audio: average the power of 25 ms frames over each column instead.
    frame_hop = min(hop, n_fft // 2)
    mel = torchaudio.transforms.MelSpectrogram(sample_rate, n_fft=n_fft, hop_length=frame_hop, n_mels=n_mels)
    power = mel(wave.reshape(-1).float())  # (n_mels, frames)
    per_column = max(1, -(-hop // frame_hop))  # rounded up: never more than MAX_COLUMNS
    columns = power.shape[1] // per_column if power.shape[1] >= per_column else 1
    power = power[:, : columns * per_column].reshape(n_mels, columns, -1).mean(dim=2)
    db = 10 * torch.log10(power.clamp_min(1e-10))
    return db.clamp_min(db.max() - 80).numpy(), frame_hop * per_column / sample_rate


def plot_file(
    wave: torch.Tensor,
    sample_rate: int,
    probabilities: np.ndarray,
    times: np.ndarray,
    label_names: Sequence[str],
    events: Sequence[Event],
    output: str | os.PathLike[str] | None = None,
    *,
    title: str = "",
    top: int = TOP_CLASSES,
) -> Any:
    """Draw (and, with ``output``, save) the picture; returns the matplotlib figure. ``probabilities`` ``(frames,
    classes)`` over frame spans ``times`` ``(frames, 2)``; the ``top`` classes by peak probability are shown, and every
    class that has an event."""
    # A Figure of its own, not pyplot's: no global backend switch, no figure left open in a notebook or a loop.
    from matplotlib.figure import Figure

    probs = np.asarray(probabilities, np.float64)
    spans = np.asarray(times, np.float64)
    duration = wave.shape[-1] / sample_rate
    peaks = probs.max(axis=0) if len(probs) else np.zeros(len(label_names))
    shown = list(np.argsort(-peaks, kind="stable")[:top])
    for event in events:
        index = list(label_names).index(event.label)
        if index not in shown:
            shown.append(index)
    image, _ = spectrogram_image(wave, sample_rate)
    fig = Figure(figsize=(12, 2.5 + 0.75 * len(shown)), layout="constrained")  # room for long class names
    ax_spec, ax_probs, ax_events = fig.subplots(
        3, 1, sharex=True, gridspec_kw={"height_ratios": [3, max(1, len(shown)) * 0.45, max(1, len(shown)) * 0.3]}
    )
    ax_spec.imshow(image, origin="lower", aspect="auto", extent=(0, duration, 0, image.shape[0]), cmap="magma")
    ax_spec.set_ylabel("mel band")
    ax_spec.set_title(title)
    # Frames are drawn at their own spans (pcolormesh), so overlapping or uneven windows land where they belong.
    edges = np.concatenate([spans[:, 0], spans[-1:, 1]]) if len(spans) else np.array([0.0, duration])
    heat = probs[:, shown].T if len(probs) else np.zeros((len(shown), 1))
    mesh = ax_probs.pcolormesh(edges, np.arange(len(shown) + 1), heat, vmin=0, vmax=1, cmap="viridis")
    ax_probs.set_yticks(np.arange(len(shown)) + 0.5, [label_names[i] for i in shown], fontsize=8)
    ax_probs.invert_yaxis()
    fig.colorbar(mesh, ax=[ax_spec, ax_probs, ax_events], fraction=0.02, label="probability")
    rows = {index: row for row, index in enumerate(shown)}
    for event in events:
        row = rows[list(label_names).index(event.label)]
        ax_events.broken_barh([(event.onset, event.offset - event.onset)], (row + 0.1, 0.8), color="tab:red")
    ax_events.set_ylim(len(shown), 0)
    ax_events.set_yticks(np.arange(len(shown)) + 0.5, [label_names[i] for i in shown], fontsize=8)
    ax_events.set_xlim(0, duration)
    ax_events.set_xlabel("time (s)")
    ax_events.set_ylabel("events")
    if output is not None:
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=100)
        atomic_write(output, buffer.getvalue())  # a killed run leaves the old picture or the new one, whole
    return fig
