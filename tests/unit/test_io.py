from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from medlens.data.synthetic import rotation_matrix
from medlens.errors import ConfigError, DataError, UnsupportedFormatError
from medlens.io import (
    ImageMeta,
    MedicalImage,
    detect_format,
    is_raster_bytes,
    read_image,
    write_image,
)
from medlens.io.raster import read_raster


def _volume(dtype: type = np.int16) -> MedicalImage:
    rng = np.random.default_rng(0)
    array = rng.integers(-1000, 1000, size=(1, 5, 6, 7)).astype(dtype)
    return MedicalImage(
        array,
        spacing=(2.5, 0.8, 0.7),
        origin=(-10.5, 20.25, 3.0),
        direction=rotation_matrix((15, -25, 40)),
        meta=ImageMeta(modality="CT", window_center=40.0, window_width=400.0),
    )


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz", ".npz", ".nrrd", ".mha", ".mhd"])
def test_3d_round_trip_keeps_array_and_affine(tmp_path: Path, suffix: str) -> None:
    img = _volume()
    out = write_image(img, tmp_path / f"vol{suffix}")
    back = read_image(out)
    np.testing.assert_array_equal(back.array, img.array)
    np.testing.assert_allclose(back.affine, img.affine, atol=1e-5)


@pytest.mark.parametrize("suffix", [".nii.gz", ".npz", ".nrrd"])
def test_multichannel_round_trip(tmp_path: Path, suffix: str) -> None:
    img = MedicalImage(
        np.random.default_rng(1).random((2, 4, 5, 6)).astype(np.float32), spacing=(1, 2, 3)
    )
    back = read_image(write_image(img, tmp_path / f"mc{suffix}"))
    np.testing.assert_array_equal(back.array, img.array)
    np.testing.assert_allclose(back.affine, img.affine, atol=1e-6)


def test_nifti_stores_ras_and_metadata(tmp_path: Path) -> None:
    img = MedicalImage(
        np.zeros((1, 2, 2, 2), np.uint8),
        origin=(10, 20, 30),
        meta=ImageMeta(modality="MR", patient_id="X"),
    )
    path = write_image(img, tmp_path / "a.nii.gz")
    nii = nib.load(path)
    np.testing.assert_allclose(nii.affine[:3, 3], [-10, -20, 30])  # LPS -> RAS flips x and y
    assert nib.aff2axcodes(nii.affine) == ("L", "P", "S")
    assert read_image(path).meta.modality == "MR"


@pytest.mark.parametrize(
    ("dtype", "suffix"),
    [
        (np.uint8, ".png"),
        (np.uint16, ".png"),
        (np.uint8, ".tif"),
        (np.uint16, ".tiff"),
        (np.uint8, ".bmp"),
    ],
)
def test_2d_raster_round_trip_is_exact(tmp_path: Path, dtype: type, suffix: str) -> None:
    rng = np.random.default_rng(2)
    array = rng.integers(0, np.iinfo(dtype).max, size=(1, 9, 13)).astype(
        dtype
    )  # non-square: catches transposes
    img = MedicalImage(array, spacing=(0.5, 0.25))
    path = write_image(img, tmp_path / f"a{suffix}")
    back = read_image(path)
    np.testing.assert_array_equal(back.array, array)
    assert back.spacing == pytest.approx((0.5, 0.25), rel=1e-3)
    assert is_raster_bytes(path.read_bytes()[:1024])
    in_memory = read_raster("upload", path.read_bytes())  # what the service decodes
    np.testing.assert_array_equal(in_memory.array, array)
    assert in_memory.spacing == back.spacing


def test_png_keeps_full_geometry(tmp_path: Path) -> None:
    direction = np.array([[0, 0, 1], [1, 0, 0], [0, -1, 0]], dtype=float)
    img = MedicalImage(
        np.zeros((1, 3, 4), np.uint8), spacing=(0.3, 0.4), origin=(1, 2, 3), direction=direction
    )
    back = read_image(write_image(img, tmp_path / "g.png"))
    np.testing.assert_allclose(back.affine, img.affine)


def test_rgb_png_round_trip(tmp_path: Path) -> None:
    array = np.random.default_rng(3).integers(0, 255, (3, 8, 11)).astype(np.uint8)
    back = read_image(write_image(MedicalImage(array), tmp_path / "rgb.png"))
    np.testing.assert_array_equal(back.array, array)


