"""Activation maps on every model family (2D and 3D) and the faithfulness measures themselves."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from medlens.explain import cam_maps, energy_inside, faithfulness, pointing_game
from medlens.models import create_model
from tests.unit.test_models import SIZE, SMALL


@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("name", sorted(SMALL))
def test_cam_on_every_model(name: str, dims: int, method: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, dims, 1, 2, **SMALL[name])
    maps = cam_maps(model, torch.randn(2, 1, *SIZE[dims]), method=method, class_index=1)
    assert maps.shape == (2, *SIZE[dims])
    assert np.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1 + 1e-6


class BoxModel(nn.Module):
    """Logit of class 1 = mean intensity inside a fixed box: the truth a map should find."""

    def __init__(self, region: torch.Tensor):
        super().__init__()
        self.register_buffer("region", region.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = (x[:, 0] * self.region).flatten(1).sum(1) / self.region.sum() * 8
        return torch.stack([torch.zeros_like(score), score], dim=1)


def test_deletion_separates_the_true_map_from_random_and_wrong_maps() -> None:
    region = torch.zeros(32, 32, dtype=torch.bool)
    region[8:16, 20:28] = True
    model = BoxModel(region)
    rng = np.random.default_rng(0)
    image = (rng.random((1, 32, 32)) * 0.2).astype(np.float32)
    image[0][region.numpy()] += 1.0
    truth = region.numpy().astype(np.float32)
    good = faithfulness(model, image, truth, class_index=1)
    assert good.deletion_auc < good.random_deletion_auc
    assert good.insertion_auc > good.random_insertion_auc
    assert not good.flagged
    assert good.deletion_curve[0] > good.deletion_curve[-1]
    wrong = faithfulness(model, image, 1 - truth, class_index=1)
    assert wrong.flagged  # the map points away from the evidence: flagged, not hidden
    assert pointing_game(truth + 0.01 * rng.random((32, 32)), truth)
    assert not pointing_game(1 - truth, truth, tolerance=0)
    assert energy_inside(truth, truth) == pytest.approx(1.0)
    assert energy_inside(1 - truth, truth) == pytest.approx(0.0)
