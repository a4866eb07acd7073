"""Evaluation metrics for audio classification, computed with ``torchmetrics``.

This module does not re-derive the metrics: every count, curve and score comes from
``torchmetrics.functional.classification``. Its job is to pick the right metrics for the task, handle the
degenerate cases in one documented way, aggregate results over folds/seeds and report them as plain Python.

Tasks
-----
``"multiclass"``: ``preds`` is ``(N, C)`` probabilities (``inputs="probs"``, the default) or logits
(``inputs="logits"``, softmax is applied); ``targets`` is ``(N,)`` integer labels or ``(N, C)`` one-hot/soft
labels, which are reduced with ``argmax`` (log-loss then uses the argmax label too).

``"multilabel"``: ``preds`` is ``(N, C)`` probabilities (or logits with ``inputs="logits"``, sigmoid is
applied); ``targets`` is ``(N, C)`` multi-hot in {0, 1}.

Inputs may be ``torch.Tensor``, ``numpy.ndarray`` or nested lists. Computation runs on ``device`` if given,
otherwise on the device of ``preds`` (CPU for arrays/lists), so GPU tensors are evaluated on the GPU.

Degenerate cases (one rule for the whole module)
-------------------------------------------------
* **Class without positives** (no true sample of that class): its recall, AP and ROC-AUC are undefined. It is
  excluded from every *macro* average (multiclass: precision/recall/F1/specificity/balanced accuracy;
  multilabel: mAP, ROC-AUC, F1) and counted in ``"classes_without_positives"``. Its per-class row is still
  reported (``support`` 0; ``ap``/``auc`` are ``None`` in multilabel). Micro and weighted averages need no
  exclusion (weighted gives such a class weight 0; micro pools the counts). Note that this makes a multiclass
  macro precision differ from scikit-learn's ``labels=all`` convention when a class without support is
  predicted; balanced accuracy equals scikit-learn's ``balanced_accuracy_score``.
* **Class without negatives** (multilabel, every sample positive): ROC-AUC is undefined; the class is excluded
  from the ROC-AUC macro average and counted in ``"classes_without_negatives"`` (its AP is defined: 1.0).
* **0/0 ratios** (e.g. precision of a class that is never predicted): defined as 0, torchmetrics'
  ``zero_division=0`` behaviour.
* ``N == 0`` or NaN in ``preds``/``targets``: ``ValueError``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torchmetrics.functional.classification import (
    binary_precision_recall_curve,
    multiclass_accuracy,
    multiclass_calibration_error,
    multiclass_confusion_matrix,
    multiclass_f1_score,
    multiclass_precision,
    multiclass_recall,
    multiclass_specificity,
    multilabel_auroc,
    multilabel_average_precision,
    multilabel_f1_score,
)

__all__ = [
    "accuracy",
    "aggregate",
    "d_prime",
    "evaluate",
    "main_metric",
    "mean_average_precision",
    "roc_auc",
    "top_k_accuracy",
]

TASKS = ("multiclass", "multilabel")
ECE_BINS = 15
_PROB_TOL = 1e-3  # how far probabilities may stray outside [0, 1] (float rounding) before inputs="probs" is refused
_ROW_SUM_TOL = 1e-2  # multiclass probabilities must sum to 1 within this per row


# ----------------------------------------------------------------------------------------------- input handling


def _to_tensor(x: Any, device: torch.device | str | None) -> torch.Tensor:
    t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    t = t.detach()
    return t.to(device) if device is not None else t


def _prepare_preds(preds: Any, device: torch.device | str | None) -> torch.Tensor:
    if device is None and isinstance(preds, torch.Tensor):
        device = preds.device
    p = _to_tensor(preds, device)
    if p.ndim != 2:
        raise ValueError(f"preds must have shape (N, C), got {tuple(p.shape)}")
    if p.shape[0] == 0:
        raise ValueError("cannot compute metrics on an empty set: preds has N=0 samples")
    if p.shape[1] == 0:
        raise ValueError("preds has C=0 classes")
    if not p.is_floating_point() or p.dtype in (torch.float16, torch.bfloat16):
        p = p.float()
    if torch.isnan(p).any():
        raise ValueError("preds contains NaN")
    return p


def _check_targets_nan(t: torch.Tensor) -> None:
    if t.is_floating_point() and torch.isnan(t).any():
        raise ValueError("targets contains NaN")


def _multiclass_targets(targets: Any, n: int, c: int, device: torch.device) -> torch.Tensor:
    t = _to_tensor(targets, device)
    _check_targets_nan(t)
    if t.ndim == 2:
        if t.shape != (n, c):
            raise ValueError(f"one-hot/soft targets must have shape {(n, c)}, got {tuple(t.shape)}")
        t = t.argmax(dim=1)
    elif t.ndim == 1:
        if t.shape[0] != n:
            raise ValueError(f"targets has {t.shape[0]} samples but preds has {n}")
        if t.is_floating_point() and not torch.equal(t, t.round()):
            raise ValueError("integer class targets expected, got non-integer values")
    else:
        raise ValueError(f"targets must have shape (N,) or (N, C), got {tuple(t.shape)}")
    t = t.long()
    if t.numel() and (t.min() < 0 or t.max() >= c):
        raise ValueError(f"targets must lie in [0, {c - 1}], got values in [{int(t.min())}, {int(t.max())}]")
    return t


def _multilabel_targets(targets: Any, n: int, c: int, device: torch.device) -> torch.Tensor:
    t = _to_tensor(targets, device)
    _check_targets_nan(t)
    if t.shape != (n, c):
        raise ValueError(f"multi-label targets must have shape {(n, c)}, got {tuple(t.shape)}")
    if not ((t == 0) | (t == 1)).all():
        raise ValueError("multi-label targets must be multi-hot (values 0 or 1)")
    return t.long()


def _check_inputs_arg(inputs: str) -> None:
    if inputs not in ("probs", "logits"):
        raise ValueError(f'inputs must be "probs" or "logits", got {inputs!r}')


def _check_probs(p: torch.Tensor, *, rows_sum_to_one: bool) -> None:
    if p.min() < -_PROB_TOL or p.max() > 1 + _PROB_TOL:
        raise ValueError(
            f"inputs='probs' but preds lie in [{float(p.min()):.4g}, {float(p.max()):.4g}], outside [0, 1]; "
            "pass inputs='logits' for raw model outputs"
        )
    if rows_sum_to_one:
        dev = (p.sum(dim=1) - 1).abs().max()
        if dev > _ROW_SUM_TOL:
            raise ValueError(
                f"inputs='probs' but rows of preds do not sum to 1 (max deviation {float(dev):.4g}); "
                "pass softmax probabilities, or inputs='logits'"
            )


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> float:
    return float(values[mask].double().mean()) if bool(mask.any()) else float("nan")


def _label_names(label_names: Sequence[str] | None, c: int) -> list[str]:
    if label_names is None:
        return [str(i) for i in range(c)]
    names = [str(x) for x in label_names]
    if len(names) != c:
        raise ValueError(f"label_names has {len(names)} names but preds has {c} classes")
    return names


# ------------------------------------------------------------------------------------------------ single metrics


def accuracy(preds: Any, targets: Any) -> float:
    """Top-1 accuracy of ``(N, C)`` scores (probabilities or logits: only the argmax matters)."""
    return top_k_accuracy(preds, targets, k=1)


def top_k_accuracy(preds: Any, targets: Any, k: int = 5) -> float:
    """Fraction of samples whose true class is among the ``k`` highest scores (probabilities or logits)."""
    p = _prepare_preds(preds, None)
    n, c = p.shape
    if not 1 <= k <= c:
        raise ValueError(f"k must be in [1, {c}] for {c} classes, got {k}")
    t = _multiclass_targets(targets, n, c, p.device)
    return float(multiclass_accuracy(p, t, num_classes=c, average="micro", top_k=k))


def _ap_auc_per_class(
    p: torch.Tensor, t: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-class AP and ROC-AUC (NaN where undefined) plus the masks of classes where they are defined."""
    c = p.shape[1]
    pos = t.sum(dim=0)
    has_pos = pos > 0
    has_both = has_pos & (pos < t.shape[0])
    ap = torch.full((c,), float("nan"), dtype=torch.float64, device=p.device)
    auc = ap.clone()
    # Only defined columns go to torchmetrics: it would otherwise score undefined classes 0 and warn.
    if has_pos.any():
        idx = has_pos.nonzero().squeeze(1)
        ap[idx] = multilabel_average_precision(p[:, idx], t[:, idx], num_labels=len(idx), average=None).double()
    if has_both.any():
        idx = has_both.nonzero().squeeze(1)
        auc[idx] = multilabel_auroc(p[:, idx], t[:, idx], num_labels=len(idx), average=None).double()
    return ap, auc, has_pos, has_both


