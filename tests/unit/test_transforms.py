from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from medlens.data.synthetic import ct_phantom, rotation_matrix
from medlens.errors import ConfigError, DataError
from medlens.io import MedicalImage
from medlens.transforms import (
    CLAHE,
    WINDOW_PRESETS,
    CropForeground,
    CropOrPad,
    GaussianDenoise,
    MedianDenoise,
    MinMax,
    NonLocalMeans,
    PercentileClip,
    Pipeline,
    Reorient,
    Resample,
    Resize,
    Window,
    ZScore,
    crop_to_mask,
    from_spec,
    parse_window,
)


def _ct() -> MedicalImage:
    sample = ct_phantom(1, 0, size=24, lesion=True)
    return MedicalImage(
        sample.image,
        spacing=(2.0, 0.8, 0.9),
        origin=(5, -3, 8),
        direction=rotation_matrix((30, -10, 50)),
    )


def _world(img: MedicalImage, index: tuple[float, ...]) -> np.ndarray:
    return (img.affine @ np.array([*index, *([0.0] * (3 - len(index))), 1.0]))[:3]


ALL = [
    Window(preset="abdomen"),
    ZScore(),
    ZScore(nonzero=True),
    PercentileClip(),
    MinMax(),
    CLAHE(),
    GaussianDenoise(sigma_mm=1.0),
    MedianDenoise(),
    NonLocalMeans(),
    Resample((1.5, 1.5, 1.5)),
    Resize((16, 20, 12)),
    CropOrPad((30, 20, 20)),
    Reorient("RAS"),
    CropForeground(threshold=-500),
]


@pytest.mark.parametrize("transform", ALL, ids=lambda t: t.name)
def test_deterministic_and_serialisable(transform: object) -> None:
    img = _ct()
    a, b = transform(img), transform(img)  # type: ignore[operator]
    np.testing.assert_array_equal(a.array, b.array)
    np.testing.assert_allclose(a.affine, b.affine)
    assert from_spec(transform.spec()) == transform  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "transform",
    [Resize((24, 24, 24)), CropOrPad((24, 24, 24)), Resample((2.0, 0.8, 0.9))],
    ids=lambda t: t.name,
)
def test_identity_at_neutral_parameters(transform: object) -> None:
    img = _ct()
    out = transform(img)  # type: ignore[operator]
    np.testing.assert_allclose(out.array, img.array, atol=1e-3)
    np.testing.assert_allclose(out.affine, img.affine, atol=1e-9)


def test_reorient_keeps_world_positions() -> None:
    img = _ct()
    for codes in ("LPS", "RAS", "SAL", "IRP"):
        out = Reorient(codes)(img)
        assert out.orientation() == codes
        # The voxel with the maximum value sits at the same world position.
        i_in = np.unravel_index(int(np.argmax(img.array[0])), img.spatial_shape)
        i_out = np.unravel_index(int(np.argmax(out.array[0])), out.spatial_shape)
        np.testing.assert_allclose(_world(img, i_in), _world(out, i_out), atol=1e-9)
        assert np.isclose(out.array.sum(), img.array.sum())


def test_reorient_2d_and_bad_codes() -> None:
    img = MedicalImage(np.arange(6).reshape(1, 2, 3))  # axis0 -> L, axis1 -> P
    out = Reorient("PR")(img)  # transpose, then flip the new second axis
    assert out.array[0].tolist() == [[3, 0], [4, 1], [5, 2]]
    with pytest.raises(ConfigError):
        Reorient("LL")(img)


def test_crop_pad_and_resize_keep_world_positions() -> None:
    img = _ct()
    centre = _world(img, tuple((n - 1) / 2 for n in img.spatial_shape))
    for t in (CropOrPad((30, 16, 20)), Resize((12, 30, 16))):
        out = t(img)
        np.testing.assert_allclose(
            _world(out, tuple((n - 1) / 2 for n in out.spatial_shape)), centre, atol=1e-6
        )
    cropped = CropOrPad((10, 10, 10))(img)
    np.testing.assert_array_equal(cropped.array[0, 0, 0, 0], img.array[0, 7, 7, 7])
    np.testing.assert_allclose(_world(cropped, (0, 0, 0)), _world(img, (7, 7, 7)))


def test_resample_shape_and_spacing() -> None:
    img = _ct()
    out = Resample((4.0, 1.6, 1.8))(img)
    assert out.spacing == (4.0, 1.6, 1.8)
    assert out.spatial_shape == (12, 12, 12)
    np.testing.assert_allclose(out.origin, img.origin)


