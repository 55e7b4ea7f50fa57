from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from medlens.data.fake_dicom import SeriesSpec, write_dicom_series
from medlens.errors import DataError, DicomSeriesError
from medlens.io import read_image, scan_series
from medlens.io.dicom import _decode


@pytest.mark.parametrize(
    "spec",
    [
        SeriesSpec(),
        SeriesSpec(rotation_deg=(20, -30, 10), rescale=(0.5, -1000.0)),
        SeriesSpec(monochrome1=True, rotation_deg=(90, 0, 0)),
        SeriesSpec(compress_rle=True, rotation_deg=(0, 90, 0)),
        SeriesSpec(rotation_deg=(180, 0, 0), shuffle_seed=5),  # slices stored from head to feet
    ],
    ids=["axial", "oblique-rescaled", "coronal-monochrome1", "sagittal-rle", "reversed"],
)
def test_series_matches_ground_truth(
    tmp_path: Path, ct_volume: np.ndarray, spec: SeriesSpec
) -> None:
    truth = write_dicom_series(ct_volume, tmp_path, spec)
    img = read_image(tmp_path)
    np.testing.assert_array_equal(img.array, truth.array)
    np.testing.assert_allclose(img.affine, truth.affine, atol=1e-4)
    assert img.meta.modality == "CT"


def test_slices_are_not_sorted_by_instance_number_or_name(
    tmp_path: Path, ct_volume: np.ndarray
) -> None:
    truth = write_dicom_series(ct_volume, tmp_path, SeriesSpec(shuffle_seed=3))
    names = sorted(p.name for p in tmp_path.iterdir())
    first = pydicom.dcmread(tmp_path / names[0])
    assert int(first.InstanceNumber) != 1 or float(first.ImagePositionPatient[2]) != truth.origin[2]
    np.testing.assert_array_equal(read_image(tmp_path).array, truth.array)


def test_monochrome1_reads_like_monochrome2(tmp_path: Path, ct_volume: np.ndarray) -> None:
    write_dicom_series(ct_volume, tmp_path / "m2", SeriesSpec())
    write_dicom_series(ct_volume, tmp_path / "m1", SeriesSpec(monochrome1=True))
    m1, m2 = read_image(tmp_path / "m1"), read_image(tmp_path / "m2")
    np.testing.assert_array_equal(m1.array, m2.array)
    assert m1.meta.extra["original_photometric"] == "MONOCHROME1"


def test_gantry_tilt_is_refused_then_resampled(tmp_path: Path, ct_volume: np.ndarray) -> None:
    spec = SeriesSpec(tilt_deg=12.0)
    truth = write_dicom_series(ct_volume, tmp_path, spec)
    with pytest.raises(DicomSeriesError, match=r"tilt.*12\.00 degrees.*--resample-irregular"):
        read_image(tmp_path)
    img = read_image(tmp_path, resample_irregular=True)
    assert "tilt" in img.meta.extra["resampled"]
    np.testing.assert_allclose(img.affine, truth.affine, atol=1e-4)  # orthogonal grid of slice 0
    # The first slice is untouched; inner voxels of later slices come from the shifted slice.
    np.testing.assert_allclose(img.array[0, 0], truth.array[0, 0], atol=1e-3)
    shift_px = np.tan(np.radians(12.0)) * 2.5 * 5 / 0.8  # slice 5, in rows
    k, r = 5, 12
    lo = int(np.floor(r + shift_px))
    w = r + shift_px - lo
    expected = truth.array[0, k, lo] * (1 - w) + truth.array[0, k, lo + 1] * w
    np.testing.assert_allclose(img.array[0, k, r], expected, atol=1e-2)


def test_uneven_spacing_is_refused_then_interpolated(tmp_path: Path, ct_volume: np.ndarray) -> None:
    offsets = [0.0, 2.5, 5.0, 10.0] + [
        12.5 + 2.5 * i for i in range(ct_volume.shape[0] - 4)
    ]  # 7.5 missing
    write_dicom_series(ct_volume, tmp_path, SeriesSpec(slice_offsets=offsets))
    with pytest.raises(DicomSeriesError, match="uneven slice spacing"):
        read_image(tmp_path)
    img = read_image(tmp_path, resample_irregular=True)
    assert img.spacing[0] == pytest.approx(2.5)
    assert img.spatial_shape[0] == ct_volume.shape[0] + 1
    np.testing.assert_allclose(img.array[0, 3], (ct_volume[2] + ct_volume[3]) / 2.0, atol=1e-3)
    np.testing.assert_allclose(img.array[0, 4], ct_volume[3], atol=1e-3)