def mean_average_precision(preds: Any, targets: Any) -> float:
    """mAP: average precision per class (torchmetrics), averaged over the classes that have positives.

    Classes without positives are excluded (see module docstring); NaN if no class has a positive.
    """
    p = _prepare_preds(preds, None)
    t = _multilabel_targets(targets, *p.shape, p.device)
    ap, _, has_pos, _ = _ap_auc_per_class(p, t)
    return _masked_mean(ap, has_pos)


def roc_auc(preds: Any, targets: Any) -> float:
    """Macro ROC-AUC over classes having both positives and negatives (the others are excluded)."""
    p = _prepare_preds(preds, None)
    t = _multilabel_targets(targets, *p.shape, p.device)
    _, auc, _, has_both = _ap_auc_per_class(p, t)
    return _masked_mean(auc, has_both)


def d_prime(auc: float) -> float:
    """Sensitivity index from ROC-AUC: ``d' = sqrt(2) * Phi^-1(AUC)`` (Phi: standard normal CDF).

    This is the equal-variance Gaussian relation used by the AudioSet/PANNs papers, which report d' of the
    *mean* (macro) AUC, not the mean of per-class d' values; ``evaluate`` follows them. PANNs' Cnn14 pair
    (AUC 0.973, d' 2.732) is reproduced within rounding of the printed AUC (d_prime(0.973) = 2.725,
    d_prime(0.97331) = 2.732). AUC 0.5 gives 0, AUC 1 gives ``inf``.
    """
    auc = float(auc)
    if math.isnan(auc):
        return float("nan")
    if not 0.0 <= auc <= 1.0:
        raise ValueError(f"AUC must lie in [0, 1], got {auc}")
    normal = torch.distributions.Normal(torch.tensor(0.0, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64))
    return float(math.sqrt(2.0) * normal.icdf(torch.tensor(auc, dtype=torch.float64)))


