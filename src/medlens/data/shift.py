"""Split shift: can a linear classifier tell a split's images from training's, class by class?

An operating point chosen on validation carries over to test only if the test images look like
the ones it was chosen on. For every class (so that a different prevalence is not mistaken for
different images), the images of two splits are shrunk to thumbnails and a cross-validated
linear classifier tries to tell which split each came from; its AUC is about 0.5 when the
splits are alike. On PneumoniaMNIST (`medlens data check`) training and validation images cannot
be told apart (AUC 0.48-0.53), the pneumonia test images barely (0.61), but the
*normal* test images can (0.81): they look different, as does the specificity models reach on
them.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from medlens.io import MedicalImage
from medlens.transforms import Resize

#: thumbnail side: 24^2 in 2D (576 values), 8^3 in 3D (512)
THUMBNAIL_SIDE = {2: 24, 3: 8}
MIN_PER_SIDE = 20  # fewer images per split and class give a CI too wide to read
MAX_PER_SIDE = 1000  # enough for a stable AUC; keeps the check to a second or two
#: a shift is reported when the 95 % CI's lower end reaches this AUC
FLAG_AUC = 0.6
RIDGE_ALPHA = 1000.0

Thumbnail = NDArray[np.float32]
#: a patient id and the thumbnail of one of their images
Sample = tuple[str, Thumbnail]


@dataclass(frozen=True)
class SplitShift:
    """How well ``split``'s images of ``label`` are told apart from the reference split's."""

    split: str
    reference: str
    label: str
    n: int  # images of the split compared
    n_reference: int
    patients: int  # the patients those images come from
    reference_patients: int
    auc: float
    ci: tuple[float, float]

    @property
    def flagged(self) -> bool:
        return self.ci[0] >= FLAG_AUC

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ci": list(self.ci), "flagged": self.flagged}

    @classmethod
    def from_dict(cls, found: dict[str, Any]) -> SplitShift:
        fields = {k: v for k, v in found.items() if k != "flagged"}
        return cls(**{**fields, "ci": tuple(found["ci"])})

    def describe(self) -> str:
        counts = f"{self.n} and {self.n_reference} images"
        if (self.patients, self.reference_patients) != (self.n, self.n_reference):
            counts += f" of {self.patients} and {self.reference_patients} patients"
        return (
            f"{self.split} images of class {self.label!r} are told apart from {self.reference} "
            f"images by a linear classifier (AUC {self.auc:.2f}, 95 % CI {self.ci[0]:.2f}-"
            f"{self.ci[1]:.2f}; {counts}): they differ, and an operating point chosen on "
            f"validation may not carry over to the {self.split} images"
        )


def thumbnail(image: MedicalImage) -> Thumbnail:
    """A grey thumbnail with zero mean and unit SD, then three colour-balance values.

    The per-image normalisation leaves out scanner gain and bit depth, as the plan's z-score
    does; the colour values (each channel's mean less the grey mean, in grey SDs; zero for grey
    images) keep a stain or colour-cast difference visible.
    """
    side = THUMBNAIL_SIDE[image.spatial_dims]
    array = _block_mean(image.array, min(image.spatial_shape) // (2 * side))
    colour = np.zeros(3, dtype=np.float32)
    grey = array
    if array.shape[0] > 1:
        grey = array.mean(axis=0, keepdims=True, dtype=np.float32)
        means = array.reshape(array.shape[0], -1).mean(axis=1, dtype=np.float64)[:3]
        colour[: len(means)] = (means - grey.mean()) / (float(grey.std()) or 1.0)
    grid = (side,) * image.spatial_dims
    small = Resize(grid)(MedicalImage(grey)).array.astype(np.float32).ravel()
    small = (small - small.mean()) / (float(small.std()) or 1.0)
    return np.concatenate([small, colour]).astype(np.float32)


def _block_mean(array: NDArray[Any], factor: int) -> NDArray[Any]:
    """``array`` (C, *spatial) averaged over blocks of ``factor`` voxels a side (the edge
    voxels beyond a whole block dropped): a cheap first reduction of a large image before the
    anti-aliased resize (a 224^2 RGB input: 2.9 ms for the thumbnail without it)."""
    if factor < 2:
        return array
    spatial = array.shape[1:]
    cropped = array[(slice(None), *(slice(0, n - n % factor) for n in spatial))]
    blocks = [array.shape[0]]
    for n in cropped.shape[1:]:
        blocks += [n // factor, factor]
    axes = tuple(range(2, 2 * len(spatial) + 1, 2))
    reduced: NDArray[Any] = cropped.reshape(blocks).mean(axis=axes, dtype=np.float32)
    return reduced


def pick(keys: Sequence[tuple[str, str]], seed: int = 0) -> set[int]:
    """Indices of up to :data:`MAX_PER_SIDE` rows of each (split, label) in ``keys``, drawn
    reproducibly; rows of no split ("") are never picked."""
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, key in enumerate(keys):
        if key[0]:
            groups[key].append(i)
    rng = np.random.default_rng(seed)
    chosen: set[int] = set()
    for indices in groups.values():
        take = min(len(indices), MAX_PER_SIDE)
        chosen.update(int(i) for i in rng.choice(np.asarray(indices), take, replace=False))
    return chosen


def shifts_of(
    keys: Sequence[tuple[str, str]], patients: Sequence[str], image: Callable[[int], MedicalImage]
) -> list[SplitShift]:
    """:func:`split_shifts` of rows whose (split, label) is ``keys[i]`` and patient
    ``patients[i]``; ``image(i)`` is read only for the rows :func:`pick` draws."""
    samples: dict[tuple[str, str], list[Sample]] = defaultdict(list)
    for i in sorted(pick(keys)):
        samples[keys[i]].append((patients[i], thumbnail(image(i))))
    return split_shifts(samples)


def split_shifts(
    samples: Mapping[tuple[str, str], Sequence[Sample]], reference: str = "train"
) -> list[SplitShift]:
    """Compare every other split with ``reference`` for each class both hold enough images of.

    ``samples`` maps (split, label) to (patient, :func:`thumbnail`) pairs. The classifier is
    cross-validated by patient, so that it cannot score by recognising a patient whose other
    images it was fitted on, and the CI counts patients, not images (a patient's slices are
    not independent evidence); a side with fewer than 2 patients is not compared. Thumbnails of
    another dimensionality than the most common one (a few 3D images among 2D ones) are left
    out.
    """
    sizes = [t.size for group in samples.values() for _, t in group]
    if not sizes:
        return []
    common = max(set(sizes), key=sizes.count)
    found = []
    for (split, label), group in sorted(samples.items()):
        if split == reference or (reference, label) not in samples:
            continue
        ours = [(p, t) for p, t in group if t.size == common]
        theirs = [(p, t) for p, t in samples[reference, label] if t.size == common]
        patients = len({p for p, _ in ours}), len({p for p, _ in theirs})
        if min(len(ours), len(theirs)) < MIN_PER_SIDE or min(patients) < 2:
            continue
        auc = _separability(theirs, ours)
        ci = _hanley_mcneil(auc, patients[0], patients[1])
        found.append(
            SplitShift(split, reference, label, len(ours), len(theirs), *patients, auc, ci)
        )
    return found


def _patient_folds(patients: Sequence[str], folds: int, rng: np.random.Generator) -> NDArray[Any]:
    """Fold of each sample: a patient's samples share one, patients dealt out in random order."""
    names = sorted(set(patients))
    order = {name: k % folds for k, name in enumerate(rng.permutation(names))}
    return np.asarray([order[p] for p in patients], dtype=np.int64)


