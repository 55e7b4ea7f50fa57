"""Every real dataset in ../shared/data loads with the right geometry (marker: realdata)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medlens.io import read_image, read_medmnist, write_image

pytestmark = pytest.mark.realdata

PAIRS = [  # files that hold the same pixels in different transfer syntaxes
    ("pydicom_test_files/MR_small.dcm", "pydicom_test_files/MR_small_RLE.dcm"),
    ("pydicom_test_files/MR_small.dcm", "pydicom_test_files/MR_small_jp2klossless.dcm"),
    ("pydicom_test_files/MR_small.dcm", "pydicom_test_files/MR_small_jpeg_ls_lossless.dcm"),
    ("pydicom_data_store/693_UNCR.dcm", "pydicom_data_store/693_J2KR.dcm"),
    ("pydicom_data_store/MR2_UNCR.dcm", "pydicom_data_store/MR2_J2KR.dcm"),
    ("pydicom_data_store/emri_small.dcm", "pydicom_data_store/emri_small_RLE.dcm"),
    ("pydicom_data_store/emri_small.dcm", "pydicom_data_store/emri_small_jpeg_2k_lossless.dcm"),
    ("pydicom_data_store/emri_small.dcm", "pydicom_data_store/emri_small_jpeg_ls_lossless.dcm"),
]


def _dicom_samples(shared: Path) -> list[Path]:
    return sorted((shared / "dicom_pydicom_samples").rglob("*.dcm"))


def test_every_pydicom_sample_decodes(shared_data: Path) -> None:
    files = _dicom_samples(shared_data)
    assert len(files) == 26
    for path in files:
        img = read_image(path)
        assert img.array.size > 0 and np.all(np.isfinite(img.array.astype(np.float64))), path


@pytest.mark.parametrize(("a", "b"), PAIRS, ids=[p[1].split("/")[-1] for p in PAIRS])
def test_lossless_codecs_give_identical_pixels(shared_data: Path, a: str, b: str) -> None:
    root = shared_data / "dicom_pydicom_samples"
    first, second = read_image(root / a), read_image(root / b)
    np.testing.assert_array_equal(first.array, second.array)
    np.testing.assert_allclose(first.affine, second.affine)


def test_clinical_value_conventions(shared_data: Path) -> None:
    root = shared_data / "dicom_pydicom_samples"
    ct = read_image(root / "pydicom_test_files/CT_small.dcm")
    assert ct.meta.modality == "CT" and ct.array.min() < -500  # rescaled to HU (air is negative)
    cr = read_image(root / "pydicom_data_store/RG3_J2KR.dcm")
    assert (
        cr.meta.extra["original_photometric"] == "MONOCHROME1"
        and cr.meta.photometric == "MONOCHROME2"
    )
    us = read_image(root / "pydicom_test_files/examples_ybr_color.dcm")
    assert us.channels == 3 and us.spatial_shape == (30, 240, 320)
    enhanced = read_image(root / "pydicom_data_store/eCT_Supplemental.dcm")
    assert enhanced.spatial_shape == (2, 512, 512) and enhanced.spacing[0] == pytest.approx(10.0)


def test_mr_series_matches_dcm2niix(shared_data: Path, dcm2niix: str, tmp_path: Path) -> None:
    series = shared_data / "dicom_mr_brain_sag_series"
    subprocess.run(
        [dcm2niix, "-z", "n", "-f", "ref", "-o", str(tmp_path), str(series)],
        check=True,
        capture_output=True,
    )
    ref = nib.as_closest_canonical(nib.load(tmp_path / "ref.nii"))
    img = read_image(series)
    assert img.spatial_shape == (192, 256, 256) and img.meta.modality == "MR"
    ours = nib.as_closest_canonical(nib.load(write_image(img, tmp_path / "ours.nii")))
    np.testing.assert_allclose(ours.affine, ref.affine, atol=1e-3)
    np.testing.assert_array_equal(np.asanyarray(ours.dataobj), np.asanyarray(ref.dataobj))


def test_brats_nifti(shared_data: Path) -> None:
    case = shared_data / "brats2015_deepmedic_examples_nifti/test/brats_2013_pat0001_1"
    flair = read_image(case / "Flair_subtrMeanDivStd.nii.gz")
    labels = read_image(case / "OTMultiClass.nii.gz")
    assert flair.spatial_shape == (240, 240, 155) and flair.orientation() == "LPS"
    assert flair.spacing == pytest.approx((1.0, 1.0, 1.0))
    np.testing.assert_allclose(flair.affine, labels.affine)
    assert set(np.unique(labels.array)) <= {0, 1, 2, 3, 4}
    assert flair.array[labels.array > 0].mean() > 1.0  # tumour is bright on normalised FLAIR


def test_drive_tiff_and_gif(shared_data: Path) -> None:
    root = shared_data / "drive_retina_vessels/training"
    image = read_image(root / "images/21_training.tif")
    vessels = read_image(root / "1st_manual/21_manual1.gif")
    fov = read_image(root / "mask/21_training_mask.gif")
    assert (
        image.channels == 3 and image.spatial_shape == (584, 565) and image.array.dtype == np.uint8
    )
    assert vessels.channels == 1 and vessels.spatial_shape == (584, 565)
    assert set(np.unique(vessels.array)) <= {0, 255} and set(np.unique(fov.array)) <= {0, 255}


def test_bccd_jpeg(shared_data: Path) -> None:
    img = read_image(shared_data / "bccd_blood_cell_detection/BCCD/JPEGImages/BloodImage_00000.jpg")
    assert img.channels == 3 and img.spatial_shape == (480, 640)


@pytest.mark.parametrize(
    ("name", "shape", "counts"),
    [
        ("pneumoniamnist/pneumoniamnist.npz", (28, 28), {"train": 4708, "val": 524, "test": 624}),
        (
            "adrenalmnist3d/adrenalmnist3d.npz",
            (28, 28, 28),
            {"train": 1188, "val": 98, "test": 298},
        ),
        (
            "adrenalmnist3d/adrenalmnist3d_64.npz",
            (64, 64, 64),
            {"train": 1188, "val": 98, "test": 298},
        ),
    ],
)
def test_medmnist_files(
    shared_data: Path, name: str, shape: tuple[int, ...], counts: dict[str, int]
) -> None:
    splits = read_medmnist(shared_data / name)
    assert {k: len(v) for k, v in splits.items()} == counts
    assert splits["train"].images.shape[1:] == shape
    assert read_image(f"{shared_data / name}#test/0").spatial_shape == shape
