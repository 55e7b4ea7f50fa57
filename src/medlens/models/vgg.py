"""VGG-11/16 (with batch norm) in plain torch, 2D or 3D, for any input size."""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from medlens.models.base import MedlensModel, batch_norm, conv, init_weights, max_pool
from medlens.models.registry import MODELS

# Convolutions per stage; every stage ends in a 2x max-pool.
STAGES = {"vgg11": (1, 1, 2, 2, 2), "vgg16": (2, 2, 3, 3, 3)}
WIDTHS = (64, 128, 256, 512, 512)


def _vgg(
    name: str,
    spatial_dims: int,
    in_channels: int,
    num_classes: int,
    width: float,
    dropout: float,
) -> MedlensModel:
    stages: OrderedDict[str, nn.Module] = OrderedDict()
    previous = in_channels
    for i, (repeats, base) in enumerate(zip(STAGES[name], WIDTHS, strict=True), start=1):
        out = max(8, int(base * width))
        layers: list[nn.Module] = []
        for _ in range(repeats):
            layers += [
                conv(spatial_dims)(previous, out, 3, padding=1, bias=False),
                batch_norm(spatial_dims)(out),
                nn.ReLU(),
            ]
            previous = out
        # ceil_mode keeps at least one voxel, so 28x28 MedMNIST images pass all five pools
        layers.append(max_pool(spatial_dims)(2, ceil_mode=True))
        stages[f"stage{i}"] = nn.Sequential(*layers)
    features = nn.Sequential(stages)
    init_weights(features)
    hidden = max(64, int(512 * width))
    head = nn.Sequential(
        nn.Linear(previous, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, num_classes)
    )
    return MedlensModel(
        name,
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        num_classes=num_classes,
        features=features,
        head=head,
        # the last stage's pool leaves 1 voxel on small inputs; the convs before it keep a map
        target_layer=f"features.stage5.{3 * STAGES[name][-1] - 1}",
        options={"width": width, "dropout": dropout},
    )


@MODELS.register("vgg11")
def vgg11(
    *,
    spatial_dims: int,
    in_channels: int,
    num_classes: int,
    width: float = 1.0,
    dropout: float = 0.5,
) -> MedlensModel:
    """VGG-11 with batch norm; global average pooling replaces the 4096-wide dense layers."""
    return _vgg("vgg11", spatial_dims, in_channels, num_classes, width, dropout)


@MODELS.register("vgg16")
def vgg16(
    *,
    spatial_dims: int,
    in_channels: int,
    num_classes: int,
    width: float = 1.0,
    dropout: float = 0.5,
) -> MedlensModel:
    """VGG-16 with batch norm; global average pooling replaces the 4096-wide dense layers."""
    return _vgg("vgg16", spatial_dims, in_channels, num_classes, width, dropout)
