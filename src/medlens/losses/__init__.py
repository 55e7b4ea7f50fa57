"""Classification losses chosen by the plan: weighted/smoothed cross-entropy, focal, BCE."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medlens.errors import ConfigError


class FocalLoss(nn.Module):
    """Focal loss (Lin et al. 2017) for heavily imbalanced single-label data."""

    def __init__(self, gamma: float = 2.0, weight: Tensor | None = None):
        super().__init__()
        self.gamma = gamma
        self.weight: Tensor | None
        self.register_buffer("weight", weight)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        logp = F.log_softmax(logits, dim=1).gather(1, target[:, None]).squeeze(1)
        loss = -((1 - logp.exp()) ** self.gamma) * logp
        if self.weight is not None:
            loss = loss * self.weight[target]
        return loss.mean()


def make_loss(
    name: str,
    *,
    class_weights: list[float] | None = None,
    label_smoothing: float = 0.0,
    focal_gamma: float = 2.0,
) -> nn.Module:
    weight = torch.tensor(class_weights, dtype=torch.float32) if class_weights else None
    if name == "ce":
        return nn.CrossEntropyLoss(weight=weight, label_smoothing=label_smoothing)
    if name == "focal":
        return FocalLoss(focal_gamma, weight)
    if name == "bce":
        return nn.BCEWithLogitsLoss(pos_weight=weight)
    raise ConfigError(f"unknown loss {name!r}; use ce, focal or bce")


__all__ = ["FocalLoss", "make_loss"]
