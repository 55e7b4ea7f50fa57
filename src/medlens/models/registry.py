"""The model registry: ``create_model(name, ...)`` and ``list_models()``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from medlens.errors import ConfigError
from medlens.models.base import MedlensModel
from medlens.registry import Registry

ModelFactory = Callable[..., MedlensModel]
MODELS: Registry[ModelFactory] = Registry("model")


def create_model(
    name: str, spatial_dims: int, in_channels: int, num_classes: int, **options: Any
) -> MedlensModel:
    """Build a registered network.

    Example:
        >>> model = create_model("resnet18", spatial_dims=3, in_channels=1, num_classes=2)
        >>> model.target_layer
        'features.layer4'
    """
    if spatial_dims not in (2, 3):
        raise ConfigError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    if in_channels < 1 or num_classes < 1:
        raise ConfigError(
            f"in_channels ({in_channels}) and num_classes ({num_classes}) must be >= 1"
        )
    factory = MODELS.get(name)
    try:
        return factory(
            spatial_dims=spatial_dims, in_channels=in_channels, num_classes=num_classes, **options
        )
    except TypeError as err:
        raise ConfigError(f"invalid options {sorted(options)} for model {name!r}: {err}") from err


def list_models() -> list[str]:
    """Names of every registered model."""
    return MODELS.names()


def model_from_spec(spec: dict[str, Any]) -> MedlensModel:
    """Rebuild an architecture from ``MedlensModel.spec()``."""
    try:
        return create_model(
            spec["name"],
            int(spec["spatial_dims"]),
            int(spec["in_channels"]),
            int(spec["num_classes"]),
            **spec.get("options", {}),
        )
    except KeyError as err:
        raise ConfigError(f"model spec lacks {err}; got {sorted(spec)}") from err
