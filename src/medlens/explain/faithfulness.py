"""Is a relevance map faithful to the model? Deletion/insertion curves against random maps, the
model-randomisation check (Adebayo et al. 2018), and, where the truth is known, the pointing game
(Zhang et al. 2016) and the energy inside the region."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
from numpy.typing import NDArray
from scipy import ndimage, stats
from torch import nn

from medlens.explain.scoring import blurred, class_probabilities

#: maps whose rank correlation with the randomised model's maps reaches this fail the check
RANDOMISATION_LIMIT = 0.5


@dataclass(frozen=True)
class Faithfulness:
    """Areas under the deletion (lower is better) and insertion (higher is better) curves, the
    same for random maps, and ``flagged`` when deletion is no better than random."""

    deletion_auc: float
    insertion_auc: float
    random_deletion_auc: float
    random_insertion_auc: float
    deletion_curve: list[float]
    insertion_curve: list[float]

    @property
    def flagged(self) -> bool:
        return self.deletion_auc >= self.random_deletion_auc

    def to_dict(self) -> dict[str, Any]:
        return {
            "deletion_auc": round(self.deletion_auc, 5),
            "insertion_auc": round(self.insertion_auc, 5),
            "random_deletion_auc": round(self.random_deletion_auc, 5),
            "random_insertion_auc": round(self.random_insertion_auc, 5),
            "flagged_no_better_than_random": self.flagged,
            "deletion_curve": [round(v, 5) for v in self.deletion_curve],
            "insertion_curve": [round(v, 5) for v in self.insertion_curve],
        }


@torch.no_grad()
def _curves(
    model: nn.Module,
    image: NDArray[np.float32],
    relevance: NDArray[np.float32],
    class_index: int,
    steps: int,
    multilabel: bool,
) -> tuple[list[float], list[float]]:
    """Class probability as the most relevant voxels are replaced by a blurred copy (deletion)
    or revealed on top of it (insertion), in ``steps`` equal fractions, a few batches."""
    removed = blurred(image)
    order = np.argsort(-relevance.ravel(), kind="stable")
    n = order.size
    deleted, inserted = [], []
    for k in range(steps + 1):
        chosen = np.zeros(n, bool)
        chosen[order[: round(k * n / steps)]] = True
        mask = chosen.reshape(relevance.shape)[None]
        deleted.append(np.where(mask, removed, image))
        inserted.append(np.where(mask, image, removed))
    model.eval()
    probs = []
    for batch in np.array_split(np.stack(deleted + inserted).astype(np.float32), 2 + steps // 16):
        p = class_probabilities(model, torch.from_numpy(batch), multilabel=multilabel)
        probs.extend(p[:, class_index].tolist())
    return probs[: steps + 1], probs[steps + 1 :]


def _area(curve: list[float]) -> float:
    return float(np.trapezoid(curve, dx=1.0 / (len(curve) - 1)))


def faithfulness(
    model: nn.Module,
    image: NDArray[np.float32],
    relevance: NDArray[np.float32],
    class_index: int,
    *,
    steps: int = 20,
    random_maps: int = 3,
    multilabel: bool = False,
    seed: int = 0,
) -> Faithfulness:
    """Deletion/insertion areas of ``relevance`` (spatial shape of ``image`` (C, *spatial)),
    and their mean over ``random_maps`` random relevance maps as the baseline."""
    deletion, insertion = _curves(model, image, relevance, class_index, steps, multilabel)
    rng = np.random.default_rng(seed)
    sigma = max(1.0, min(relevance.shape) / 16)  # random blobs, not salt and pepper
    random_del, random_ins = [], []
    for _ in range(random_maps):
        noise = ndimage.gaussian_filter(rng.random(relevance.shape), sigma).astype(np.float32)
        d, i = _curves(model, image, noise, class_index, steps, multilabel)
        random_del.append(_area(d))
        random_ins.append(_area(i))
    return Faithfulness(
        _area(deletion),
        _area(insertion),
        float(np.mean(random_del)),
        float(np.mean(random_ins)),
        deletion,
        insertion,
    )


M = TypeVar("M", bound=nn.Module)


def randomised_copy(model: M, *, seed: int = 0) -> M:
    """A copy of ``model`` with every layer re-initialised (the global RNG is left untouched)."""
    clone = copy.deepcopy(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in clone.modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()
    return clone.eval()


def rank_similarity(a: NDArray[Any], b: NDArray[Any]) -> float:
    """Spearman correlation of two maps' absolute values; 0 when either is constant."""
    x, y = np.abs(a).ravel(), np.abs(b).ravel()
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return 0.0
    return float(stats.spearmanr(x, y).statistic)


def pointing_game(
    relevance: NDArray[np.float32], region: NDArray[Any], *, tolerance: int | None = None
) -> bool:
    """Does the map's maximum fall inside the ground-truth region, dilated by ``tolerance``
    voxels? The default is Zhang et al.'s 15 px at 224 px, scaled to the image's largest side."""
    region = np.asarray(region, bool)
    if tolerance is None:
        tolerance = round(15 / 224 * max(region.shape))
    if not region.any():
        return False
    if tolerance:
        region = ndimage.distance_transform_edt(~region) <= tolerance
    return bool(region.ravel()[int(np.argmax(relevance))])


def energy_inside(relevance: NDArray[np.float32], region: NDArray[Any]) -> float:
    """Fraction of the (non-negative) map's total inside the region."""
    positive = np.clip(relevance, 0, None)
    total = float(positive.sum())
    return float(positive[np.asarray(region, bool)].sum()) / total if total > 0 else 0.0
