"""Series loading: medlens.read_image vs SimpleITK ImageSeriesReader on the real 192-slice MR series."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from benchmarks.common import SHARED, summary, timed, write_result
from medlens.io import read_image

SERIES = SHARED / "dicom_mr_brain_sag_series"


def load_sitk() -> np.ndarray:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(SERIES)))
    return sitk.GetArrayFromImage(reader.Execute())


def load_medlens() -> np.ndarray:
    return read_image(SERIES).array


def main(repeats: int = 15) -> None:
    # Same voxels from both, else the comparison is meaningless.
    ours, theirs = load_medlens()[0], load_sitk()
    assert ours.shape == theirs.shape
    medlens_times, sitk_times = [], []
    for _ in range(repeats):  # interleaved so that machine noise hits both alike
        medlens_times += timed(load_medlens, 1, warmup=0)
        sitk_times += timed(load_sitk, 1, warmup=0)
    m, s = summary(medlens_times), summary(sitk_times)
    write_result(
        "series_loading",
        {
            "data": "dicom_mr_brain_sag_series (192 slices 256x256, uncompressed)",
            "medlens": m,
            "simpleitk_ImageSeriesReader": s,
            "time_ratio_medlens_over_sitk": m["median_s"] / s["median_s"],
            "goal": "<= 1.0",
        },
    )


if __name__ == "__main__":
    main()
