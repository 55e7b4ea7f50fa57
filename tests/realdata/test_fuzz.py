"""Seeded mutations of real DICOM, NIfTI and PNG files: each loads or raises MedlensError, quickly.

``make test`` runs 1,000 mutations per format (3,000 in all); set MEDLENS_FUZZ_CASES for more.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from medlens.errors import MedlensError
from medlens.io import MedicalImage, read_image, write_image

pytestmark = pytest.mark.realdata

CASES = int(os.environ.get("MEDLENS_FUZZ_CASES", "1000"))
PER_FILE_SECONDS = 10


@pytest.fixture(scope="module")
def seeds(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """Small real files: DICOM as shipped, a BraTS crop as NIfTI, a DRIVE crop as PNG."""
    folder = tmp_path_factory.mktemp("seeds")
    brats = read_image(
        shared_data
        / "brats2015_deepmedic_examples_nifti/test/brats_2013_pat0002_1/Flair_subtrMeanDivStd.nii.gz"
    )
    nifti = write_image(
        brats.with_array(brats.array[:, 100:124, 100:124, 60:76].copy()), folder / "brats.nii.gz"
    )
    drive = read_image(shared_data / "drive_retina_vessels/test/images/02_test.tif")
    png = write_image(
        drive.with_array(drive.array[:, 250:298, 250:298].copy()), folder / "drive.png"
    )
    dicom = shared_data / "dicom_pydicom_samples/pydicom_test_files/MR_small.dcm"
    return {"dcm": dicom.read_bytes(), "nii.gz": nifti.read_bytes(), "png": png.read_bytes()}


def _mutations(data: bytes, rng: np.random.Generator) -> Iterator[bytes]:
    while True:
        buf = bytearray(data)
        kind = rng.integers(4)
        if kind == 0:  # truncate
            yield bytes(buf[: rng.integers(0, len(buf))])
            continue
        if kind == 1:  # flip random bytes, biased to the header
            for _ in range(rng.integers(1, 20)):
                limit = len(buf) if rng.random() < 0.3 else min(len(buf), 1024)
                buf[rng.integers(limit)] = rng.integers(256)
        elif kind == 2:  # overwrite a chunk
            start = rng.integers(len(buf))
            size = int(rng.integers(1, 64))
            buf[start : start + size] = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
        else:  # duplicate a chunk
            start = rng.integers(len(buf))
            buf[start:start] = buf[start : start + int(rng.integers(1, 256))]
        yield bytes(buf)


def _timeout(*_: object) -> None:
    raise TimeoutError("reader hung")


@pytest.mark.parametrize("suffix", ["dcm", "nii.gz", "png"])
def test_mutated_files_load_or_raise_medlens_error(
    seeds: dict[str, bytes], tmp_path: Path, suffix: str
) -> None:
    rng = np.random.default_rng(1234)
    generator = _mutations(seeds[suffix], rng)
    path = tmp_path / f"fuzz.{suffix}"
    outcomes = {"loaded": 0, "refused": 0}
    previous = signal.signal(signal.SIGALRM, _timeout)
    try:
        for case in range(CASES):
            path.write_bytes(next(generator))
            signal.alarm(PER_FILE_SECONDS)
            try:
                image = read_image(path)
                assert isinstance(image, MedicalImage)
                outcomes["loaded"] += 1
            except MedlensError:
                outcomes["refused"] += 1
            except Exception as err:  # anything else is a bug in medlens' error handling
                raise AssertionError(f"case {case}: {type(err).__name__}: {err}") from err
            finally:
                signal.alarm(0)
    finally:
        signal.signal(signal.SIGALRM, previous)
    assert outcomes["refused"] > 0 and sum(outcomes.values()) == CASES