@pytest.mark.parametrize(
    ("shape", "out"),
    [
        ((391, 367), (28, 28)),
        ((100, 7), (9, 30)),
        ((40, 36, 30), (10, 12, 30)),
        ((9, 5), (2, 5)),
        ((28, 28), (224, 224)),  # growing: no blur, the same sampling
        ((12, 10, 8), (30, 24, 16)),
    ],
)
def test_linear_resizing_matches_filtering_the_whole_array(
    shape: tuple[int, ...], out: tuple[int, ...]
) -> None:
    """The separable shrink gives scipy's blur-everything-then-sample values, edges included."""
    from scipy import ndimage

    data = np.random.default_rng(0).random((1, *shape)).astype(np.float32) * 1000
    img = MedicalImage(data, spacing=(1.0,) * len(shape))
    scale = np.asarray(shape, float) / np.asarray(out, float)
    blurred = ndimage.gaussian_filter(data[0], sigma=np.maximum((scale - 1) / 2, 0))
    expected = ndimage.affine_transform(
        blurred, scale, offset=0.5 * scale - 0.5, output_shape=out, order=1, mode="nearest"
    )
    np.testing.assert_allclose(Resize(out)(img).array[0], expected, atol=2e-3)
    wider = tuple(float(s) for s in scale)
    resampled = Resample(wider)(img)
    reference = ndimage.affine_transform(
        blurred, scale, output_shape=resampled.spatial_shape, order=1, mode="nearest"
    )
    np.testing.assert_allclose(resampled.array[0], reference, atol=2e-3)


def test_window_presets_and_custom() -> None:
    img = MedicalImage(np.array([[[-1400, -600, 150, 3000]]], dtype=np.int16))
    out = Window(preset="lung")(img)
    assert out.array[0, 0].tolist() == pytest.approx([0.0, 0.5, 1.0, 1.0])
    assert set(WINDOW_PRESETS) >= {"lung", "mediastinum", "abdomen", "bone", "brain"}
    assert parse_window("40,400") == (40.0, 400.0)
    with pytest.raises(ConfigError, match="preset"):
        parse_window("lugn")


def test_normalisations() -> None:
    img = _ct()
    z = ZScore()(img).array
    assert abs(z.mean()) < 1e-4 and abs(z.std() - 1) < 1e-3
    mm = MinMax()(img).array
    assert mm.min() == 0 and mm.max() == pytest.approx(1)
    clipped = PercentileClip(1, 99)(img).array
    assert clipped.max() <= np.percentile(img.array, 99) + 1e-3
    assert CLAHE()(img).array.min() >= 0 and CLAHE()(img).array.max() <= 1


def test_clahe_tile_relative_to_the_image_and_contrast_invariance() -> None:
    rng = np.random.default_rng(0)
    img = MedicalImage(ndimage.gaussian_filter(rng.random((1, 28, 28)), (0, 2, 2)))
    assert np.array_equal(CLAHE(kernel_fraction=0.5)(img).array, CLAHE(kernel_size=14)(img).array)
    # a gamma change (another exposure or processing) moves the equalised image far less
    darker = MedicalImage(MinMax()(img).array ** 2.0)
    plain = np.abs(MinMax()(darker).array - MinMax()(img).array).mean()
    clahe = CLAHE(clip_limit=0.02, kernel_fraction=0.5)
    assert np.abs(clahe(darker).array - clahe(img).array).mean() < plain / 3
    with pytest.raises(ConfigError, match="kernel_fraction"):
        CLAHE(kernel_fraction=1.5)
    # min-max scaling in float32 once overshot 1 on such an image, and CLAHE raised
    overshoot = MedicalImage((np.array([[[40, 120, 195]]], np.float32) / 255) ** 0.6)
    assert MinMax()(overshoot).array.max() <= 1.0
    assert CLAHE()(overshoot).array.max() <= 1.0


def test_denoisers_reduce_noise() -> None:
    rng = np.random.default_rng(0)
    clean = np.zeros((1, 40, 40), np.float32)
    clean[:, 10:30, 10:30] = 1
    noisy = MedicalImage(clean + rng.normal(0, 0.2, clean.shape).astype(np.float32))
    error = np.abs(noisy.array - clean).mean()
    for t in (GaussianDenoise(0.8), MedianDenoise(3), NonLocalMeans()):
        assert np.abs(t(noisy).array - clean).mean() < error * 0.8, t


def test_foreground_and_mask_cropping() -> None:
    array = np.zeros((1, 10, 12), np.float32)
    array[0, 3:6, 4:9] = 1
    img = MedicalImage(array, origin=(1, 2, 0))
    out = CropForeground(margin=1)(img)
    assert out.spatial_shape == (5, 7)
    np.testing.assert_allclose(_world(out, (0, 0)), _world(img, (2, 3)))
    mask = MedicalImage((array > 0).astype(np.uint8))
    cropped, cropped_mask = crop_to_mask(img, mask)
    assert cropped.spatial_shape == cropped_mask.spatial_shape == (3, 5)
    with pytest.raises(DataError, match="no voxel"):
        CropForeground(threshold=5)(img)


def test_pipeline_round_trip_and_digest() -> None:
    pipe = Pipeline((Window(preset="lung"), Resize((8, 8, 8)), ZScore()))
    again = Pipeline.from_json(pipe.to_json())
    assert again == pipe and again.digest() == pipe.digest()
    assert Pipeline((ZScore(),)).digest() != pipe.digest()
    assert pipe(_ct()).spatial_shape == (8, 8, 8)
    with pytest.raises(ConfigError, match="did you mean 'zscore'"):
        from_spec({"name": "zscor"})
