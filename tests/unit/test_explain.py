"""Activation maps on every model family (2D and 3D) and the faithfulness measures themselves."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from medlens.errors import ConfigError
from medlens.explain import (
    METHODS,
    cam_maps,
    energy_inside,
    faithfulness,
    integrated_gradient_maps,
    occlusion_maps,
    pointing_game,
    randomised_copy,
    rank_similarity,
    relevance_maps,
)
from medlens.explain.overlay import on_grid, render
from medlens.explain.permutation import feature_importance, region_importance
from medlens.explain.scoring import blurred, class_log_odds
from medlens.io.image import MedicalImage
from medlens.models import create_model
from medlens.transforms import Resize
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


def test_cam_on_a_frozen_backbone_matches_the_trainable_model() -> None:
    # transfer learning freezes the features that hold the target layer; the EMA copy that
    # training keeps has no trainable parameters at all
    torch.manual_seed(0)
    model = create_model("compactnet", 2, 1, 2, **SMALL["compactnet"])
    images = torch.randn(2, 1, *SIZE[2])
    expected = cam_maps(model, images, class_index=1)
    model.freeze_features()
    np.testing.assert_allclose(cam_maps(model, images, class_index=1), expected, atol=1e-6)
    model.requires_grad_(False)
    np.testing.assert_allclose(cam_maps(model, images, class_index=1), expected, atol=1e-6)
    assert not images.requires_grad


@pytest.mark.parametrize("method", ["occlusion", "ig"])
@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("name", ["classic-cnn", "compactnet", "vgg11", "resnet18", "densenet121"])
def test_perturbation_methods_on_every_family(name: str, dims: int, method: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, dims, 1, 3, **SMALL[name])
    images = torch.randn(2, 1, *SIZE[dims])
    maps = relevance_maps([model], images, method=method, class_index=2)
    assert maps.shape == (2, *SIZE[dims]) and np.isfinite(maps).all()
    assert np.abs(maps).max() > 0


def test_unknown_method_is_a_config_error() -> None:
    model = create_model("compactnet", 2, 1, 2, **SMALL["compactnet"])
    with pytest.raises(ConfigError, match="unknown explanation method"):
        relevance_maps([model], torch.randn(1, 1, 20, 20), method="lime", class_index=0)
    assert set(METHODS) == {"gradcam", "gradcam++", "occlusion", "ig"}


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


def _box_case(dims: int = 2) -> tuple[BoxModel, np.ndarray, np.ndarray]:
    shape = (32, 32) if dims == 2 else (16, 16, 16)
    region = torch.zeros(shape, dtype=torch.bool)
    region[(slice(4, 12),) * (dims - 1) + (slice(16, 26) if dims == 2 else slice(8, 14),)] = True
    rng = np.random.default_rng(1)
    images = (rng.random((6, 1, *shape)) * 0.2).astype(np.float32)
    images[:, 0][:, region.numpy()] += rng.random((6, 1)).astype(np.float32)
    return BoxModel(region), images, region.numpy()


@pytest.mark.parametrize("dims", [2, 3])
def test_occlusion_finds_the_region_the_model_reads(dims: int) -> None:
    model, images, region = _box_case(dims)
    maps = occlusion_maps(model, torch.from_numpy(images), class_index=1)
    assert all(pointing_game(m, region, tolerance=0) for m in maps)
    assert all(energy_inside(np.clip(m, 0, None), region) > 0.5 for m in maps)
    with pytest.raises(ConfigError, match="fill"):
        occlusion_maps(model, torch.from_numpy(images), class_index=1, fill="zeros")
    with pytest.raises(ConfigError, match="stride"):
        occlusion_maps(model, torch.from_numpy(images), class_index=1, stride=(2,) * (dims + 1))


def test_integrated_gradients_are_complete() -> None:
    """IG attributions add up to the change of the explained score (the method's axiom)."""
    model, images, region = _box_case()
    maps = integrated_gradient_maps(model, torch.from_numpy(images), class_index=1, steps=64)
    x = torch.from_numpy(images)
    base = torch.from_numpy(np.stack([blurred(i) for i in images]))
    with torch.no_grad():
        change = (
            class_log_odds(model, x, multilabel=False)
            - class_log_odds(model, base, multilabel=False)
        )[:, 1]
    np.testing.assert_allclose(maps.reshape(6, -1).sum(1), change.numpy(), rtol=0.02, atol=1e-3)
    assert all(pointing_game(m, region, tolerance=0) for m in maps)


def test_log_odds_match_probabilities() -> None:
    logits = torch.tensor([[0.5, 2.0, -1.0]])
    p = torch.softmax(logits, 1)
    expected = torch.log(p / (1 - p))
    got = class_log_odds(nn.Identity(), logits, multilabel=False)
    torch.testing.assert_close(got, expected)


def test_randomisation_check_tells_trained_from_random_weights() -> None:
    torch.manual_seed(0)
    model = create_model("compactnet", 2, 1, 2, **SMALL["compactnet"])
    before = [p.clone() for p in model.parameters()]
    state = torch.random.get_rng_state()
    random = randomised_copy(model, seed=3)
    assert torch.equal(state, torch.random.get_rng_state()), "the global RNG must not move"
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert not all(
        torch.equal(a, b) for a, b in zip(model.parameters(), random.parameters(), strict=True)
    )
    a = np.random.default_rng(0).random((16, 16))
    assert rank_similarity(a, a) == pytest.approx(1.0)
    assert rank_similarity(a, np.zeros_like(a)) == 0.0
    assert abs(rank_similarity(a, np.random.default_rng(1).random((16, 16)))) < 0.3


def test_region_and_feature_permutation_importance() -> None:
    model, images, region = _box_case()
    targets = (images[:, 0][:, region].mean(1) > np.median(images[:, 0][:, region].mean(1))).astype(
        int
    )
    images = np.concatenate([images] * 4)
    targets = np.concatenate([targets] * 4)

    def predict(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return torch.softmax(model(torch.from_numpy(batch)), 1).numpy().astype(np.float64)

    baseline, found = region_importance(predict, images, targets, grid=4, repeats=3)
    assert baseline == pytest.approx(1.0)
    by_name = {f.name: f for f in found}
    inside = {"cell 0,2", "cell 0,3", "cell 1,2", "cell 1,3"}  # rows 4-12, columns 16-26
    assert max(found, key=lambda f: f.drop).name in inside
    assert all(abs(by_name[n].drop) < 1e-9 for n in by_name if n not in inside)
    assert all(len(f.drops) == 3 for f in found)

    rng = np.random.default_rng(0)
    table = rng.normal(size=(300, 2))
    labels = (table[:, 0] + 0.3 * rng.normal(size=300) > 0).astype(int)

    def logistic(x: np.ndarray) -> np.ndarray:
        p = 1 / (1 + np.exp(-3 * x[:, 0]))
        return np.stack([1 - p, p], axis=1)

    baseline, (age, noise) = feature_importance(logistic, table, labels, ["age", "noise"])
    assert baseline > 0.9 and age.drop > 0.3 and age.spread >= 0
    assert noise.drop == pytest.approx(0.0)
    with pytest.raises(ConfigError, match="features must be"):
        feature_importance(logistic, table, labels, ["only one"])


def test_overlay_puts_image_and_map_on_the_same_grid() -> None:
    rng = np.random.default_rng(0)
    image = MedicalImage(
        rng.random((1, 40, 60)).astype(np.float32) * 1000, spacing=(0.5, 0.25), origin=(3, 4, 0)
    )
    grid = Resize((20, 30))(image)
    values = on_grid(image, grid)
    assert values.shape == (1, 20, 30)
    # the world position of every grid voxel is preserved: compare with a direct block mean
    assert abs(float(values.mean()) - float(image.array.mean())) < 20
    assert np.array_equal(on_grid(image, image), image.array)
    png = render(image, grid, rng.random((20, 30)), title="t", units="u")
    assert png.startswith(b"\x89PNG")
    volume = MedicalImage(rng.random((1, 12, 16, 16)).astype(np.float32), spacing=(3.0, 1.0, 1.0))
    heat = np.zeros((12, 16, 16))
    heat[6, 8, 8] = 1
    assert render(volume, volume, heat, title="3D", units="u").startswith(b"\x89PNG")


def test_explain_inputs_3d_writes_nifti_maps_on_the_model_grid(tmp_path: Path) -> None:
    from medlens.explain.outputs import explain_inputs
    from medlens.inference import load_artifact
    from medlens.inference.predictor import InputItem
    from medlens.io import read_image, write_image
    from tests.unit.test_serving import make_artifact

    artifact = load_artifact(make_artifact(tmp_path / "model", dims=3))
    volume = MedicalImage(
        np.random.default_rng(0).normal(size=(1, 20, 16, 16)).astype(np.float32),
        spacing=(2.5, 0.8, 0.8),
        origin=(10.0, -5.0, 3.0),
    )
    source = write_image(volume, tmp_path / "ct.nii.gz")
    out = tmp_path / "maps"
    (entry,) = explain_inputs(artifact, [InputItem(source)], out, method="occlusion")
    assert entry["maps"] == ["0000_ct_map.nii.gz"] and entry["method"] == "occlusion"
    saved = read_image(out / entry["maps"][0])
    grid = artifact.prepared(read_image(source))
    assert saved.spatial_shape == (12, 12, 12)
    np.testing.assert_allclose(saved.affine, grid.affine, atol=1e-4)  # the map sits in the CT
    assert (out / entry["overlay"]).read_bytes().startswith(b"\x89PNG")
    document = json.loads((out / "explanations.json").read_text())
    assert document["units"] == "log-odds drop when blurred"
