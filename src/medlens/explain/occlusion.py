"""Occlusion sensitivity: how much the class log-odds drop when a patch is hidden.

Written by hand because the map must come at the input resolution, in log-odds (which do not
saturate), for 2D and 3D, with many patches per forward pass (captum's ``Occlusion`` took 5 s
per 64x64 image at stride 2), and MONAI's occlusion API changed across releases. Default patches: about 16 positions per axis in 2D and 8 in 3D (343 passes at 64^3).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from medlens.errors import ConfigError
from medlens.explain.scoring import blurred, chosen_classes, class_log_odds

FILLS = ("mean", "blur")


def _per_axis(value: int | Sequence[int], dims: int, name: str) -> tuple[int, ...]:
    values = (value,) * dims if isinstance(value, int) else tuple(value)
    if len(values) != dims or min(values) < 1:
        raise ConfigError(f"occlusion {name} must be a positive int or {dims} of them, got {value}")
    return values


def _starts(size: int, patch: int, stride: int) -> list[int]:
    """Window starts that cover every voxel of an axis (the last window is flush with the end)."""
    starts = list(range(0, size - patch + 1, stride))
    if starts[-1] + patch < size:
        starts.append(size - patch)
    return starts


def default_stride(spatial: Sequence[int]) -> tuple[int, ...]:
    positions = 16 if len(spatial) == 2 else 8
    return tuple(max(1, math.ceil(s / positions)) for s in spatial)


@torch.no_grad()
def occlusion_maps(
    model: nn.Module,
    images: torch.Tensor,
    *,
    class_index: int | None = None,
    multilabel: bool = False,
    stride: int | Sequence[int] | None = None,
    patch: int | Sequence[int] | None = None,
    batch_size: int | None = None,
    fill: str = "mean",
) -> NDArray[np.float32]:
    """Maps (N, *spatial): the mean drop of the class log-odds over the patches covering each
    voxel (positive = evidence for the class). ``patch`` defaults to twice the ``stride``.

    ``fill`` is what a hidden patch shows: the image's mean ("mean", default) or its blurred copy
    ("blur"). On nodule phantoms the mean found the nodule in 98 % of images, blurring (sigma
    1/8) in 78 %: a blurred mediastinum is itself a bright blob, i.e. nodule-like evidence.
    """
    if fill not in FILLS:
        raise ConfigError(f"unknown occlusion fill {fill!r}; use one of {list(FILLS)}")
    spatial = tuple(images.shape[2:])
    dims = len(spatial)
    steps = _per_axis(stride, dims, "stride") if stride else default_stride(spatial)
    sizes = _per_axis(patch, dims, "patch") if patch else tuple(2 * s for s in steps)
    sizes = tuple(min(p, s) for p, s in zip(sizes, spatial, strict=True))
    windows = [
        tuple(slice(a, a + p) for a, p in zip(start, sizes, strict=True))
        for start in itertools.product(
            *(_starts(s, p, st) for s, p, st in zip(spatial, sizes, steps, strict=True))
        )
    ]
    chunk = batch_size or (16 if dims == 2 else 8)
    model.eval()
    images = images.float()
    classes = chosen_classes(model, images, class_index)
    maps = np.zeros((len(images), *spatial), np.float32)
    for n, image in enumerate(images):
        c = int(classes[n])
        baseline = (
            torch.from_numpy(blurred(image.numpy()))
            if fill == "blur"
            else image.mean(dim=tuple(range(1, image.dim())), keepdim=True).expand_as(image)
        )
        reference = float(class_log_odds(model, image[None], multilabel=multilabel)[0, c])
        heat = torch.zeros(spatial)
        count = torch.zeros(spatial)
        for first in range(0, len(windows), chunk):
            group = windows[first : first + chunk]
            batch = image.repeat(len(group), *([1] * image.dim()))
            for j, window in enumerate(group):
                batch[(j, slice(None), *window)] = baseline[(slice(None), *window)]
            drops = reference - class_log_odds(model, batch, multilabel=multilabel)[:, c]
            for drop, window in zip(drops.tolist(), group, strict=True):
                heat[window] += drop
                count[window] += 1
        maps[n] = (heat / count).numpy()
    return maps
