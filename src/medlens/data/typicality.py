"""How much does an input look like the training images? A score for every prediction.

A model answers for any image, including one it was never meant for: a brain MR slice given to
a chest X-ray model, a blank frame, a test pattern. The features (:func:`features`: a thumbnail
and a histogram) of the preprocessed training images - what the model sees - are summarised by
their mean and leading principal components. An input's score is its squared distance from
that summary (Mahalanobis within the components, plus what lies outside them in units of the
training residual) per feature: about 1 for a typical training image. The threshold is the
99th percentile of the validation images' scores, so about 1 in 100 images like those is
flagged. It catches other kinds of image, not every one: see benchmarks/bench_typicality.py
and the README for what it flagged and missed on real data.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from medlens._fs import atomic_path
from medlens.data.shift import thumbnail
from medlens.errors import ArtifactError
from medlens.io import MedicalImage

COMPONENTS = 32
QUANTILE = 0.99
MAX_IMAGES = 2000  # per split: plenty for 32 components of a few hundred values
MIN_IMAGES = 20
FILE = "typicality.safetensors"
HISTOGRAM_BINS = 24
HISTOGRAM_SAMPLE = 4096

Array = NDArray[np.float64]


def features(arrays: NDArray[Any]) -> Array:
    """One row per preprocessed array (N, C, *spatial): its :func:`thumbnail`, then the
    square-root histogram of its z-scored values (24 bins over -3..3, the outer ones taking
    the tails; from up to 4,096 evenly strided values), scaled to the thumbnail's unit SD. The
    histogram keeps what a 24-pixel thumbnail averages away: on PneumoniaMNIST it took the
    sagittal MR slices flagged from 55 % to 100 % (benchmarks/bench_typicality.py)."""
    rows = []
    for array in arrays:
        values = np.asarray(array, dtype=np.float32)
        sample = values.ravel()[:: max(1, values.size // HISTOGRAM_SAMPLE)]
        z = (sample - sample.mean()) / (float(sample.std()) or 1.0)
        bins = np.clip(((z + 3) * HISTOGRAM_BINS / 6).astype(np.int64), 0, HISTOGRAM_BINS - 1)
        shape = 10 * np.sqrt(np.bincount(bins, minlength=HISTOGRAM_BINS) / z.size)
        rows.append(np.concatenate([thumbnail(MedicalImage(values)), shape]))
    return np.stack(rows).astype(np.float64)


@dataclass(frozen=True)
class Typicality:
    """The training images' feature summary and the threshold chosen on validation."""

    mean: Array  # (d,)
    components: Array  # (k, d), orthonormal rows
    variances: Array  # (k,) along each component
    residual: float  # variance per value outside the components
    threshold: float

    @classmethod
    def fit(cls, train: Array, val: Array) -> Typicality:
        """Summarise ``train`` features; the threshold is the 99th percentile of ``val``'s
        scores (of a fifth of ``train`` held out when ``val`` has fewer than 20)."""
        if len(val) < MIN_IMAGES:
            order = np.random.default_rng(0).permutation(len(train))
            held = max(1, len(train) // 5)
            train, val = train[order[held:]], train[order[:held]]
        mean = train.mean(axis=0)
        centred = train - mean
        _, singular, vt = np.linalg.svd(centred, full_matrices=False)
        k = max(1, min(COMPONENTS, len(train) - 1, train.shape[1] - 1))
        variances = np.maximum(singular[:k] ** 2 / max(1, len(train) - 1), 1e-12)
        rest = centred - (centred @ vt[:k].T) @ vt[:k]
        residual = max(float((rest**2).sum(axis=1).mean()) / (train.shape[1] - k), 1e-12)
        fitted = cls(mean, vt[:k], variances, residual, threshold=np.inf)
        threshold = float(np.quantile(fitted.scores(val), QUANTILE))
        return cls(mean, vt[:k], variances, residual, threshold)

    def scores(self, rows: Array) -> Array:
        """Squared distance from the training summary per feature (~1: typical)."""
        centred = np.asarray(rows, dtype=np.float64) - self.mean
        inside = centred @ self.components.T
        outside = centred - inside @ self.components
        total = (inside**2 / self.variances).sum(axis=1) + (outside**2).sum(axis=1) / self.residual
        result: Array = total / self.mean.size
        return result

    def describe(self, arrays: NDArray[Any]) -> list[dict[str, Any]]:
        """``distance_from_training`` and ``unlike_training`` of each preprocessed array."""
        return [
            {
                "distance_from_training": round(float(s), 3),
                "unlike_training": bool(s > self.threshold),
            }
            for s in self.scores(features(arrays))
        ]

    def save(self, path: Path) -> Path:
        """A safetensors file (no pickle), written atomically."""
        arrays = {
            "mean": self.mean,
            "components": np.ascontiguousarray(self.components),
            "variances": self.variances,
            "scalars": np.asarray([self.residual, self.threshold]),
        }
        with atomic_path(path) as tmp:
            save_file(arrays, str(tmp), metadata={"format": "medlens-typicality"})
        return path

    @classmethod
    def load(cls, path: Path) -> Typicality:
        try:
            t = {k: v.astype(np.float64) for k, v in load_file(str(path)).items()}
            residual, threshold = (float(x) for x in t["scalars"])
            return cls(t["mean"], t["components"], t["variances"], residual, threshold)
        except (SafetensorError, OSError, KeyError, ValueError) as err:
            raise ArtifactError(
                f"unreadable typicality file ({err})", path=path, fix="re-train the model"
            ) from None
