"""An exponential moving average of a model's weights, the model that is validated and kept."""

from __future__ import annotations

import copy

import torch
from torch import nn


class WeightAverage:
    """EMA of parameters and batch-norm statistics, updated after every optimizer step.

    The averaged copy is what validation scores and what the best checkpoint holds: its
    validation AUC changes smoothly from epoch to epoch, so early stopping and the choice of
    the best epoch follow the trend rather than the noise of a small validation split.
    """

    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.model = copy.deepcopy(model).eval()
        for param in self.model.parameters():
            param.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """Blend in ``model``'s weights after optimizer step ``step`` (1-based).

        The decay ramps up over the first steps (``(1 + step) / (10 + step)``) so that the
        random initial weights are forgotten quickly.
        """
        decay = min(self.decay, (1 + step) / (10 + step))
        live = model.state_dict()
        averaged = self.model.state_dict()
        floats = [k for k, v in averaged.items() if v.is_floating_point()]
        torch._foreach_lerp_(
            [averaged[k] for k in floats], [live[k].detach() for k in floats], 1.0 - decay
        )
        for key, value in averaged.items():
            if not value.is_floating_point():  # batch-norm step counters
                value.copy_(live[key])
