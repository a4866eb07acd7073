"""``audiokit evaluate``: score a model on a dataset split and write a report.

The report directory receives ``metrics.json`` (every metric of ``audiokit.metrics.evaluate`` for the task),
``per_class.csv``, a confusion-matrix PNG (single-label) or a precision-recall PNG (multi-label), and
``predictions.npz`` (probabilities, targets, paths) so that other metrics can be computed later without the model.
"""

from __future__ import annotations

import csv
import io
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._fileio import atomic_write, to_json
from .models._base import AudioClassifier
from .train.config import ConfigError, DataConfig, check_output_directory, check_values
from .train.data import ClipDataset, decode_clips, default_cache_dir, holdout_split, read_clips
from .train.loop import predict

_logger = logging.getLogger(__name__)


def evaluation_split(data: DataConfig, fold: int | None, seed: int = 0) -> tuple[Any, list[int]]:
    """The clips and the indices to evaluate: an ESC-50 test fold, or the hold-out split of a folder/manifest."""
    clips = read_clips(data)
    if data.kind == "esc50":
        if fold is None:
            raise ConfigError("ESC-50 evaluation needs --fold 1-5 (the test fold)")
        if fold not in (1, 2, 3, 4, 5):
            raise ConfigError(f"--fold must be 1-5, got {fold}")
        rows = [i for i, g in enumerate(clips.groups) if g == fold]
        if not rows:
            raise ConfigError(f"fold {fold} has no clips in {data.root}")
        return clips, rows
    return clips, holdout_split(clips, data.val_fraction, seed)[1]


def evaluate_model(
    model: AudioClassifier,
    data: DataConfig,
    report_dir: str | os.PathLike[str],
    *,
    fold: int | None = None,
    batch_size: int = 32,
    device: str = "auto",
    seed: int = 0,
) -> dict[str, Any]:
    """Evaluate ``model`` on the split and write the report; returns the metrics dict."""
    from . import metrics
    from .inference import resolve_device

    # The data section may come straight from YAML without RunConfig.validate; both checks come before any work.
    check_values(data, "data.")
    check_output_directory(report_dir, "report directory")
    clips, rows = evaluation_split(data, fold, seed)
    if model.num_classes != len(clips.label_names):
        raise ConfigError(
            f"the model has {model.num_classes} outputs but the dataset has {len(clips.label_names)} classes"
        )
    names = list(model.label_names)
    if names != clips.label_names:
        _logger.warning("the model's label names differ from the dataset's; the dataset's order is used")
    subset = clips.select(rows)
    decoded = decode_clips(subset, model.sample_rate, data.clip_seconds, default_cache_dir(data), data.num_workers)
    dev = resolve_device(device)
    logits, targets = predict(model.to(dev), ClipDataset(decoded), batch_size, dev, None)
    probs = model.activate(logits)
    task = "multilabel" if decoded.multilabel or model.task == "multilabel" else "multiclass"
    # predict_proba's output as probabilities: identity reports logits, log_softmax log-probabilities.
    inputs = "logits" if model.output_activation == "identity" else "probs"
    if model.output_activation == "log_softmax":
        probs = probs.exp()
    result = metrics.evaluate(probs, targets, task, label_names=clips.label_names, inputs=inputs, device=dev)
    result["skipped_clips"] = decoded.failed
    result["model"] = model.pretrained_cfg.name
    result["fold"] = fold
    _write_report(Path(report_dir), result, probs.cpu(), targets.cpu(), decoded.paths, clips.label_names, task)
    return result


def _write_report(out: Path, result, probs, targets, paths, names, task) -> None:
    out.mkdir(parents=True, exist_ok=True)
    per_class = result.get("per_class", [])
    atomic_write(out / "metrics.json", (to_json(result, indent=2) + "\n").encode())
    if per_class:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(per_class[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(per_class)
        atomic_write(out / "per_class.csv", buffer.getvalue().encode())
    arrays = io.BytesIO()
    np.savez(arrays, probs=probs.numpy(), targets=targets.numpy(), paths=np.asarray(paths, dtype=str),
             label_names=np.asarray(names, dtype=str))  # fmt: skip
    atomic_write(out / "predictions.npz", arrays.getvalue())
    if task == "multiclass":
        atomic_write(out / "confusion_matrix.png", confusion_png(np.asarray(result["confusion_matrix"]), names))
    else:
        atomic_write(out / "pr_curve.png", pr_curve_png(probs, targets))


def confusion_png(matrix: np.ndarray, names: list[str]) -> bytes:
    """Row-normalised confusion matrix with the class names on both axes; readable at 50 classes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(names)
    size = max(6.0, 0.24 * n + 3)
    fig, ax = plt.subplots(figsize=(size, size), dpi=110)
    totals = matrix.sum(axis=1, keepdims=True)
    shown = np.divide(matrix, totals, out=np.zeros_like(matrix, dtype=float), where=totals > 0)
    image = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1)
    tick_size = 9 if n <= 20 else 7.5
    ax.set_xticks(range(n), names, rotation=90, fontsize=tick_size)
    ax.set_yticks(range(n), names, fontsize=tick_size)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title("confusion matrix (rows normalised to the true class)")
    if n <= 20:
        for i in range(n):
            for j in range(n):
                if matrix[i, j]:
                    ax.text(j, i, int(matrix[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if shown[i, j] > 0.5 else "black")  # fmt: skip
    fig.colorbar(image, ax=ax, fraction=0.04)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def pr_curve_png(probs: torch.Tensor, targets: torch.Tensor) -> bytes:
    """Micro-averaged precision-recall curve over all classes, with the micro AP in the legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from torchmetrics.functional.classification import binary_average_precision, binary_precision_recall_curve

    flat_p, flat_t = probs.flatten().float(), targets.flatten().long()
    precision, recall, _ = binary_precision_recall_curve(flat_p, flat_t)
    ap = float(binary_average_precision(flat_p, flat_t))
    fig, ax = plt.subplots(figsize=(6, 5), dpi=110)
    ax.plot(recall.numpy(), precision.numpy(), label=f"micro-averaged (AP {ap:.3f})")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_title("precision-recall")
    ax.legend(loc="lower left")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()
