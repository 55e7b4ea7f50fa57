"""The classic CNN of the medical-imaging tutorials: conv-ReLU-maxpool blocks, flatten, dense."""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
from torch import Tensor, nn

from medlens.models.base import MedlensModel, batch_norm, conv, init_weights, max_pool
from medlens.models.registry import MODELS


class GridPool(nn.Module):
    """Adaptive average pooling to ``grid`` cells per axis, written with slices.

    Same result as ``AdaptiveAvgPool``; the slices export to ONNX for any input size, where the
    exporter refuses adaptive pooling whose input is not a multiple of the output.
    """

    def __init__(self, grid: int, spatial_dims: int):
        super().__init__()
        self.grid = grid
        self.spatial_dims = spatial_dims

    def forward(self, x: Tensor) -> Tensor:
        for axis in range(2, 2 + self.spatial_dims):
            size = x.shape[axis]
            cells = [
                x.narrow(
                    axis,
                    i * size // self.grid,
                    math.ceil((i + 1) * size / self.grid) - i * size // self.grid,
                ).mean(dim=axis, keepdim=True)
                for i in range(self.grid)
            ]
            x = torch.cat(cells, dim=axis)
        return x.flatten(1)


@MODELS.register("classic-cnn")
def classic_cnn(
    *,
    spatial_dims: int,
    in_channels: int,
    num_classes: int,
    channels: tuple[int, ...] = (32, 64, 128),
    dense: int = 256,
    dropout: float = 0.5,
    norm: bool = False,
) -> MedlensModel:
    """Blocks of conv3-(BN)-ReLU-maxpool; a fixed 4^d grid is flattened into a dense layer.

    The adaptive pooling before the flatten makes the dense layer independent of input size.
    """
    blocks: OrderedDict[str, nn.Module] = OrderedDict()
    previous = in_channels
    for i, width in enumerate(channels, start=1):
        layers: list[nn.Module] = [conv(spatial_dims)(previous, width, 3, padding=1)]
        if norm:
            layers.append(batch_norm(spatial_dims)(width))
        layers += [nn.ReLU(), max_pool(spatial_dims)(2, ceil_mode=True)]
        blocks[f"block{i}"] = nn.Sequential(*layers)
        previous = width
    grid = 4
    pool = GridPool(grid, spatial_dims)
    head = nn.Sequential(
        nn.Linear(previous * grid**spatial_dims, dense),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(dense, num_classes),
    )
    features = nn.Sequential(blocks)
    init_weights(features)
    return MedlensModel(
        "classic-cnn",
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        num_classes=num_classes,
        features=features,
        pool=pool,
        head=head,
        target_layer=f"features.block{len(channels)}",
        options={"channels": list(channels), "dense": dense, "dropout": dropout, "norm": norm},
    )
