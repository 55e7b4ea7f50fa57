"""`medlens info` and `medlens convert` on every dataset in ../shared/data."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from medlens.io import read_image

pytestmark = [pytest.mark.realdata, pytest.mark.integration]

TARGETS = [
    ("dicom_mr_brain_sag_series", "out.nii.gz"),
    ("dicom_pydicom_samples/pydicom_test_files/CT_small.dcm", "out.png"),
    ("dicom_pydicom_samples/pydicom_data_store/RG1_J2KI.dcm", "out.png"),
    (
        "brats2015_deepmedic_examples_nifti/train/brats_2013_pat0005_1/T1c_subtrMeanDivStd.nii.gz",
        "out.nrrd",
    ),
    ("drive_retina_vessels/test/images/01_test.tif", "out.png"),
    ("drive_retina_vessels/test/1st_manual/01_manual1.gif", "out.png"),
    ("bccd_blood_cell_detection/BCCD/JPEGImages/BloodImage_00001.jpg", "out.npz"),
    ("pneumoniamnist/pneumoniamnist.npz#test/5", "out.png"),
    ("adrenalmnist3d/adrenalmnist3d.npz#val/3", "out.nii.gz"),
]


@pytest.mark.parametrize(
    ("source", "target"), TARGETS, ids=[t[0].split("/")[0] + ":" + t[1] for t in TARGETS]
)
def test_info_and_convert(
    shared_data: Path, tmp_path: Path, run_cli: Callable, source: str, target: str
) -> None:
    src = f"{shared_data}/{source}"
    info = run_cli("info", src, "--json")
    assert info.code == 0, info.err
    payload = json.loads(info.out)
    assert (
        "***" in payload["patient_id"] or payload["patient_id"] == "-"
    )  # identifiers masked by default
    out = tmp_path / target
    result = run_cli(
        "convert", src, str(out), *(["--window", "abdomen"] if "CT_small" in source else [])
    )
    assert result.code == 0, result.err
    converted = read_image(out)
    assert list(converted.spatial_shape) == payload["shape"][1:]


def test_info_on_datasets(shared_data: Path, run_cli: Callable) -> None:
    result = run_cli("info", str(shared_data / "adrenalmnist3d/adrenalmnist3d_64.npz"), "--json")
    assert json.loads(result.out)["splits"]["train"]["images"] == [1188, 64, 64, 64]


def test_data_check_reports_pneumoniamnist_duplicates(shared_data: Path, run_cli: Callable) -> None:
    result = run_cli("data", "check", str(shared_data / "pneumoniamnist/pneumoniamnist.npz"))
    assert result.code == 1  # the official split has pixel-identical images in train and val
    assert "identical pixels" in result.out
