"""Percentile bootstrap confidence intervals, resampling patients (not images) when given."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray


def bootstrap_ci(
    metric_fn: Callable[[NDArray[np.int64]], dict[str, Any]],
    n: int,
    *,
    groups: Sequence[str] | None = None,
    resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, list[float]]:
    """``{metric: [low, high]}`` for the scalar metrics ``metric_fn(indices)`` returns.

    With ``groups`` (patient ids) whole patients are resampled, so several images of one
    patient do not make the interval look narrower than the evidence allows. One patient (or
    none) gives no interval at all: every resample would be the same images, a zero-width
    interval that claims certainty.
    """
    rng = np.random.default_rng(seed)
    if groups is not None:
        members: dict[str, list[int]] = {}
        for i, g in enumerate(groups):
            members.setdefault(g, []).append(i)
        clusters = [np.asarray(v) for v in members.values()]
        if len(clusters) < 2:
            return {}
    samples: dict[str, list[float]] = {}
    for _ in range(resamples):
        if groups is not None:
            picked = rng.integers(0, len(clusters), len(clusters))
            idx = np.concatenate([clusters[j] for j in picked])
        else:
            idx = rng.integers(0, n, n)
        for key, value in metric_fn(idx).items():
            if isinstance(value, int | float):
                samples.setdefault(key, []).append(float(value))
    alpha = (1 - level) / 2
    out = {}
    for key, values in samples.items():
        finite = [v for v in values if not math.isnan(v)]
        if finite:
            lo, hi = np.quantile(finite, [alpha, 1 - alpha])
            out[key] = [round(float(lo), 4), round(float(hi), 4)]
    return out
