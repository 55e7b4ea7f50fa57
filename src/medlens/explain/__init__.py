"""Explanations of any medlens model (2D and 3D) and measured faithfulness of each one."""

from medlens.explain.explainer import METHODS, UNITS, Explanation, explain_batch, relevance_maps
from medlens.explain.faithfulness import (
    RANDOMISATION_LIMIT,
    Faithfulness,
    energy_inside,
    faithfulness,
    pointing_game,
    randomised_copy,
    rank_similarity,
)
from medlens.explain.gradcam import CAM_METHODS, cam_maps
from medlens.explain.integrated import integrated_gradient_maps
from medlens.explain.occlusion import occlusion_maps

__all__ = [
    "CAM_METHODS",
    "METHODS",
    "RANDOMISATION_LIMIT",
    "UNITS",
    "Explanation",
    "Faithfulness",
    "cam_maps",
    "energy_inside",
    "explain_batch",
    "faithfulness",
    "integrated_gradient_maps",
    "occlusion_maps",
    "pointing_game",
    "randomised_copy",
    "rank_similarity",
    "relevance_maps",
]