def _separability(a: Sequence[Sample], b: Sequence[Sample], folds: int = 5) -> float:
    """Out-of-fold AUC of a ridge classifier telling ``a``'s images from ``b``'s (folds by
    patient on each side, features standardised on each training fold).

    Strongly regularised: hundreds of pixels, as few as 20 images a side. On PneumoniaMNIST it
    gave the AUCs of a logistic regression (C=0.01) to 0.01. Written with numpy, not
    scikit-learn, whose import alone took 1.5 s of a 5 s ``data check``.
    """
    x = np.stack([t for _, t in (*a, *b)]).astype(np.float64)
    y = np.r_[np.zeros(len(a)), np.ones(len(b))]
    rng = np.random.default_rng(0)
    folds = min(folds, len({p for p, _ in a}), len({p for p, _ in b}))
    fold = np.concatenate([_patient_folds([p for p, _ in side], folds, rng) for side in (a, b)])
    scores = np.empty(len(y))
    for k in range(folds):
        held = fold == k
        mean, sd = x[~held].mean(axis=0), x[~held].std(axis=0)
        sd[sd == 0] = 1.0
        fit = (x[~held] - mean) / sd
        target = np.where(y[~held] == 1, 1.0, -1.0)
        gram = fit.T @ fit + RIDGE_ALPHA * np.eye(fit.shape[1])
        weights = np.linalg.solve(gram, fit.T @ (target - target.mean()))
        scores[held] = ((x[held] - mean) / sd) @ weights
    return round(_auc(y.astype(bool), scores), 4)


def _auc(positive: NDArray[np.bool_], scores: NDArray[np.float64]) -> float:
    """Mann-Whitney AUC with mid-ranks for ties."""
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    ranks = np.cumsum(counts) - (counts - 1) / 2.0  # mid-rank of each distinct score
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    return float((ranks[inverse][positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _hanley_mcneil(auc: float, n_pos: int, n_neg: int) -> tuple[float, float]:
    """95 % CI of an AUC from Hanley & McNeil's (1982) standard error."""
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    var = (auc * (1 - auc) + (n_pos - 1) * (q1 - auc * auc) + (n_neg - 1) * (q2 - auc * auc)) / (
        n_pos * n_neg
    )
    half = 1.96 * math.sqrt(max(var, 0.0))
    return round(max(0.0, auc - half), 4), round(min(1.0, auc + half), 4)