def main_metric(task: str) -> str:
    """The key of ``evaluate``'s result used for model selection: ``"accuracy"`` or ``"map"``."""
    if task == "multiclass":
        return "accuracy"
    if task == "multilabel":
        return "map"
    raise ValueError(f"task must be one of {TASKS}, got {task!r}")


# ---------------------------------------------------------------------------------------------------- evaluate


def evaluate(
    preds: Any,
    targets: Any,
    task: str = "multiclass",
    *,
    label_names: Sequence[str] | None = None,
    inputs: str = "probs",
    threshold: float = 0.5,
    device: torch.device | str | None = None,
) -> dict[str, Any]:
    """All metrics for ``task`` as a flat dict of floats/ints plus ``"per_class"`` (list of dicts, one per class,
    with ``"label"``) and, for multiclass, ``"confusion_matrix"`` (``C x C`` list of lists, rows = true class).

    ``inputs="probs"``: ``preds`` are probabilities used as they are (multiclass rows must sum to 1 within
    1e-2, values must lie in [0, 1]); ``inputs="logits"``: softmax (multiclass) or sigmoid (multilabel) is
    applied first. Only log-loss, ECE and thresholded multi-label metrics depend on this; rankings do not.

    Multiclass keys: ``n_samples, num_classes, classes_without_positives, accuracy, top1_accuracy,
    top5_accuracy`` (only if C >= 5), ``balanced_accuracy`` (= ``recall_macro``), ``precision_/recall_/f1_``
    ``{macro,micro,weighted}`` (recall = sensitivity = TPR), ``specificity_macro`` (TNR), ``fpr_macro``
    (= 1 - specificity_macro), ``fnr_macro`` (= 1 - recall_macro), ``log_loss`` (mean negative log-probability
    of the true class, natural log, probabilities clamped to >= 1e-15), ``ece`` (torchmetrics
    ``multiclass_calibration_error``, 15 bins, l1, on the top-1 confidence).

    Multilabel keys: ``n_samples, num_classes, classes_without_positives, classes_without_negatives, map``
    (macro AP), ``ap_micro``, ``roc_auc`` (macro), ``d_prime`` (= d_prime(roc_auc), as in AudioSet papers),
    ``f1_macro, f1_micro`` (a class is positive when ``prob > threshold``, torchmetrics' convention),
    ``f1_macro_optimal, f1_micro_optimal``: each class gets the threshold maximising *its own* F1 on these very
    data (positive when ``prob >= thr``), so these are **optimistic** when the thresholds are chosen on the
    evaluation set; choose them on validation data for an honest number. Per class: ``ap, auc, f1,
    optimal_threshold, f1_optimal, support`` (``None`` where undefined).

    See the module docstring for the degenerate-case rules.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    _check_inputs_arg(inputs)
    p = _prepare_preds(preds, device)
    if task == "multiclass":
        return _evaluate_multiclass(p, targets, label_names, inputs)
    return _evaluate_multilabel(p, targets, label_names, inputs, float(threshold))


def _evaluate_multiclass(p: torch.Tensor, targets: Any, label_names: Any, inputs: str) -> dict[str, Any]:
    n, c = p.shape
    names = _label_names(label_names, c)
    t = _multiclass_targets(targets, n, c, p.device)
    if inputs == "logits":
        log_probs = torch.log_softmax(p.double(), dim=1)
        probs = log_probs.exp()
    else:
        _check_probs(p, rows_sum_to_one=True)
        probs = p.double().clamp(0.0, 1.0)
        log_probs = probs.clamp_min(1e-15).log()

    support = torch.bincount(t, minlength=c)
    has_pos = support > 0
    kw = {"num_classes": c}

    res: dict[str, Any] = {"n_samples": n, "num_classes": c, "classes_without_positives": int((~has_pos).sum())}
    res["accuracy"] = float(multiclass_accuracy(probs, t, average="micro", **kw))
    res["top1_accuracy"] = res["accuracy"]
    if c >= 5:
        res["top5_accuracy"] = float(multiclass_accuracy(probs, t, average="micro", top_k=5, **kw))

    per: dict[str, torch.Tensor] = {}
    for name, fn in (("precision", multiclass_precision), ("recall", multiclass_recall), ("f1", multiclass_f1_score)):
        per[name] = fn(probs, t, average=None, **kw)
        res[f"{name}_macro"] = _masked_mean(per[name], has_pos)
        res[f"{name}_micro"] = float(fn(probs, t, average="micro", **kw))
        res[f"{name}_weighted"] = float(fn(probs, t, average="weighted", **kw))
    per["specificity"] = multiclass_specificity(probs, t, average=None, **kw)
    res["specificity_macro"] = _masked_mean(per["specificity"], has_pos)
    res["balanced_accuracy"] = res["recall_macro"]
    res["fpr_macro"] = 1.0 - res["specificity_macro"]
    res["fnr_macro"] = 1.0 - res["recall_macro"]
    res["log_loss"] = float(-log_probs.gather(1, t[:, None]).mean())
    res["ece"] = float(multiclass_calibration_error(probs, t, n_bins=ECE_BINS, norm="l1", **kw))

    res["per_class"] = [
        {
            "label": names[i],
            "precision": float(per["precision"][i]),
            "recall": float(per["recall"][i]),
            "f1": float(per["f1"][i]),
            "specificity": float(per["specificity"][i]),
            "support": int(support[i]),
        }
        for i in range(c)
    ]
    res["confusion_matrix"] = multiclass_confusion_matrix(probs, t, **kw).cpu().tolist()
    return res


def _optimal_thresholds(p: torch.Tensor, t: torch.Tensor, has_pos: torch.Tensor) -> tuple[list, torch.Tensor]:
    """Per class, the threshold (``prob >= thr``) maximising that class's F1 on (p, t), and that F1."""
    c = p.shape[1]
    thresholds: list[float | None] = [None] * c
    best_f1 = torch.zeros(c, dtype=torch.float64, device=p.device)
    for i in range(c):
        if not has_pos[i]:
            continue
        precision, recall, thr = binary_precision_recall_curve(p[:, i], t[:, i], thresholds=None)
        precision, recall = precision[:-1].double(), recall[:-1].double()  # last point has no threshold
        denom = precision + recall
        f1 = torch.where(denom > 0, 2 * precision * recall / denom.clamp_min(1e-300), torch.zeros_like(denom))
        j = int(f1.argmax())
        thresholds[i] = float(thr[j])
        best_f1[i] = f1[j]
    return thresholds, best_f1


