"""ResNet-18/34/50 from MONAI, re-wrapped into the medlens model contract."""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING

from torch import nn

from medlens.errors import ConfigError
from medlens.models.base import MedlensModel, linear_head
from medlens.models.registry import MODELS

if TYPE_CHECKING:
    from monai.networks.nets.resnet import ResNet

LAYERS = {"resnet18": [2, 2, 2, 2], "resnet34": [3, 4, 6, 3], "resnet50": [3, 4, 6, 3]}


def _fc_inputs(net: ResNet) -> int:
    if net.fc is None:
        raise ConfigError("MONAI ResNet was built without its classifier layer")
    return int(net.fc.in_features)


def _resnet(
    name: str,
    spatial_dims: int,
    in_channels: int,
    num_classes: int,
    small_input: bool,
    width: float,
    dropout: float,
) -> MedlensModel:
    from monai.networks.nets.resnet import ResNet  # monai's import takes ~1.7 s

    net = ResNet(
        block="bottleneck" if name == "resnet50" else "basic",
        layers=LAYERS[name],
        block_inplanes=[int(c * width) for c in (64, 128, 256, 512)],
        spatial_dims=spatial_dims,
        n_input_channels=in_channels,
        # small inputs (MedMNIST 28^d) keep their resolution: 3x3 stride-1 stem, no max-pool
        conv1_t_size=3 if small_input else 7,
        conv1_t_stride=1 if small_input else 2,
        no_max_pool=small_input,
        num_classes=num_classes,
        act=("relu", {"inplace": False}),
    )
    parts = ["conv1", "bn1", "act", "maxpool", "layer1", "layer2", "layer3", "layer4"]
    features = nn.Sequential(OrderedDict((p, getattr(net, p)) for p in parts))
    return MedlensModel(
        name,
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        num_classes=num_classes,
        features=features,
        head=linear_head(_fc_inputs(net), num_classes, dropout),
        target_layer="features.layer4",
        options={"small_input": small_input, "width": width, "dropout": dropout},
    )


def _register(name: str) -> None:
    def factory(
        *,
        spatial_dims: int,
        in_channels: int,
        num_classes: int,
        small_input: bool = False,
        width: float = 1.0,
        dropout: float = 0.0,
    ) -> MedlensModel:
        return _resnet(name, spatial_dims, in_channels, num_classes, small_input, width, dropout)

    factory.__doc__ = f"{name} (MONAI ResNet); ``small_input`` for images of about 32 px or less."
    MODELS.register(name)(factory)


for _name in LAYERS:
    _register(_name)
