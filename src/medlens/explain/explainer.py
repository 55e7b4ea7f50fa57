"""One entry point for every method: maps of an artifact's models with their faithfulness."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from medlens.errors import ConfigError
from medlens.explain.faithfulness import (
    RANDOMISATION_LIMIT,
    Faithfulness,
    faithfulness,
    randomised_copy,
    rank_similarity,
)
from medlens.explain.gradcam import CAM_METHODS, cam_maps
from medlens.explain.integrated import integrated_gradient_maps
from medlens.explain.occlusion import occlusion_maps
from medlens.models.base import MedlensModel
from medlens.models.forward import combined

METHODS = (*CAM_METHODS, "occlusion", "ig")

#: what a map's values mean, for colour bars and JSON
UNITS = {
    "gradcam": "Grad-CAM (0-1)",
    "gradcam++": "Grad-CAM++ (0-1)",
    "occlusion": "log-odds drop when blurred",
    "ig": "integrated gradients (log-odds)",
}


def relevance_maps(
    members: Sequence[MedlensModel],
    images: torch.Tensor,
    *,
    method: str,
    class_index: int,
    multilabel: bool = False,
    layer: str | None = None,
) -> NDArray[np.float32]:
    """Maps (N, *spatial) of an ensemble: CAMs averaged over members, perturbation methods on the
    ensemble's mean logits (what the artifact predicts)."""
    if method not in METHODS:
        raise ConfigError(f"unknown explanation method {method!r}; use one of {list(METHODS)}")
    if method in CAM_METHODS:
        maps = [
            cam_maps(m, images, method=method, class_index=class_index, layer=layer)
            for m in members
        ]
        mean: NDArray[np.float32] = np.mean(maps, axis=0).astype(np.float32)
        return mean
    model = combined(members)
    if method == "occlusion":
        return occlusion_maps(model, images, class_index=class_index, multilabel=multilabel)
    return integrated_gradient_maps(model, images, class_index=class_index, multilabel=multilabel)


@dataclass
class Explanation:
    """One image's map for one class, with how far it can be trusted."""

    method: str
    class_name: str
    class_index: int
    probability: float
    relevance: NDArray[np.float32]
    faithfulness: Faithfulness
    randomisation_similarity: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def passes_randomisation(self) -> bool | None:
        if self.randomisation_similarity is None:
            return None
        return self.randomisation_similarity < RANDOMISATION_LIMIT

    @property
    def warnings(self) -> list[str]:
        out = []
        if self.faithfulness.flagged:
            out.append("deletion curve no better than random maps")
        if self.passes_randomisation is False:
            out.append("map barely changes when the model's weights are randomised")
        if not np.any(self.relevance):
            out.append("empty map")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "units": UNITS[self.method],
            "class": self.class_name,
            "probability": round(self.probability, 5),
            "faithfulness": self.faithfulness.to_dict(),
            "randomisation_similarity": None
            if self.randomisation_similarity is None
            else round(self.randomisation_similarity, 4),
            "passes_randomisation_check": self.passes_randomisation,
            "warnings": self.warnings,
            **self.extra,
        }


def explain_batch(
    members: Sequence[MedlensModel],
    images: NDArray[np.float32],
    classes: Sequence[int],
    class_names: Sequence[str],
    probabilities: NDArray[np.float64],
    *,
    method: str = "gradcam",
    multilabel: bool = False,
    layer: str | None = None,
    randomisation: bool = True,
) -> list[Explanation]:
    """Explain each preprocessed image (N, C, *spatial) for its class in ``classes``, with
    deletion/insertion areas and (optionally) the model-randomisation similarity."""
    model: nn.Module = combined(members)
    out: list[tuple[int, Explanation]] = []
    for group in sorted(set(classes)):
        rows = [i for i, c in enumerate(classes) if c == group]
        batch = torch.from_numpy(np.ascontiguousarray(images[rows]))
        kw: dict[str, Any] = {"method": method, "class_index": group, "multilabel": multilabel}
        maps = relevance_maps(members, batch, layer=layer, **kw)
        random_maps = None
        if randomisation:
            shuffled = [randomised_copy(m, seed=k) for k, m in enumerate(members)]
            random_maps = relevance_maps(shuffled, batch, layer=layer, **kw)
        for j, i in enumerate(rows):
            score = faithfulness(model, images[i], maps[j], group, multilabel=multilabel)
            similarity = None if random_maps is None else rank_similarity(maps[j], random_maps[j])
            probability = float(probabilities[i, group])
            explanation = Explanation(
                method, class_names[group], group, probability, maps[j], score, similarity
            )
            out.append((i, explanation))
    return [e for _, e in sorted(out, key=lambda pair: pair[0])]