def _evaluate_multilabel(p: torch.Tensor, targets: Any, label_names: Any, inputs: str, threshold: float) -> dict:
    n, c = p.shape
    names = _label_names(label_names, c)
    t = _multilabel_targets(targets, n, c, p.device)
    if inputs == "logits":
        probs = torch.sigmoid(p)
    else:
        _check_probs(p, rows_sum_to_one=False)
        probs = p.clamp(0.0, 1.0)
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must lie in [0, 1], got {threshold}")

    ap, auc, has_pos, has_both = _ap_auc_per_class(probs, t)
    support = t.sum(dim=0)
    res: dict[str, Any] = {
        "n_samples": n,
        "num_classes": c,
        "classes_without_positives": int((~has_pos).sum()),
        "classes_without_negatives": int((support == n).sum()),
    }
    res["map"] = _masked_mean(ap, has_pos)
    res["ap_micro"] = float(multilabel_average_precision(probs, t, num_labels=c, average="micro"))
    res["roc_auc"] = _masked_mean(auc, has_both)
    res["d_prime"] = d_prime(res["roc_auc"])

    f1 = multilabel_f1_score(probs, t, num_labels=c, threshold=threshold, average=None)
    res["f1_macro"] = _masked_mean(f1, has_pos)
    res["f1_micro"] = float(multilabel_f1_score(probs, t, num_labels=c, threshold=threshold, average="micro"))

    thresholds, f1_opt = _optimal_thresholds(probs, t, has_pos)
    res["f1_macro_optimal"] = _masked_mean(f1_opt, has_pos)
    thr = torch.tensor([x if x is not None else math.inf for x in thresholds], dtype=probs.dtype, device=p.device)
    hard = (probs >= thr).long()  # already binary, so torchmetrics' own threshold does not matter
    res["f1_micro_optimal"] = float(multilabel_f1_score(hard, t, num_labels=c, average="micro"))

    def _opt(x: torch.Tensor) -> float | None:
        return None if math.isnan(float(x)) else float(x)

    res["per_class"] = [
        {
            "label": names[i],
            "ap": _opt(ap[i]),
            "auc": _opt(auc[i]),
            "f1": float(f1[i]),
            "optimal_threshold": thresholds[i],
            "f1_optimal": float(f1_opt[i]) if has_pos[i] else None,
            "support": int(support[i]),
        }
        for i in range(c)
    ]
    return res


# --------------------------------------------------------------------------------------------------- aggregate


def _is_scalar(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def aggregate(results: Sequence[dict]) -> dict[str, dict[str, Any]]:
    """Mean and spread over folds/seeds of every scalar key present in all ``results``.

    Returns ``{key: {"mean", "std", "n", "values"}}``; ``std`` is the sample standard deviation (ddof=1), 0.0 for
    a single result. Non-scalar entries (``per_class``, ``confusion_matrix``) and keys missing from some result
    are skipped.
    """
    results = list(results)
    if not results:
        raise ValueError("aggregate needs at least one result")
    keys = [k for k, v in results[0].items() if _is_scalar(v)]
    out: dict[str, dict[str, Any]] = {}
    for k in keys:
        if not all(k in r and _is_scalar(r[k]) for r in results):
            continue
        values = [float(r[k]) for r in results]
        arr = np.asarray(values, dtype=np.float64)
        std = float(arr.std(ddof=1)) if len(arr) > 1 else 0.0
        out[k] = {"mean": float(arr.mean()), "std": std, "n": len(values), "values": values}
    return out
