"""Preprocessing (deterministic steps on MedicalImage) and batch augmentation (tensors)."""

from __future__ import annotations

from medlens.transforms.base import TRANSFORMS, Pipeline, Transform, from_spec
from medlens.transforms.intensity import (
    CLAHE,
    WINDOW_PRESETS,
    Channels,
    GaussianDenoise,
    MedianDenoise,
    MinMax,
    NonLocalMeans,
    PercentileClip,
    Window,
    ZScore,
    parse_window,
)
from medlens.transforms.spatial import (
    CropForeground,
    CropOrPad,
    Reorient,
    Resample,
    Resize,
    bounding_box,
    crop,
    crop_to_mask,
    pad,
)

__all__ = [
    "CLAHE",
    "TRANSFORMS",
    "WINDOW_PRESETS",
    "Channels",
    "CropForeground",
    "CropOrPad",
    "GaussianDenoise",
    "MedianDenoise",
    "MinMax",
    "NonLocalMeans",
    "PercentileClip",
    "Pipeline",
    "Reorient",
    "Resample",
    "Resize",
    "Transform",
    "Window",
    "ZScore",
    "bounding_box",
    "crop",
    "crop_to_mask",
    "from_spec",
    "pad",
    "parse_window",
]
