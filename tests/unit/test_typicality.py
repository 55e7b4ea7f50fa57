"""How far an input is from the training images: typical ones pass, other kinds are flagged."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medlens.data.synthetic import chest_dataset, ct_phantom
from medlens.data.typicality import Typicality, features
from medlens.errors import ArtifactError


def _chest(n: int, seed: int) -> np.ndarray:
    return chest_dataset(n, size=32, seed=seed).images.reshape(n, 1, 32, 32).astype(np.float32)


@pytest.fixture(scope="module")
def fitted() -> Typicality:
    return Typicality.fit(features(_chest(240, seed=0)), features(_chest(80, seed=1)))


def test_new_images_of_the_training_kind_pass_and_other_kinds_are_flagged(
    fitted: Typicality,
) -> None:
    unseen = fitted.scores(features(_chest(100, seed=2)))
    assert (unseen > fitted.threshold).mean() <= 0.05  # the 99th percentile of validation
    assert 0.5 < float(np.median(unseen)) < 2  # about 1 for a typical image
    ct = ct_phantom(0, size=32)
    slices = np.stack([ct.image[0, k] for k in range(8, 24, 2)])[:, None].astype(np.float32)
    noise = np.random.default_rng(0).random((10, 1, 32, 32)).astype(np.float32)
    for other in (slices, noise):
        assert (fitted.scores(features(other)) > fitted.threshold).all()
    rows = fitted.describe(noise[:2])
    assert rows[0]["unlike_training"] is True and rows[0]["distance_from_training"] > 2


def test_it_round_trips_through_safetensors_and_a_broken_file_is_refused(
    fitted: Typicality, tmp_path: Path
) -> None:
    path = fitted.save(tmp_path / "typicality.safetensors")
    again = Typicality.load(path)
    rows = features(_chest(5, seed=3))
    np.testing.assert_allclose(again.scores(rows), fitted.scores(rows))
    assert again.threshold == fitted.threshold
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(ArtifactError, match="typicality"):
        Typicality.load(path)


def test_without_enough_validation_images_a_fifth_of_training_sets_the_threshold() -> None:
    train = features(_chest(60, seed=0))
    found = Typicality.fit(train, np.empty((0, 0)))
    assert np.isfinite(found.threshold) and found.components.shape[0] <= 47