def test_jpeg_round_trip_is_close(tmp_path: Path) -> None:
    yy, xx = np.mgrid[0:32, 0:40]
    array = ((yy + xx) * 3).astype(np.uint8)[None]
    back = read_image(write_image(MedicalImage(array), tmp_path / "a.jpg"))
    assert back.array.shape == array.shape
    assert np.abs(back.array.astype(int) - array).mean() < 3


def test_a_photo_is_read_the_way_its_exif_orientation_shows_it(tmp_path: Path) -> None:
    from PIL import Image

    pixels = np.zeros((20, 40), np.uint8)
    pixels[:5, :10] = 255  # a block at the top left of the stored landscape image
    stored = Image.fromarray(pixels)
    exif = stored.getexif()
    exif[0x0112] = 6  # the camera was turned: viewers rotate 90 degrees clockwise
    stored.save(tmp_path / "photo.jpg", exif=exif, quality=95)
    upright = read_image(tmp_path / "photo.jpg").array[0]
    rows, cols = np.nonzero(upright > 128)
    assert upright.shape == (40, 20)  # portrait, as shown
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (0, 9, 15, 19)  # top right


def test_windowed_png(tmp_path: Path) -> None:
    hu = np.array([[[-1000, 40, 240, 3000]]], dtype=np.int16)
    back = read_image(write_image(MedicalImage(hu), tmp_path / "w.png", window=(40, 400)))
    assert back.array[0, 0].tolist() == [0, 128, 255, 255]


def test_content_decides_not_suffix(tmp_path: Path) -> None:
    png_named_dcm = tmp_path / "really_png.dcm"
    Image.fromarray(np.zeros((4, 5), np.uint8)).save(png_named_dcm, format="PNG")
    assert detect_format(png_named_dcm) == "raster"
    assert read_image(png_named_dcm).spatial_shape == (4, 5)


@pytest.mark.parametrize(
    ("content", "error"), [(b"", DataError), (b"hello, I am text" * 40, UnsupportedFormatError)]
)
def test_non_images_are_refused(tmp_path: Path, content: bytes, error: type) -> None:
    path = tmp_path / "fake.png"
    path.write_bytes(content)
    with pytest.raises(error, match=r"fake\.png"):
        read_image(path)


def test_missing_file_error_names_it(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        read_image(tmp_path / "nope.nii.gz")


def test_nan_voxels_are_refused(tmp_path: Path) -> None:
    array = np.zeros((3, 3, 3), np.float32)
    array[1, 1, 1] = np.nan
    path = tmp_path / "nan.nii.gz"
    nib.save(nib.Nifti1Image(array, np.eye(4)), path)
    with pytest.raises(DataError, match="NaN"):
        read_image(path)


def test_3d_to_png_is_refused_and_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="3D"):
        write_image(_volume(), tmp_path / "x.png")
    assert list(tmp_path.iterdir()) == []


def test_failed_write_leaves_no_partial_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "out.nii.gz"
    target.write_bytes(b"previous content")

    def broken_save(img: object, filename: object) -> None:
        Path(str(filename)).write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(nib, "save", broken_save)
    with pytest.raises(DataError, match="disk full"):
        write_image(_volume(), target)
    assert target.read_bytes() == b"previous content"
    assert [p.name for p in tmp_path.iterdir()] == ["out.nii.gz"]


def test_unknown_output_suffix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="use one of"):
        write_image(_volume(), tmp_path / "x.xyz")


def test_medmnist_selector(tmp_path: Path) -> None:
    path = tmp_path / "mini.npz"
    images = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    np.savez(
        path,
        train_images=images,
        train_labels=np.array([[0], [1]]),
        val_images=images,
        val_labels=np.zeros((2, 1)),
        test_images=images,
        test_labels=np.zeros((2, 1)),
    )
    img = read_image(f"{path}#train/1")
    np.testing.assert_array_equal(img.array[0], images[1])
    with pytest.raises(DataError, match="dataset, not one image"):
        read_image(path)
    with pytest.raises(DataError, match="index"):
        read_image(f"{path}#train/7")
