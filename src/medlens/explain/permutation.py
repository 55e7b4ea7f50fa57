"""Permutation importance: how much the AUC drops when one input's information is shuffled
across the dataset (Breiman 2001), for image regions and for tabular/clinical features.

A region is one cell of a regular grid; permuting it swaps that cell between images, so every
image stays realistic elsewhere and the drop measures what the model takes from the cell over
the whole dataset (a global, not a per-image, explanation). Repeats give the spread.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from medlens.errors import ConfigError
from medlens.metrics.classification import roc_auc

Predict = Callable[[NDArray[Any]], NDArray[np.float64]]


@dataclass(frozen=True)
class Importance:
    """AUC drop of one region or feature: mean and standard deviation over repeats."""

    name: str
    drop: float
    spread: float
    drops: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "auc_drop": round(self.drop, 5),
            "std": round(self.spread, 5),
            "repeats": [round(d, 5) for d in self.drops],
        }


def macro_auc(targets: NDArray[Any], probs: NDArray[np.float64]) -> float:
    """Binary: AUC of the second class; multi-class: one-vs-rest macro; multi-label: per-label macro."""
    targets = np.asarray(targets)
    if targets.ndim == 2:
        values = [roc_auc(targets[:, k], probs[:, k]) for k in range(targets.shape[1])]
    elif probs.shape[1] == 2:
        values = [roc_auc(targets == 1, probs[:, 1])]
    else:
        values = [roc_auc(targets == k, probs[:, k]) for k in range(probs.shape[1])]
    finite = [v for v in values if np.isfinite(v)]
    if not finite:
        raise ConfigError("permutation importance needs both outcomes present in the targets")
    return float(np.mean(finite))


def _importance(name: str, baseline: float, scores: Sequence[float]) -> Importance:
    drops = tuple(baseline - s for s in scores)
    return Importance(name, float(np.mean(drops)), float(np.std(drops)), drops)


def grid_regions(spatial: Sequence[int], grid: int) -> list[tuple[str, tuple[slice, ...]]]:
    """``grid`` cells per axis, named by their (row, column[, slice]) position."""
    if grid < 1 or grid > min(spatial):
        raise ConfigError(f"grid must be between 1 and {min(spatial)} cells per axis, got {grid}")
    edges = [np.linspace(0, s, grid + 1).round().astype(int) for s in spatial]
    regions = []
    for cell in itertools.product(range(grid), repeat=len(spatial)):
        window = tuple(slice(int(e[c]), int(e[c + 1])) for e, c in zip(edges, cell, strict=True))
        regions.append(("cell " + ",".join(map(str, cell)), window))
    return regions


def region_importance(
    predict: Predict,
    images: NDArray[np.float32],
    targets: NDArray[Any],
    *,
    grid: int = 4,
    repeats: int = 5,
    seed: int = 0,
) -> tuple[float, list[Importance]]:
    """The baseline AUC of ``predict`` on ``images`` (N, C, *spatial) and each grid cell's drop."""
    if len(images) < 4:
        raise ConfigError("permutation importance needs at least 4 images")
    rng = np.random.default_rng(seed)
    baseline = macro_auc(targets, predict(images))
    found = []
    for name, window in grid_regions(images.shape[2:], grid):
        scores = []
        for _ in range(repeats):
            region: tuple[Any, ...] = (slice(None), slice(None), *window)
            shuffled = images.copy()
            shuffled[region] = images[rng.permutation(len(images))][region]
            scores.append(macro_auc(targets, predict(shuffled)))
        found.append(_importance(name, baseline, scores))
    return baseline, found


def feature_importance(
    predict: Predict,
    features: NDArray[Any],
    targets: NDArray[Any],
    names: Sequence[str],
    *,
    repeats: int = 5,
    seed: int = 0,
) -> tuple[float, list[Importance]]:
    """The same for the columns of a tabular input ``features`` (N, F) named ``names``."""
    if features.ndim != 2 or features.shape[1] != len(names):
        raise ConfigError(f"features must be (N, {len(names)}) for {len(names)} names")
    rng = np.random.default_rng(seed)
    baseline = macro_auc(targets, predict(features))
    found = []
    for column, name in enumerate(names):
        scores = []
        for _ in range(repeats):
            shuffled = features.copy()
            shuffled[:, column] = features[rng.permutation(len(features)), column]
            scores.append(macro_auc(targets, predict(shuffled)))
        found.append(_importance(name, baseline, scores))
    return baseline, found


def importance_map(
    spatial: Sequence[int], grid: int, importances: Sequence[Importance]
) -> NDArray[np.float32]:
    """The region drops painted back onto the image grid (for an overlay)."""
    out = np.zeros(tuple(spatial), np.float32)
    for (_, window), found in zip(grid_regions(spatial, grid), importances, strict=True):
        out[window] = found.drop
    return out
