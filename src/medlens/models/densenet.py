"""DenseNet-121 from MONAI, re-wrapped into the medlens model contract."""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING

from torch import nn

from medlens.errors import ConfigError
from medlens.models.base import MedlensModel, conv, linear_head
from medlens.models.registry import MODELS

if TYPE_CHECKING:
    from monai.networks.nets.densenet import DenseNet121


def _out_features(net: DenseNet121) -> int:
    out = net.class_layers.out
    if not isinstance(out, nn.Linear):
        raise ConfigError("unexpected MONAI DenseNet classifier layout")
    return int(out.in_features)


@MODELS.register("densenet121")
def densenet121(
    *,
    spatial_dims: int,
    in_channels: int,
    num_classes: int,
    small_input: bool = False,
    growth_rate: int = 32,
    init_features: int = 64,
    dropout: float = 0.0,
) -> MedlensModel:
    """DenseNet-121; ``small_input`` swaps the 7x7/2 stem and its pool for a 3x3/1 convolution.

    Without it a 28x28 image shrinks to nothing before the last dense block.
    """
    from monai.networks.nets.densenet import DenseNet121  # monai's import takes ~1.7 s

    net = DenseNet121(
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        out_channels=num_classes,
        growth_rate=growth_rate,
        init_features=init_features,
    )
    body = net.features
    if small_input:
        body.conv0 = conv(spatial_dims)(in_channels, init_features, 3, padding=1, bias=False)
        body.pool0 = nn.Identity()
    features = nn.Sequential(OrderedDict(body=body, relu=nn.ReLU()))
    return MedlensModel(
        "densenet121",
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        num_classes=num_classes,
        features=features,
        head=linear_head(_out_features(net), num_classes, dropout),
        target_layer="features.relu",
        options={
            "small_input": small_input,
            "growth_rate": growth_rate,
            "init_features": init_features,
            "dropout": dropout,
        },
    )
