"""The weight average the trainer validates and keeps."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medlens.errors import ConfigError
from medlens.planning.planner import ema_decay_for
from medlens.training.averaging import WeightAverage


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(2))


def test_average_follows_the_live_weights_with_the_ramped_decay() -> None:
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    average = WeightAverage(model, decay=0.99)
    start = average.model[0].weight.clone()
    with torch.no_grad():
        model[0].weight.add_(1.0)
    model.train()
    model(torch.randn(8, 3))  # moves the batch-norm statistics and its step counter
    average.update(model, step=1)
    ramped = 2 / 11  # (1 + step) / (10 + step): the early steps forget the initial weights fast
    expected = start * ramped + model[0].weight * (1 - ramped)
    assert torch.allclose(average.model[0].weight, expected)
    assert int(average.model[1].num_batches_tracked) == 1
    assert not any(p.requires_grad for p in average.model.parameters())
    for step in range(2, 3000):
        average.update(model, step)
    assert torch.allclose(average.model[0].weight, model[0].weight, atol=1e-5)
    assert torch.allclose(average.model[1].running_mean, model[1].running_mean, atol=1e-5)


def test_average_is_a_separate_copy() -> None:
    model = _model()
    model(torch.zeros(1, 1, 5, 5))
    average = WeightAverage(model, decay=0.9)
    with torch.no_grad():
        model[0].weight.zero_()
    assert average.model[0].weight.abs().sum() > 0
    with pytest.raises(ValueError, match="decay"):
        WeightAverage(model, decay=1.0)


def test_planned_decay_averages_about_two_epochs() -> None:
    assert ema_decay_for(74) == pytest.approx(1 - 1 / 148, abs=1e-5)
    assert ema_decay_for(1) == 0.9  # tiny data: never slower than 10 steps
    assert ema_decay_for(100_000) == 0.9998


def test_plan_rejects_a_bad_decay() -> None:
    from medlens.planning import Plan

    plan = Plan(
        labels={"task": "binary", "classes": ["a", "b"]},
        spatial_dims=2,
        in_channels=1,
        input_size=[8, 8],
        preprocessing=[],
        model="compactnet",
        model_options={},
        batch_size=4,
        epochs=2,
    )
    with pytest.raises(ConfigError, match="ema_decay"):
        plan.with_overrides({"ema_decay": 1.5})
