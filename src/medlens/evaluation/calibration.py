"""Operating thresholds and temperature scaling, both fitted on validation only."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import minimize_scalar
from scipy.special import ndtr

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


#: bootstrap resamples behind the Youden cut (cutpointr's ``maximize_boot_metric`` uses 50)
YOUDEN_RESAMPLES = 200


def choose_threshold(
    y: NDArray[Any], score: NDArray[Any], *, sensitivity: float | None = None
) -> float:
    """Youden's J (max sensitivity + specificity - 1), or the highest threshold reaching a
    target ``sensitivity``. Decisions are ``score >= threshold``.

    Scores are probabilities. The Youden cut maximises J between kernel-smoothed distributions
    of each class's log-odds (``kernel_youden``): on a small validation split the single best
    cut sits on one case's score and jumps with it (AdrenalMNIST3D's 98 volumes), and on a
    saturated one it lands wherever the few cases in the gap fall. Chosen over the mean cut of
    bootstrap resamples on second sites held out of training (benchmarks/README.md)."""
    if len(np.unique(y)) < 2:
        raise ConfigError("the validation split has one class only; cannot choose a threshold")
    if sensitivity is not None:
        if not 0 < sensitivity <= 1:
            raise ConfigError(f"target sensitivity must be in (0, 1], got {sensitivity}")
        _, tpr, thresholds = roc_curve(y, score)
        reach = np.flatnonzero(tpr >= sensitivity)
        return float(min(1.0, thresholds[reach[0]]))
    return kernel_youden(y, score)


def _cuts(y: NDArray[Any], score: NDArray[Any]) -> tuple[NDArray[Any], ...]:
    """Every distinct cut - halfway between adjacent scores, and beyond both ends - with the
    true and false positives of ``score >= cut`` and the class sizes."""
    score = np.asarray(score, dtype=np.float64)
    s = np.unique(score)
    cuts = np.concatenate([[s[0] - 1e-6], (s[:-1] + s[1:]) / 2, [s[-1] + 1e-6]])
    positive = np.asarray(y).astype(bool)
    pos, neg = np.sort(score[positive]), np.sort(score[~positive])
    tp = len(pos) - np.searchsorted(pos, cuts, side="left")
    fp = len(neg) - np.searchsorted(neg, cuts, side="left")
    return cuts, tp, fp, np.array(len(pos)), np.array(len(neg))


def _middle_best(cuts: NDArray[Any], value: NDArray[Any]) -> float:
    """The cut with the highest ``value``; the middle one when several tie."""
    best = np.flatnonzero(value >= value.max() - 1e-12)
    return float(cuts[best[len(best) // 2]])


def youden_cut(y: NDArray[Any], score: NDArray[Any]) -> float:
    """The single cut maximising Youden's J on ``(y, score)``, halfway between two scores."""
    cuts, tp, fp, p, n = _cuts(y, score)
    return _middle_best(cuts, tp / p - fp / n)


def bootstrap_youden(
    y: NDArray[Any], score: NDArray[Any], *, resamples: int = YOUDEN_RESAMPLES, seed: int = 0
) -> float:
    """The mean Youden cut over stratified bootstrap resamples (both classes in each)."""
    y, score = np.asarray(y), np.asarray(score, dtype=np.float64)
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(y == k) for k in (0, 1)]
    found = []
    for _ in range(resamples):
        idx = np.concatenate([rng.choice(g, size=len(g)) for g in groups])
        found.append(youden_cut(y[idx], score[idx]))
    return float(np.clip(np.mean(found), 0.0, 1.0))


def kernel_youden(y: NDArray[Any], score: NDArray[Any], *, points: int = 4001) -> float:
    """Youden's cut between Gaussian-kernel estimates of each class's log-odds distribution
    (Fluss, Faraggi & Reiser 2005, "kernel method"; Silverman's bandwidth per class)."""
    p = np.clip(np.asarray(score, dtype=np.float64), 1e-12, 1 - 1e-12)
    z, y = np.log(p / (1 - p)), np.asarray(y)
    grid = np.linspace(z.min(), z.max(), points)
    j = _kernel_cdf(grid, z[y == 0]) - _kernel_cdf(grid, z[y == 1])
    return float(1 / (1 + np.exp(-grid[np.argmax(j)])))


def _kernel_cdf(grid: NDArray[np.float64], v: NDArray[np.float64]) -> NDArray[np.float64]:
    """The Gaussian-kernel CDF of ``v`` on ``grid``, in blocks of ``v`` to bound memory."""
    q75, q25 = np.percentile(v, [75, 25])
    sd = float(v.std(ddof=1)) if len(v) > 1 else 0.0
    spread = min(sd, float(q75 - q25) / 1.349) or sd
    h = max(0.9 * spread * len(v) ** -0.2, 1e-3)
    total = np.zeros_like(grid)
    for start in range(0, len(v), 1024):
        block = v[start : start + 1024]
        total += ndtr((grid[:, None] - block[None, :]) / h).sum(axis=1)
    return total / len(v)


def max_accuracy_threshold(y: NDArray[Any], score: NDArray[Any]) -> float:
    """The threshold with the highest accuracy on ``(y, score)``: halfway between two adjacent
    scores (a margin on both sides), the middle one when several cuts tie."""
    if len(np.unique(y)) < 2:
        raise ConfigError("the validation split has one class only; cannot choose a threshold")
    cuts, tp, fp, _, n = _cuts(y, score)
    return float(np.clip(_middle_best(cuts, tp + (n - fp)), 0.0, 1.0))
