"""Test-time views: shifts with replicated edges, one batched call, the same answer through torch,
ONNX Runtime and a saved artifact."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from medlens.errors import ConfigError
from medlens.inference import load_artifact
from medlens.inference.engine import Engine
from medlens.models import create_model
from medlens.models.forward import batched_logits
from medlens.models.tta import NO_TTA, TTA
from tests.unit.test_serving import make_artifact


def _reference_shift(x: np.ndarray, offset: tuple[int, ...]) -> np.ndarray:
    """out[i] = x[clip(i - k)] on every spatial axis: the shift with edge voxels repeated."""
    out = x
    for axis, k in enumerate(offset):
        n = x.shape[2 + axis]
        out = np.take(out, np.clip(np.arange(n) - k, 0, n - 1), axis=2 + axis)
    return out


@pytest.mark.parametrize("dims", [2, 3])
def test_views_are_every_one_voxel_shift_with_edges_repeated(dims: int) -> None:
    x = np.random.default_rng(0).normal(size=(2, 1, *([5] * dims))).astype(np.float32)
    tta = TTA(shift=1)
    views = tta.views(torch.from_numpy(x)).numpy().reshape(-1, *x.shape)
    assert len(views) == tta.count(dims) == 3**dims
    offsets = tta.offsets(dims)
    for view, offset in zip(views, offsets, strict=True):
        np.testing.assert_array_equal(view, _reference_shift(x, offset))
    assert sum(not any(o) for o in offsets) == 1  # the image itself is one of the views
    two = TTA(shift=2).views(torch.from_numpy(x)).numpy().reshape(-1, *x.shape)
    np.testing.assert_array_equal(two[0], _reference_shift(x, (-2,) * dims))


def test_flips_add_one_view_each_and_no_tta_is_the_image() -> None:
    x = torch.arange(8.0).reshape(1, 1, 2, 4)
    assert torch.equal(NO_TTA.views(x), x)
    views = TTA(flips=(-1,)).views(x)
    assert torch.equal(views[1], torch.flip(x[0], dims=(-1,)))
    assert TTA(flips=(0, -1), shift=1).count(2) == 11
    with pytest.raises(ConfigError, match="tta_shift"):
        TTA(shift=-1)


def test_batched_logits_average_the_views_in_batches_of_any_size() -> None:
    torch.manual_seed(0)
    model = create_model("compactnet", 3, 1, 2, widths=(4, 8, 8, 8)).eval()
    x = np.random.default_rng(1).normal(size=(5, 1, 8, 8, 8)).astype(np.float32)
    tta = TTA(shift=1)
    with torch.no_grad():
        views = tta.views(torch.from_numpy(x))
        expected = model(views).reshape(27, 5, 2).mean(0).numpy()
    for batch_size in (1, 27, 64, 500):  # views share a chunk; chunking cannot change the answer
        got = batched_logits(model, x, tta=tta, batch_size=batch_size)
        np.testing.assert_allclose(got, expected, atol=1e-5)
    plain = batched_logits(model, x)
    assert not np.allclose(plain, expected, atol=1e-4)  # the views do change the scores

    def forward(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(batch)).numpy()

    for max_views in (27, 60, 1000):  # the numpy path (ONNX Runtime sessions) agrees
        np.testing.assert_allclose(tta.run(forward, x, max_views=max_views), expected, atol=1e-5)


def test_an_artifact_predicts_with_the_views_it_was_fitted_with(tmp_path: Path) -> None:
    folder = make_artifact(tmp_path / "m3", dims=3)
    plain = load_artifact(folder)
    assert plain.tta == NO_TTA  # artifacts written before test-time shifts keep predicting alone
    meta_path = folder / "model.json"
    meta = json.loads(meta_path.read_text())
    meta["operating_point"].update(TTA(shift=1).to_meta())
    meta_path.write_text(json.dumps(meta))
    artifact = load_artifact(folder)
    assert artifact.tta == TTA(shift=1)
    batch = np.random.default_rng(2).normal(size=(3, 1, 12, 12, 12)).astype(np.float32)
    expected = artifact.logits(batch, tta=TTA(shift=1))
    np.testing.assert_allclose(artifact.logits(batch), expected, atol=1e-6)
    assert not np.allclose(artifact.logits(batch, tta=NO_TTA), expected, atol=1e-4)
    engine = Engine(artifact, cache_dir=tmp_path / "cache", threads=1)
    assert engine.backend_used == "onnx"
    np.testing.assert_allclose(engine.logits(batch), expected, atol=1e-4)
    np.testing.assert_allclose(engine.torch_logits(batch), expected, atol=1e-5)