def test_duplicate_positions_are_refused(tmp_path: Path, ct_volume: np.ndarray) -> None:
    offsets = [0.0, 2.5, 2.5] + [5.0 + 2.5 * i for i in range(ct_volume.shape[0] - 3)]
    write_dicom_series(ct_volume, tmp_path, SeriesSpec(slice_offsets=offsets))
    with pytest.raises(DicomSeriesError, match="repeat a position"):
        read_image(tmp_path)


def test_a_second_copy_of_an_instance_is_skipped(
    tmp_path: Path, ct_volume: np.ndarray, caplog: pytest.LogCaptureFixture
) -> None:
    """An archive export often holds an instance twice (re-sent, or in another transfer syntax):
    the copy is the same slice, not a second one at its position."""
    truth = write_dicom_series(ct_volume, tmp_path / "series", SeriesSpec())
    first = sorted((tmp_path / "series").iterdir())[0]
    copy = tmp_path / "series" / "zz_copy.dcm"
    copy.write_bytes(first.read_bytes())
    (info,) = scan_series(tmp_path).values()
    assert info.duplicates == [copy] and copy not in info.files
    assert "zz_copy.dcm" in caplog.text
    np.testing.assert_array_equal(read_image(tmp_path / "series").array, truth.array)


def test_folder_with_two_series_never_mixes_them(tmp_path: Path, ct_volume: np.ndarray) -> None:
    a = write_dicom_series(ct_volume, tmp_path, SeriesSpec(series_number=3, description="A"))
    write_dicom_series(ct_volume[:10] + 5, tmp_path, SeriesSpec(series_number=4, description="B"))
    assert len(scan_series(tmp_path)) == 2
    with pytest.raises(DicomSeriesError, match=r"2 series.*'A'.*--series"):
        read_image(tmp_path)
    picked = read_image(tmp_path, series_uid=a.meta.series_uid)
    np.testing.assert_array_equal(picked.array, a.array)
    assert read_image(tmp_path, series_uid="4").spatial_shape[0] == 10


def _pseudonymise_per_file(folder: Path) -> None:
    """A new PatientID in every file, the UIDs kept: what per-file pseudonymisation does."""
    for i, path in enumerate(sorted(folder.iterdir())):
        ds = pydicom.dcmread(path)
        ds.PatientID = f"PSEUDO{i}"
        ds.save_as(path)


def test_a_series_of_several_patients_is_refused_as_a_volume(
    tmp_path: Path, ct_volume: np.ndarray
) -> None:
    write_dicom_series(ct_volume[:4], tmp_path / "s", SeriesSpec())
    _pseudonymise_per_file(tmp_path / "s")
    (info,) = scan_series(tmp_path).values()
    assert sorted(info.patients) == ["PSEUDO0", "PSEUDO1", "PSEUDO2", "PSEUDO3"]
    with pytest.raises(DicomSeriesError, match=r"4 patients \('PSEUDO0'.*re-export"):
        read_image(tmp_path / "s")


def test_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not dicom")
    with pytest.raises(DataError, match="no DICOM image files"):
        read_image(tmp_path)


def test_truncated_and_pixelless_files(tmp_path: Path, ct_volume: np.ndarray) -> None:
    write_dicom_series(ct_volume[:2], tmp_path / "s", SeriesSpec())
    source = sorted((tmp_path / "s").iterdir())[0]
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(source.read_bytes()[:-300])
    with pytest.raises(DataError, match="truncated"):
        read_image(truncated)
    ds = pydicom.dcmread(source)
    del ds.PixelData
    ds.save_as(tmp_path / "nopixels.dcm")
    with pytest.raises(DataError, match="no pixel data"):
        read_image(tmp_path / "nopixels.dcm")


def test_fast_path_matches_pydicom(tmp_path: Path, ct_volume: np.ndarray) -> None:
    write_dicom_series(ct_volume[:3], tmp_path, SeriesSpec(rescale=(1.0, 0.0)))
    for path in tmp_path.iterdir():
        ds = pydicom.dcmread(path)
        np.testing.assert_array_equal(_decode(ds, path)[0], ds.pixel_array)
