"""Explanations and their measured faithfulness (work in progress: CAMs and faithfulness so far)."""

from medlens.explain.cam import CAM_METHODS, cam_maps
from medlens.explain.faithfulness import Faithfulness, energy_inside, faithfulness, pointing_game

__all__ = [
    "CAM_METHODS",
    "Faithfulness",
    "cam_maps",
    "energy_inside",
    "faithfulness",
    "pointing_game",
]
