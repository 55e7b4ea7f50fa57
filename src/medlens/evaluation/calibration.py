"""Operating thresholds and temperature scaling, both fitted on validation only."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import minimize_scalar

from medlens.errors import ConfigError
from medlens.metrics import roc_curve
from medlens.models.forward import to_probabilities


def _nll(logits: NDArray[Any], y: NDArray[Any], multilabel: bool, temperature: float) -> float:
    p = to_probabilities(logits, multilabel=multilabel, temperature=temperature)
    p = np.clip(p, 1e-12, 1 - 1e-12)
    if multilabel:
        return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
    return float(-np.mean(np.log(p[np.arange(len(y)), y])))


def fit_temperature(logits: NDArray[Any], y: NDArray[Any], *, multilabel: bool) -> float:
    """The temperature T > 0 minimising the validation NLL of softmax/sigmoid(logits / T)."""
    result = minimize_scalar(
        lambda log_t: _nll(logits, y, multilabel, float(np.exp(log_t))),
        bounds=(-3.0, 3.0),
        method="bounded",
    )
    return float(np.exp(result.x))


def choose_threshold(
    y: NDArray[Any], score: NDArray[Any], *, sensitivity: float | None = None
) -> float:
    """Youden's J (max sensitivity + specificity - 1), or the highest threshold reaching a
    target ``sensitivity``. Decisions are ``score >= threshold``."""
    fpr, tpr, thresholds = roc_curve(y, score)
    if len(np.unique(y)) < 2:
        raise ConfigError("the validation split has one class only; cannot choose a threshold")
    if sensitivity is not None:
        if not 0 < sensitivity <= 1:
            raise ConfigError(f"target sensitivity must be in (0, 1], got {sensitivity}")
        reach = np.flatnonzero(tpr >= sensitivity)
        return float(min(1.0, thresholds[reach[0]]))
    best = int(np.argmax(tpr - fpr))
    return float(min(1.0, thresholds[best]))


def max_accuracy_threshold(y: NDArray[Any], score: NDArray[Any]) -> float:
    """The threshold with the highest accuracy on ``(y, score)``: halfway between two adjacent
    scores (a margin on both sides), the middle one when several cuts tie."""
    if len(np.unique(y)) < 2:
        raise ConfigError("the validation split has one class only; cannot choose a threshold")
    s = np.unique(np.asarray(score, dtype=np.float64))
    cuts = np.concatenate([[s[0] - 1e-6], (s[:-1] + s[1:]) / 2, [s[-1] + 1e-6]])
    positive = np.asarray(y).astype(bool)
    correct = [np.sum((score >= c) == positive) for c in cuts]
    best = np.flatnonzero(np.asarray(correct) == max(correct))
    return float(np.clip(cuts[best[len(best) // 2]], 0.0, 1.0))
