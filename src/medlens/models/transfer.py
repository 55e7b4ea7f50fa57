"""Transfer learning: copy a trained feature extractor into a new model."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import Tensor

from medlens.errors import ConfigError
from medlens.models.base import MedlensModel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TransferReport:
    loaded: int
    adapted: list[str]
    skipped: list[str]


def _adapt_input_channels(source: Tensor, target: Tensor) -> Tensor | None:
    """A first-layer kernel for a different channel count: average, then repeat (RGB <-> grey)."""
    if source.dim() != target.dim() or source.shape[0] != target.shape[0]:
        return None
    if source.shape[2:] != target.shape[2:]:
        return None
    mean = source.mean(dim=1, keepdim=True)
    return mean.repeat(1, target.shape[1], *([1] * (source.dim() - 2))) * (
        source.shape[1] / target.shape[1]
    )


def load_backbone(
    model: MedlensModel,
    state: dict[str, Tensor],
    *,
    source_name: str,
    freeze: bool = False,
) -> TransferReport:
    """Load ``features.*`` weights from ``state`` (another model's state dict) into ``model``.

    The architectures must match by name; a first convolution with a different number of input
    channels is adapted. The head keeps its fresh initialisation for the new classes.
    """
    if source_name != model.name:
        raise ConfigError(
            f"cannot initialise {model.name!r} from a {source_name!r} artifact",
            fix=f"train with --model {source_name} or pick an artifact of {model.name!r}",
        )
    own = model.state_dict()
    loaded, adapted, skipped = 0, [], []
    update: dict[str, Tensor] = {}
    for key, value in state.items():
        if not key.startswith("features.") or key not in own:
            continue
        if own[key].shape == value.shape:
            update[key] = value
            loaded += 1
            continue
        fitted = _adapt_input_channels(value, own[key])
        if fitted is None or loaded > 0:
            skipped.append(key)
        else:
            update[key] = fitted
            adapted.append(key)
    if not update:
        raise ConfigError(f"no feature weights of the {source_name!r} artifact fit this model")
    with torch.no_grad():
        for key, value in update.items():
            own[key].copy_(value)
    model.freeze_features(freeze)
    if skipped:
        log.warning("transfer: %d tensors did not fit and stay freshly initialised", len(skipped))
    return TransferReport(loaded + len(adapted), adapted, skipped)
