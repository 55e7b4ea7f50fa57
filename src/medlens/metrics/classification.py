"""Classification metrics in plain numpy (fast enough to bootstrap), checked against scikit-learn.

Binary scores are the positive-class probability; multi-class scores are (N, K) probabilities
(one-vs-rest per class, argmax decisions); multi-label scores are (N, K) independent probabilities.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.stats import rankdata

Array = NDArray[Any]


def roc_auc(y: Array, score: Array) -> float:
    """Area under the ROC curve (Mann-Whitney U with mid-ranks for ties); NaN with one class."""
    y = np.asarray(y).astype(bool)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(score)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def average_precision(y: Array, score: Array) -> float:
    """Area under the precision-recall curve as scikit-learn's step-wise average precision."""
    y = np.asarray(y).astype(bool)
    n_pos = int(y.sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-np.asarray(score), kind="mergesort")
    s, t = np.asarray(score)[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]  # last index of each distinct score
    tp = np.cumsum(t)[last]
    precision = tp / (last + 1)
    recall = tp / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def _safe(num: float, den: float) -> float:
    return float(num / den) if den else float("nan")


def binary_counts(y: Array, decision: Array) -> dict[str, int]:
    y, d = np.asarray(y).astype(bool), np.asarray(decision).astype(bool)
    return {
        "tp": int(np.sum(y & d)),
        "fp": int(np.sum(~y & d)),
        "tn": int(np.sum(~y & ~d)),
        "fn": int(np.sum(y & ~d)),
    }


def binary_metrics(y: Array, score: Array, threshold: float) -> dict[str, float]:
    """Threshold metrics (decision = score >= threshold) and the ranking metrics AUC, PR-AUC."""
    c = binary_counts(y, np.asarray(score) >= threshold)
    tp, fp, tn, fn = c["tp"], c["fp"], c["tn"], c["fn"]
    sens, spec = _safe(tp, tp + fn), _safe(tn, tn + fp)
    ppv = _safe(tp, tp + fp)
    return {
        "auc": roc_auc(y, score),
        "pr_auc": average_precision(y, score),
        "accuracy": _safe(tp + tn, tp + tn + fp + fn),
        "balanced_accuracy": (sens + spec) / 2,
        "sensitivity": sens,
        "specificity": spec,
        "ppv": ppv,
        "npv": _safe(tn, tn + fn),
        "f1": _safe(2 * tp, 2 * tp + fp + fn),
        "kappa": cohen_kappa(
            np.asarray(y).astype(int), (np.asarray(score) >= threshold).astype(int), 2
        ),
    }


def confusion_matrix(y: Array, pred: Array, k: int) -> NDArray[np.int64]:
    """Rows are true classes, columns predicted classes."""
    return np.bincount(np.asarray(y) * k + np.asarray(pred), minlength=k * k).reshape(k, k)


def cohen_kappa(y: Array, pred: Array, k: int, *, weights: str | None = None) -> float:
    """Cohen's kappa; ``weights="quadratic"`` for ordinal grades."""
    cm = confusion_matrix(y, pred, k).astype(np.float64)
    n = cm.sum()
    if n == 0:
        return float("nan")
    expected = np.outer(cm.sum(axis=1), cm.sum(axis=0)) / n
    idx = np.arange(k)
    if weights == "quadratic":
        w = (idx[:, None] - idx[None, :]) ** 2 / max(1, (k - 1) ** 2)
    else:
        w = (idx[:, None] != idx[None, :]).astype(np.float64)
    den = float((w * expected).sum())
    return 1.0 - float((w * cm).sum()) / den if den else float("nan")


def multiclass_metrics(y: Array, probs: Array, *, ordinal: bool = False) -> dict[str, Any]:
    """Macro averages of one-vs-rest metrics, accuracy, kappa; per-class values under ``per_class``."""
    k = probs.shape[1]
    pred = probs.argmax(axis=1)
    per_class = []
    for c in range(k):
        m = binary_metrics(y == c, probs[:, c], threshold=0.5)
        # one-vs-rest decisions come from the argmax, not from a 0.5 threshold
        counts = binary_counts(y == c, pred == c)
        tp, fp, tn, fn = counts["tp"], counts["fp"], counts["tn"], counts["fn"]
        m.update(
            sensitivity=_safe(tp, tp + fn),
            specificity=_safe(tn, tn + fp),
            ppv=_safe(tp, tp + fp),
            npv=_safe(tn, tn + fn),
            f1=_safe(2 * tp, 2 * tp + fp + fn),
        )
        per_class.append(m)
    keys = ["auc", "pr_auc", "sensitivity", "specificity", "ppv", "npv", "f1"]
    out: dict[str, Any] = {key: float(np.nanmean([m[key] for m in per_class])) for key in keys}
    out["accuracy"] = float(np.mean(pred == y))
    out["balanced_accuracy"] = out["sensitivity"]
    out["kappa"] = cohen_kappa(y, pred, k, weights="quadratic" if ordinal else None)
    out["per_class"] = per_class
    return out


def multilabel_metrics(y: Array, probs: Array, thresholds: Array) -> dict[str, Any]:
    """Per-label binary metrics at per-label thresholds and their macro averages."""
    per_class = [
        binary_metrics(y[:, c], probs[:, c], float(thresholds[c])) for c in range(y.shape[1])
    ]
    keys = [k for k in per_class[0] if k != "kappa"]
    out: dict[str, Any] = {key: float(np.nanmean([m[key] for m in per_class])) for key in keys}
    out["per_class"] = per_class
    return out


def expected_calibration_error(
    correct_or_y: Array, confidence: Array, bins: int = 15
) -> tuple[float, list[dict[str, float]]]:
    """ECE over equal-width confidence bins, and the reliability-diagram bins.

    For binary tasks pass the labels and the positive-class probability; for multi-class the
    correctness of the argmax and its probability.
    """
    conf = np.asarray(confidence, np.float64)
    hit = np.asarray(correct_or_y, np.float64)
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1]), 0, bins - 1)
    ece, table = 0.0, []
    for b in range(bins):
        sel = which == b
        if not sel.any():
            continue
        gap = abs(hit[sel].mean() - conf[sel].mean())
        ece += sel.mean() * gap
        table.append(
            {
                "low": float(edges[b]),
                "high": float(edges[b + 1]),
                "confidence": float(conf[sel].mean()),
                "observed": float(hit[sel].mean()),
                "count": int(sel.sum()),
            }
        )
    return float(ece), table


def roc_curve(y: Array, score: Array) -> tuple[Array, Array, Array]:
    """(false-positive rate, true-positive rate, thresholds), highest threshold first."""
    y = np.asarray(y).astype(bool)
    order = np.argsort(-np.asarray(score), kind="mergesort")
    s, t = np.asarray(score)[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]
    tps, fps = np.cumsum(t)[last], np.cumsum(~t)[last]
    tpr = np.r_[0.0, tps / max(1, t.sum())]
    fpr = np.r_[0.0, fps / max(1, (~t).sum())]
    return fpr, tpr, np.r_[np.inf, s[last]]


def pr_curve(y: Array, score: Array) -> tuple[Array, Array]:
    """(recall, precision) at every distinct threshold."""
    y = np.asarray(y).astype(bool)
    order = np.argsort(-np.asarray(score), kind="mergesort")
    s, t = np.asarray(score)[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]
    tp = np.cumsum(t)[last]
    return tp / max(1, t.sum()), tp / (last + 1)
