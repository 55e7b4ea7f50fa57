"""How much does an input look like the training images? A score for every prediction.

A model answers for any image, including one it was never meant for: a brain MR slice given to
a chest X-ray model, a fundus photograph, a blank frame. Two views of the training images are
summarised, each by its mean and leading principal components (:class:`Summary`):

- pixels: :func:`features` of the preprocessed image (a thumbnail and a histogram), what the
  model is shown;
- embedding: the model's own pooled features before its head (every ensemble member's), what
  the model makes of it. Artifacts trained before it have the pixel summary only.

Each view's score is a squared distance from its summary (Mahalanobis within the components,
plus what lies outside them in units of the training residual) per feature, in units of its
99th percentile on the validation images, so both views flag validation alike.
``distance_from_training`` is the larger of the two, in units of the 99th percentile of that on
validation: above 1 is ``unlike_training``, about 1 in 100 validation images is, and a typical
image scores about 0.4. The embedding, averaged over the test-time views as the logits are,
catches kinds the pixels miss (grey fundus photographs given to a PneumoniaMNIST model), but
neither view is proof: see benchmarks/bench_typicality.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

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
class Summary:
    """Rows of one view summarised by their mean and leading principal components."""

    mean: Array  # (d,)
    components: Array  # (k, d), orthonormal rows
    variances: Array  # (k,) along each component
    residual: float  # variance per value outside the components

    @classmethod
    def fit(cls, rows: Array) -> Summary:
        mean = rows.mean(axis=0)
        centred = rows - mean
        _, singular, vt = np.linalg.svd(centred, full_matrices=False)
        k = max(1, min(COMPONENTS, len(rows) - 1, rows.shape[1] - 1))
        variances = np.maximum(singular[:k] ** 2 / max(1, len(rows) - 1), 1e-12)
        rest = centred - (centred @ vt[:k].T) @ vt[:k]
        residual = max(float((rest**2).sum(axis=1).mean()) / (rows.shape[1] - k), 1e-12)
        return cls(mean, vt[:k], variances, residual)

    def scores(self, rows: Array) -> Array:
        """Squared distance from the summary per feature (~1 for a training row)."""
        centred = np.asarray(rows, dtype=np.float64) - self.mean
        inside = centred @ self.components.T
        outside = centred - inside @ self.components
        total = (inside**2 / self.variances).sum(axis=1) + (outside**2).sum(axis=1) / self.residual
        result: Array = total / self.mean.size
        return result

    def arrays(self, prefix: str) -> dict[str, NDArray[Any]]:
        return {
            f"{prefix}.mean": self.mean,
            f"{prefix}.components": np.ascontiguousarray(self.components),
            f"{prefix}.variances": self.variances,
            f"{prefix}.residual": np.asarray([self.residual]),
        }

    @classmethod
    def from_arrays(cls, t: dict[str, Array], prefix: str) -> Summary:
        return cls(
            t[f"{prefix}.mean"],
            t[f"{prefix}.components"],
            t[f"{prefix}.variances"],
            float(t[f"{prefix}.residual"][0]),
        )


@dataclass(frozen=True)
class Typicality:
    """The training images' summaries and each view's scale, chosen on validation: a view's
    score divided by its scale is 1 at the threshold."""

    pixels: Summary
    embedding: Summary | None
    scales: tuple[float, float]  # (pixels, embedding); the embedding's is 1 without one

    threshold: ClassVar[float] = 1.0  # distances are in units of it

    @classmethod
    def fit(
        cls,
        train: Array,
        val: Array,
        train_embedding: Array | None = None,
        val_embedding: Array | None = None,
    ) -> Typicality:
        """Summarise ``train``'s pixel features and, when given, its embeddings. Each view's
        score is put in units of its 99th percentile on ``val`` (on a fifth of ``train`` held
        out when ``val`` has fewer than 20 rows), so that each flags validation alike, then
        both in units of the 99th percentile of their larger one."""
        if len(val) < MIN_IMAGES:
            order = np.random.default_rng(0).permutation(len(train))
            held, kept = order[: max(1, len(train) // 5)], order[max(1, len(train) // 5) :]
            train, val = train[kept], train[held]
            if train_embedding is not None:
                train_embedding, val_embedding = train_embedding[kept], train_embedding[held]
        pixels = Summary.fit(train)
        embedding = None if train_embedding is None else Summary.fit(train_embedding)
        raw = [pixels.scores(val)]
        if embedding is not None and val_embedding is not None:
            raw.append(embedding.scores(val_embedding))
        tails = [max(float(np.quantile(r, QUANTILE)), 1e-12) for r in raw]
        larger = np.max([r / t for r, t in zip(raw, tails, strict=True)], axis=0)
        both = max(float(np.quantile(larger, QUANTILE)), 1e-12)
        scales = (tails[0] * both, tails[1] * both if len(tails) > 1 else 1.0)
        return cls(pixels, embedding, scales)

    def pixel_distances(self, arrays: NDArray[Any]) -> Array:
        """The pixel view's part of :meth:`distances` for preprocessed arrays (N, C, *spatial)."""
        result: Array = self.pixels.scores(features(arrays)) / self.scales[0]
        return result

    def distances(self, arrays: NDArray[Any], embeddings: Array | None = None) -> Array:
        """``distance_from_training`` of preprocessed arrays; ``embeddings`` (N, D): the
        model's pooled features of the same inputs (the pixel view alone without them)."""
        return self.combine(self.pixel_distances(arrays), embeddings)

    def combine(self, pixel_distances: Array, embeddings: Array | None) -> Array:
        """The larger of the pixel view's distances and the embedding's."""
        if self.embedding is None or embeddings is None:
            return pixel_distances
        scaled = self.embedding.scores(embeddings) / self.scales[1]
        result: Array = np.maximum(pixel_distances, scaled)
        return result

    def unlike(self, distances: Array) -> list[dict[str, Any]]:
        """``distance_from_training`` and ``unlike_training`` (above 1) for each distance."""
        return [
            {
                "distance_from_training": round(float(d), 3),
                "unlike_training": bool(d > self.threshold),
            }
            for d in distances
        ]

    def describe(
        self, arrays: NDArray[Any], embeddings: Array | None = None
    ) -> list[dict[str, Any]]:
        """:meth:`unlike` of :meth:`distances`."""
        return self.unlike(self.distances(arrays, embeddings))

    def save(self, path: Path) -> Path:
        """A safetensors file (no pickle), written atomically."""
        arrays = self.pixels.arrays("pixels")
        if self.embedding is not None:
            arrays |= self.embedding.arrays("embedding")
        arrays["scales"] = np.asarray(self.scales)
        with atomic_path(path) as tmp:
            save_file(arrays, str(tmp), metadata={"format": "medlens-typicality"})
        return path

    @classmethod
    def load(cls, path: Path) -> Typicality:
        try:
            t = {k: v.astype(np.float64) for k, v in load_file(str(path)).items()}
            if "scalars" in t:  # the first format: pixels only, a threshold on the raw score
                residual, threshold = (float(x) for x in t["scalars"])
                pixels = Summary(t["mean"], t["components"], t["variances"], residual)
                return cls(pixels, None, (threshold, 1.0))
            embedding = Summary.from_arrays(t, "embedding") if "embedding.mean" in t else None
            low, high = (float(x) for x in t["scales"])
            return cls(Summary.from_arrays(t, "pixels"), embedding, (low, high))
        except (SafetensorError, OSError, KeyError, ValueError) as err:
            raise ArtifactError(
                f"unreadable typicality file ({err})", path=path, fix="re-train the model"
            ) from None
