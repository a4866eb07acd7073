"""audiokit.metrics on small cases whose expected values are worked out by hand in the comments."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pytest
import torch

from audiokit import metrics
from audiokit.metrics import (
    accuracy,
    aggregate,
    d_prime,
    evaluate,
    main_metric,
    mean_average_precision,
    roc_auc,
    top_k_accuracy,
)

# ------------------------------------------------------------------------------------------- multiclass example
# 3 classes, 6 samples, supports 3 / 2 / 1. Argmax predictions: [0, 0, 1, 1, 1, 0].
MC_TARGETS = [0, 0, 0, 1, 1, 2]
MC_PROBS = [
    [0.70, 0.20, 0.10],  # y=0, pred 0, conf .70, correct
    [0.55, 0.35, 0.10],  # y=0, pred 0, conf .55, correct
    [0.35, 0.55, 0.10],  # y=0, pred 1, conf .55, wrong
    [0.05, 0.90, 0.05],  # y=1, pred 1, conf .90, correct
    [0.20, 0.70, 0.10],  # y=1, pred 1, conf .70, correct
    [0.50, 0.10, 0.40],  # y=2, pred 0, conf .50, wrong   -> class 2 is never predicted
]
# Confusion matrix (rows = true):   [[2, 1, 0], [0, 2, 0], [1, 0, 0]]
# class 0: TP 2, FP 1, FN 1, TN 2 -> P 2/3, R 2/3, F1 2/3, spec 2/3
# class 1: TP 2, FP 1, FN 0, TN 3 -> P 2/3, R 1,   F1 4/5, spec 3/4
# class 2: TP 0, FP 0, FN 1, TN 5 -> P 0/0 := 0, R 0, F1 0, spec 1
# macro:    P (2/3+2/3+0)/3 = 4/9, R (2/3+1+0)/3 = 5/9, F1 (2/3+4/5+0)/3 = 22/45, spec (2/3+3/4+1)/3 = 29/36
# weighted: P (3*2/3+2*2/3+0)/6 = 5/9, R (3*2/3+2*1+0)/6 = 2/3, F1 (3*2/3+2*4/5+0)/6 = 3/5
# micro P = R = F1 = accuracy = 4/6
# log-loss = -(ln .70 + ln .55 + ln .35 + ln .90 + ln .70 + ln .40) / 6
# ECE, 15 bins of width 1/15 (no confidence on an edge): bin of .50: {wrong} gap .50; bin of .55: acc 1/2, gap .05 (x2);
#   bin of .70: acc 1, gap .30 (x2); bin of .90: acc 1, gap .10  ->  (.50 + 2*.05 + 2*.30 + .10) / 6 = 1.3 / 6
MC_EXPECTED = {
    "accuracy": 4 / 6,
    "balanced_accuracy": 5 / 9,
    "precision_macro": 4 / 9,
    "recall_macro": 5 / 9,
    "f1_macro": 22 / 45,
    "precision_micro": 4 / 6,
    "recall_micro": 4 / 6,
    "f1_micro": 4 / 6,
    "precision_weighted": 5 / 9,
    "recall_weighted": 2 / 3,
    "f1_weighted": 3 / 5,
    "specificity_macro": 29 / 36,
    "fpr_macro": 7 / 36,
    "fnr_macro": 4 / 9,
    "log_loss": -(math.log(0.7) + math.log(0.55) + math.log(0.35) + math.log(0.9) + math.log(0.7) + math.log(0.4)) / 6,
    "ece": 1.3 / 6,
}


def test_multiclass_hand_computed():
    r = evaluate(np.array(MC_PROBS), np.array(MC_TARGETS), label_names=["dog", "cat", "bird"])
    for key, value in MC_EXPECTED.items():
        assert r[key] == pytest.approx(value, abs=1e-6), key
    assert r["n_samples"] == 6 and r["num_classes"] == 3 and r["classes_without_positives"] == 0
    assert r["top1_accuracy"] == r["accuracy"] and "top5_accuracy" not in r  # C < 5
    assert r["confusion_matrix"] == [[2, 1, 0], [0, 2, 0], [1, 0, 0]]
    rows = {row["label"]: row for row in r["per_class"]}
    assert list(rows) == ["dog", "cat", "bird"]
    assert rows["dog"] == pytest.approx({"label": "dog", "precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3,
                                         "specificity": 2 / 3, "support": 3})  # fmt: skip
    assert rows["cat"]["f1"] == pytest.approx(4 / 5) and rows["cat"]["specificity"] == pytest.approx(3 / 4)
    # never-predicted class: precision 0/0 is defined as 0 (torchmetrics zero_division=0)
    assert rows["bird"]["precision"] == 0.0 and rows["bird"]["recall"] == 0.0 and rows["bird"]["support"] == 1
    assert all(isinstance(v, (int, float)) for k, v in r.items() if k not in ("per_class", "confusion_matrix"))


def test_multiclass_matches_sklearn():
    sk = pytest.importorskip("sklearn.metrics")
    r = evaluate(torch.tensor(MC_PROBS), torch.tensor(MC_TARGETS))
    y, p = MC_TARGETS, np.argmax(MC_PROBS, axis=1)
    assert r["balanced_accuracy"] == pytest.approx(sk.balanced_accuracy_score(y, p))
    for avg in ("macro", "micro", "weighted"):
        prec, rec, f1, _ = sk.precision_recall_fscore_support(y, p, average=avg, zero_division=0)
        assert (r[f"precision_{avg}"], r[f"recall_{avg}"], r[f"f1_{avg}"]) == pytest.approx((prec, rec, f1))
    assert r["log_loss"] == pytest.approx(sk.log_loss(y, MC_PROBS))


def test_one_hot_targets_and_logits_match_probs():
    probs = torch.tensor(MC_PROBS, dtype=torch.float64)
    one_hot = torch.nn.functional.one_hot(torch.tensor(MC_TARGETS), 3)
    logits = probs.log() + 3.0  # softmax(log p + const) = p
    ref = evaluate(probs, MC_TARGETS)
    for r in (evaluate(probs, one_hot), evaluate(logits, MC_TARGETS, inputs="logits")):
        for key in MC_EXPECTED:
            assert r[key] == pytest.approx(ref[key], abs=1e-6), key
    with pytest.raises(ValueError, match="logits"):
        evaluate(logits, MC_TARGETS)  # logits passed as probabilities are refused, not silently mis-scored
    with pytest.raises(ValueError, match="sum to 1"):
        evaluate(probs * 0.5, MC_TARGETS)
    with pytest.raises(ValueError, match="inputs"):
        evaluate(probs, MC_TARGETS, inputs="scores")


def test_top_k_accuracy_by_hand():
    scores = [
        [5, 2, 1, 0.5, 0],  # y=0: rank 1
        [0, 1, 2, 3, 4],  # y=0: rank 5
        [4, 3, 2, 1, 0],  # y=1: rank 2
        [0, 0.5, 1, 2, 3],  # y=2: rank 3
    ]
    y = [0, 0, 1, 2]
    assert accuracy(scores, y) == pytest.approx(1 / 4)
    assert top_k_accuracy(scores, y, k=2) == pytest.approx(2 / 4)
    assert top_k_accuracy(scores, y, k=3) == pytest.approx(3 / 4)
    assert top_k_accuracy(scores, y, k=5) == pytest.approx(1.0)
    r = evaluate(torch.softmax(torch.tensor(scores), 1), y)
    assert r["top1_accuracy"] == pytest.approx(1 / 4) and r["top5_accuracy"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="k must be"):
        top_k_accuracy(scores, y, k=6)


def test_multiclass_class_without_positives_excluded_and_counted():
    # class 2 has no true sample; it is predicted once (sample 3).
    probs = [[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1], [0.1, 0.2, 0.7]]
    y = [0, 1, 1, 1]
    # class 0: TP1 FP1 FN0 -> R 1;  class 1: TP1 FP0 FN2 -> R 1/3;  class 2: excluded (no positives)
    r = evaluate(probs, y)
    assert r["classes_without_positives"] == 1
    assert r["recall_macro"] == pytest.approx((1 + 1 / 3) / 2)
    assert r["balanced_accuracy"] == pytest.approx((1 + 1 / 3) / 2)
    assert r["precision_macro"] == pytest.approx((1 / 2 + 1) / 2)
    assert r["per_class"][2]["support"] == 0 and r["per_class"][2]["precision"] == 0.0


# ------------------------------------------------------------------------------------------- multilabel example
# 4 samples x 3 classes.
ML_PROBS = [
    [0.9, 0.1, 0.2],
    [0.2, 0.8, 0.3],
    [0.6, 0.4, 0.1],
    [0.3, 0.7, 0.5],
]
ML_TARGETS = [
    [1, 0, 0],
    [0, 1, 1],
    [1, 1, 0],
    [0, 0, 0],
]
# class 0: ranked .9+ .6+ .3- .2-        -> AP 1,                 AUC 4/4
# class 1: ranked .8+ .7- .4+ .1-        -> AP (1/1 + 2/3)/2 = 5/6, AUC (pos>neg pairs) 3/4
# class 2: ranked .5- .3+ .2- .1-        -> AP 1/2,               AUC 2/3
# mAP = (1 + 5/6 + 1/2)/3 = 7/9;  macro AUC = (1 + 3/4 + 2/3)/3 = 29/36
# micro AP over the 12 pooled scores (5 positives): recall steps of 1/5 at .9 (P 1), .8 (P 1), .6 (P 3/4), .4 (P 4/6),
#   .3 (tie of one + and one -, P 5/8)  ->  (1 + 1 + 3/4 + 2/3 + 5/8)/5 = 97/120
# F1 at 0.5 (positive iff p > 0.5): class 0 -> 1; class 1 TP1 FP1 FN1 -> 1/2; class 2 nothing predicted -> 0
#   macro 1/2; micro TP 3, FP 1, FN 2 -> 6/9
# Best per-class thresholds (positive iff p >= thr): class 0 thr .6 F1 1; class 1 thr .4 (P 2/3, R 1) F1 4/5;
#   class 2 thr .3 (P 1/2, R 1) F1 2/3  ->  macro 37/45; micro TP 5, FP 2, FN 0 -> 10/12
ML_EXPECTED = {
    "map": 7 / 9,
    "roc_auc": 29 / 36,
    "ap_micro": 97 / 120,
    "d_prime": math.sqrt(2) * NormalDist().inv_cdf(29 / 36),
    "f1_macro": 1 / 2,
    "f1_micro": 2 / 3,
    "f1_macro_optimal": 37 / 45,
    "f1_micro_optimal": 5 / 6,
}


def test_multilabel_hand_computed():
    r = evaluate(np.array(ML_PROBS), np.array(ML_TARGETS), "multilabel", label_names=["a", "b", "c"])
    for key, value in ML_EXPECTED.items():
        assert r[key] == pytest.approx(value, abs=1e-6), key
    assert r["classes_without_positives"] == 0 and r["classes_without_negatives"] == 0
    per = r["per_class"]
    assert [row["ap"] for row in per] == pytest.approx([1, 5 / 6, 1 / 2])
    assert [row["auc"] for row in per] == pytest.approx([1, 3 / 4, 2 / 3])
    assert [row["optimal_threshold"] for row in per] == pytest.approx([0.6, 0.4, 0.3])
    assert [row["f1_optimal"] for row in per] == pytest.approx([1, 4 / 5, 2 / 3])
    assert [row["support"] for row in per] == [2, 2, 1] and per[1]["label"] == "b"
    assert mean_average_precision(ML_PROBS, ML_TARGETS) == pytest.approx(7 / 9)
    assert roc_auc(ML_PROBS, ML_TARGETS) == pytest.approx(29 / 36)
    assert "confusion_matrix" not in r


def test_multilabel_matches_sklearn():
    sk = pytest.importorskip("sklearn.metrics")
    r = evaluate(ML_PROBS, ML_TARGETS, "multilabel")
    assert r["map"] == pytest.approx(sk.average_precision_score(ML_TARGETS, ML_PROBS, average="macro"))
    assert r["ap_micro"] == pytest.approx(sk.average_precision_score(ML_TARGETS, ML_PROBS, average="micro"))
    assert r["roc_auc"] == pytest.approx(sk.roc_auc_score(ML_TARGETS, ML_PROBS, average="macro"))


def test_multilabel_logits_and_threshold():
    logits = torch.logit(torch.tensor(ML_PROBS, dtype=torch.float64))
    r = evaluate(logits, ML_TARGETS, "multilabel", inputs="logits")
    for key, value in ML_EXPECTED.items():
        assert r[key] == pytest.approx(value, abs=1e-6), key
    # threshold 0.25: class 0 preds [1,0,1,1] F1 2*2/(4+1)=4/5; class 1 [0,1,1,1] F1 4/5; class 2 [0,1,0,1] F1 2/3
    r = evaluate(ML_PROBS, ML_TARGETS, "multilabel", threshold=0.25)
    assert r["f1_macro"] == pytest.approx((4 / 5 + 4 / 5 + 2 / 3) / 3)
    with pytest.raises(ValueError, match="logits"):
        evaluate(logits * 10, ML_TARGETS, "multilabel")


def test_multilabel_degenerate_classes_excluded_and_counted():
    probs = np.hstack([np.array(ML_PROBS), [[0.1], [0.9], [0.2], [0.3]], [[0.4], [0.6], [0.2], [0.8]]])
    # extra class 3 never positive (AP and AUC undefined), extra class 4 always positive (AUC undefined, AP 1)
    targets = np.hstack([np.array(ML_TARGETS), np.zeros((4, 1)), np.ones((4, 1))])
    with _no_warnings():
        r = evaluate(probs, targets, "multilabel")
    assert r["classes_without_positives"] == 1 and r["classes_without_negatives"] == 1
    assert r["map"] == pytest.approx((1 + 5 / 6 + 1 / 2 + 1) / 4)  # class 3 excluded
    assert r["roc_auc"] == pytest.approx(29 / 36)  # classes 3 and 4 excluded
    assert r["per_class"][3]["ap"] is None and r["per_class"][3]["auc"] is None
    assert r["per_class"][4]["ap"] == pytest.approx(1.0) and r["per_class"][4]["auc"] is None
    assert r["f1_macro"] == pytest.approx((1 + 1 / 2 + 0 + 2 * 2 / (2 + 4)) / 4)  # class 4 at .5: [0,1,0,1] -> 2/3


class _no_warnings:
    def __enter__(self):
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("error")

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)


# ----------------------------------------------------------------------------------------------- errors, d', etc.


@pytest.mark.parametrize("task", ["multiclass", "multilabel"])
def test_empty_and_nan_inputs_raise(task):
    with pytest.raises(ValueError, match="empty"):
        evaluate(np.zeros((0, 3)), np.zeros((0,) if task == "multiclass" else (0, 3)), task)
    bad = np.array(ML_PROBS if task == "multilabel" else MC_PROBS[:4])
    bad[1, 1] = np.nan
    targets = ML_TARGETS if task == "multilabel" else MC_TARGETS[:4]
    with pytest.raises(ValueError, match="NaN"):
        evaluate(bad, targets, task)
    with pytest.raises(ValueError, match="NaN"):
        evaluate(np.array(ML_PROBS), np.array([[np.nan, 0, 0], *ML_TARGETS[1:]], dtype=float), "multilabel")
    with pytest.raises(ValueError, match="task"):
        evaluate(bad, targets, "regression")


def test_d_prime():
    assert d_prime(0.5) == pytest.approx(0.0, abs=1e-12)
    # PANNs Cnn14 (Kong et al. 2020) publishes AUC 0.973 and d' 2.732: d' = sqrt(2) * Phi^-1(AUC) of the mean AUC.
    # sqrt(2) * Phi^-1(0.973) = 2.725; the printed AUC is rounded (Phi(2.732 / sqrt 2) = 0.97331).
    assert d_prime(0.973) == pytest.approx(2.732, abs=0.01)
    assert d_prime(0.97331) == pytest.approx(2.732, abs=1e-3)
    assert d_prime(0.973) == pytest.approx(math.sqrt(2) * NormalDist().inv_cdf(0.973), abs=1e-9)
    assert d_prime(1.0) == math.inf and d_prime(0.25) == pytest.approx(-d_prime(0.75))
    with pytest.raises(ValueError):
        d_prime(1.5)


def test_aggregate_by_hand():
    results = [
        {"accuracy": 0.8, "n_samples": 10, "only_here": 1.0, "per_class": [], "confusion_matrix": [[1]]},
        {"accuracy": 0.6, "n_samples": 10, "per_class": []},
        {"accuracy": 0.7, "n_samples": 10, "per_class": []},
    ]
    agg = aggregate(results)
    assert set(agg) == {"accuracy", "n_samples"}  # only_here is missing from two results; lists are not scalars
    # mean .7; sample std sqrt((.1^2 + .1^2 + 0) / (3 - 1)) = .1
    assert agg["accuracy"]["mean"] == pytest.approx(0.7) and agg["accuracy"]["std"] == pytest.approx(0.1)
    assert agg["accuracy"]["n"] == 3 and agg["accuracy"]["values"] == pytest.approx([0.8, 0.6, 0.7])
    assert agg["n_samples"] == {"mean": 10.0, "std": 0.0, "n": 3, "values": [10.0, 10.0, 10.0]}
    one = aggregate([results[0]])
    assert one["accuracy"]["std"] == 0.0 and one["accuracy"]["n"] == 1
    with pytest.raises(ValueError):
        aggregate([])
    # works on real evaluate() output
    agg = aggregate([evaluate(MC_PROBS, MC_TARGETS), evaluate(MC_PROBS, MC_TARGETS)])
    assert agg["accuracy"]["mean"] == pytest.approx(4 / 6) and agg["accuracy"]["std"] == 0.0


def test_main_metric():
    assert main_metric("multiclass") == "accuracy" and main_metric("multilabel") == "map"
    assert main_metric("multiclass") in evaluate(MC_PROBS, MC_TARGETS)
    assert main_metric("multilabel") in evaluate(ML_PROBS, ML_TARGETS, "multilabel")
    with pytest.raises(ValueError):
        main_metric("regression")
    assert set(metrics.__all__) >= {"evaluate", "aggregate", "d_prime", "main_metric"}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_matches_cpu():
    mc = evaluate(torch.tensor(MC_PROBS, device="cuda"), torch.tensor(MC_TARGETS, device="cuda"))
    ml = evaluate(torch.tensor(ML_PROBS), torch.tensor(ML_TARGETS), "multilabel", device="cuda")
    for key, value in MC_EXPECTED.items():
        assert mc[key] == pytest.approx(value, abs=1e-5), key
    for key, value in ML_EXPECTED.items():
        assert ml[key] == pytest.approx(value, abs=1e-5), key
    assert mc["confusion_matrix"] == [[2, 1, 0], [0, 2, 0], [1, 0, 0]]
