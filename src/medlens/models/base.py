"""The one model contract: features -> pool -> head, a CAM target layer, a replaceable head."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from medlens.errors import ConfigError


def conv(spatial_dims: int) -> type[nn.Conv2d] | type[nn.Conv3d]:
    return nn.Conv2d if spatial_dims == 2 else nn.Conv3d


def batch_norm(spatial_dims: int) -> type[nn.BatchNorm2d] | type[nn.BatchNorm3d]:
    return nn.BatchNorm2d if spatial_dims == 2 else nn.BatchNorm3d


def max_pool(spatial_dims: int) -> type[nn.MaxPool2d] | type[nn.MaxPool3d]:
    return nn.MaxPool2d if spatial_dims == 2 else nn.MaxPool3d


class GlobalPool(nn.Module):
    """Global average pooling to (N, C): any input size works with the same head."""

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = x.flatten(2).mean(dim=2)
        return out


class MedlensModel(nn.Module):
    """A classifier as ``head(pool(features(x)))`` with the metadata every workflow needs.

    ``features`` maps an image (N, C, *spatial) to a feature map; ``target_layer`` names the
    module whose activations Grad-CAM uses; ``replace_head`` swaps the last linear layer for a
    new number of classes (transfer learning); ``spec()`` rebuilds the same architecture.
    """

    def __init__(
        self,
        name: str,
        *,
        spatial_dims: int,
        in_channels: int,
        num_classes: int,
        features: nn.Module,
        head: nn.Module,
        target_layer: str,
        pool: nn.Module | None = None,
        options: dict[str, Any] | None = None,
    ):
        super().__init__()
        self.name = name
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.options = dict(options or {})
        self.features = features
        self.pool = pool if pool is not None else GlobalPool()
        self.head = head
        self.target_layer = target_layer
        self.get_submodule(target_layer)  # fail at construction, not at explanation time

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.head(self.pool(self.features(x)))
        return out

    def embed(self, x: Tensor) -> Tensor:
        """Pooled features (N, D) before the head."""
        out: Tensor = self.pool(self.features(x))
        return out

    def last_linear(self) -> nn.Linear:
        linears = [m for m in self.head.modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise ConfigError(f"model {self.name!r} has no linear layer in its head")
        return linears[-1]

    def replace_head(self, num_classes: int) -> None:
        """Give the head a freshly initialised output layer for ``num_classes`` outputs."""
        old = self.last_linear()
        new = nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
        for _name, module in self.head.named_modules():
            for child_name, child in module.named_children():
                if child is old:
                    setattr(module, child_name, new)
        if self.head is old:
            self.head = new
        self.num_classes = num_classes

    def freeze_features(self, frozen: bool = True) -> None:
        """Stop (or restart) gradient updates of the feature extractor."""
        for p in self.features.parameters():
            p.requires_grad = not frozen

    def spec(self) -> dict[str, Any]:
        """JSON-serialisable arguments of ``create_model`` that rebuild this architecture."""
        return {
            "name": self.name,
            "spatial_dims": self.spatial_dims,
            "in_channels": self.in_channels,
            "num_classes": self.num_classes,
            "options": self.options,
        }

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def linear_head(in_features: int, num_classes: int, dropout: float) -> nn.Module:
    layers: list[nn.Module] = [nn.Dropout(dropout)] if dropout > 0 else []
    return nn.Sequential(*layers, nn.Linear(in_features, num_classes))


def init_weights(module: nn.Module) -> None:
    """He initialisation for convolutions, unit/zero for norms (plain-torch networks)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.Conv3d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d | nn.BatchNorm3d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


__all__ = ["GlobalPool", "MedlensModel", "init_weights", "linear_head"]
