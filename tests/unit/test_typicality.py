"""How far an input is from the training images: typical ones pass, other kinds are flagged."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from medlens.data.synthetic import chest_dataset, ct_phantom
from medlens.data.typicality import Summary, Typicality, features
from medlens.errors import ArtifactError


def _chest(n: int, seed: int) -> np.ndarray:
    return chest_dataset(n, size=32, seed=seed).images.reshape(n, 1, 32, 32).astype(np.float32)


def _embedding(n: int, seed: int, kind: int = 0) -> np.ndarray:
    """Stand-in pooled features: 64 non-negative values driven by 8 factors; another ``kind``
    of input drives them through 32 factors and other weights."""
    factors = 8 if kind == 0 else 32
    rng = np.random.default_rng(seed)
    mixing = np.random.default_rng(99 + kind).normal(size=(factors, 64))
    return np.abs(rng.normal(size=(n, factors)) @ mixing)


@pytest.fixture(scope="module")
def fitted() -> Typicality:
    return Typicality.fit(features(_chest(240, seed=0)), features(_chest(80, seed=1)))


def test_new_images_of_the_training_kind_pass_and_other_kinds_are_flagged(
    fitted: Typicality,
) -> None:
    unseen = fitted.distances(_chest(100, seed=2))
    assert fitted.threshold == 1  # distances are in units of validation's 99th percentile
    assert (unseen > 1).mean() <= 0.05 and 0.2 < float(np.median(unseen)) < 0.8
    ct = ct_phantom(0, size=32)
    slices = np.stack([ct.image[0, k] for k in range(8, 24, 2)])[:, None].astype(np.float32)
    noise = np.random.default_rng(0).random((10, 1, 32, 32)).astype(np.float32)
    for other in (slices, noise):
        assert (fitted.distances(other) > fitted.threshold).all()
    rows = fitted.describe(noise[:2])
    assert rows[0]["unlike_training"] is True and rows[0]["distance_from_training"] > 2


def test_the_embedding_flags_what_the_pixels_pass_and_keeps_one_percent_of_validation() -> None:
    val = _chest(200, seed=1)
    found = Typicality.fit(
        features(_chest(240, seed=0)), features(val), _embedding(240, 0), _embedding(200, 1)
    )
    assert found.embedding is not None
    # by construction: each view in units of its own 99th percentile on validation, then the
    # larger of the two in units of its 99th percentile
    both = found.distances(val, _embedding(200, 1))
    assert (both > 1).mean() <= 0.011 and (found.pixel_distances(val) > 1).mean() < 0.011
    images = _chest(50, seed=2)
    typical = found.distances(images, _embedding(50, 2))
    assert (typical > 1).mean() <= 0.06 and 0.2 < float(np.median(typical)) < 0.8
    pixels_only = found.distances(images)  # a caller without the model's features
    odd = found.distances(images, _embedding(50, 2, kind=1))  # same pixels, other features
    assert (pixels_only <= found.threshold).mean() >= 0.94 and (odd > found.threshold).all()
    assert all(row["unlike_training"] for row in found.describe(images, _embedding(50, 2, kind=1)))


def test_it_round_trips_through_safetensors_and_a_broken_file_is_refused(
    fitted: Typicality, tmp_path: Path
) -> None:
    with_embedding = Typicality.fit(
        features(_chest(120, seed=0)),
        features(_chest(40, seed=1)),
        _embedding(120, 0),
        _embedding(40, 1),
    )
    rows, embedding = _chest(5, seed=3), _embedding(5, 3)
    for original in (fitted, with_embedding):
        path = original.save(tmp_path / "typicality.safetensors")
        again = Typicality.load(path)
        np.testing.assert_allclose(
            again.distances(rows, embedding), original.distances(rows, embedding)
        )
        assert again.scales == original.scales
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(ArtifactError, match="typicality"):
        Typicality.load(path)


def test_a_summary_in_the_first_format_still_loads(fitted: Typicality, tmp_path: Path) -> None:
    """Artifacts trained before the embedding stored the pixel view alone and a threshold on its
    raw score: the same images are flagged, their distances now in units of that threshold."""
    pixels = fitted.pixels
    old = tmp_path / "old.safetensors"
    raw_threshold = 2.5
    save_file(
        {
            "mean": pixels.mean,
            "components": np.ascontiguousarray(pixels.components),
            "variances": pixels.variances,
            "scalars": np.asarray([pixels.residual, raw_threshold]),
        },
        str(old),
    )
    loaded = Typicality.load(old)
    rows = np.concatenate([_chest(8, seed=4), np.random.default_rng(0).random((4, 1, 32, 32))])
    raw = pixels.scores(features(rows.astype(np.float32)))
    assert loaded.embedding is None
    np.testing.assert_allclose(loaded.distances(rows, _embedding(12, 4)), raw / raw_threshold)
    flags = [row["unlike_training"] for row in loaded.describe(rows)]
    assert flags == list(raw > raw_threshold) and any(flags) and not all(flags)


def test_without_enough_validation_images_a_fifth_of_training_sets_the_threshold() -> None:
    train = features(_chest(60, seed=0))
    found = Typicality.fit(train, np.empty((0, 0)), _embedding(60, 0), np.empty((0, 0)))
    assert np.isfinite(found.scales).all() and found.pixels.components.shape[0] <= 47
    assert isinstance(found.embedding, Summary) and found.embedding.mean.shape == (64,)
