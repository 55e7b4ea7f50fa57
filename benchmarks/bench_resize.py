"""Resizing to a model's input: medlens Resize vs scipy and MONAI, same run.

A 2k-pixel radiograph scored by a 28 or 224 px model, a 192-slice MR series by a 28^3 or
64^3 model, and MedMNIST's 28 px images grown for a 224 px or 64^3 model. The alternatives: blurring the whole array then sampling it with scipy (the same
values as medlens, and medlens's own code before it switched to one matrix per axis), and MONAI's
Resize (its default area mode, and bilinear with anti-aliasing).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from monai.transforms import Resize as MonaiResize
from scipy import ndimage

from benchmarks.common import SHARED, commit, summary, timed, write_result
from medlens.io import MedicalImage, read_image
from medlens.transforms import Resize

CASES = [
    (
        "radiograph 1955x1841 (RG1_J2KI.dcm)",
        "dicom_pydicom_samples/pydicom_data_store/RG1_J2KI.dcm",
        (28, 28),
    ),
    (
        "radiograph 1955x1841 (RG1_J2KI.dcm)",
        "dicom_pydicom_samples/pydicom_data_store/RG1_J2KI.dcm",
        (224, 224),
    ),
    ("MR series 192x256x256", "dicom_mr_brain_sag_series", (28, 28, 28)),
    ("MR series 192x256x256", "dicom_mr_brain_sag_series", (64, 64, 64)),
    ("PneumoniaMNIST image 28x28", "pneumoniamnist/pneumoniamnist.npz#test/0", (224, 224)),
    ("AdrenalMNIST3D volume 28^3", "adrenalmnist3d/adrenalmnist3d.npz#test/0", (64, 64, 64)),
]


def scipy_whole_array(image: MedicalImage, shape: tuple[int, ...]) -> np.ndarray:
    """Gaussian blur of every voxel (sigma (scale - 1) / 2), then linear sampling."""
    data = image.array[0].astype(np.float32)
    scale = np.asarray(data.shape, float) / np.asarray(shape, float)
    blurred = ndimage.gaussian_filter(data, sigma=np.maximum((scale - 1) / 2, 0))
    return ndimage.affine_transform(
        blurred, scale, offset=0.5 * scale - 0.5, output_shape=shape, order=1, mode="nearest"
    )


def methods(image: MedicalImage, shape: tuple[int, ...]) -> dict[str, Callable[[], Any]]:
    tensor = torch.from_numpy(image.array.astype(np.float32))
    area = MonaiResize(shape, mode="area")
    smooth = MonaiResize(
        shape, mode="bilinear" if len(shape) == 2 else "trilinear", anti_aliasing=True
    )
    return {
        "medlens_Resize": lambda: Resize(shape)(image).array,
        "scipy_blur_whole_array_then_sample": lambda: scipy_whole_array(image, shape),
        "monai_Resize_area": lambda: area(tensor),
        "monai_Resize_linear_anti_aliasing": lambda: smooth(tensor),
    }


def main(repeats: int = 7) -> None:
    torch.set_num_threads(2)
    rows = []
    for name, rel, shape in CASES:
        image = read_image(SHARED / rel)
        fns = methods(image, shape)
        times: dict[str, list[float]] = {k: [] for k in fns}
        for fn in fns.values():
            fn()  # warm-up
        for _ in range(repeats):  # interleaved: machine noise hits every method alike
            for key, fn in fns.items():
                times[key] += timed(fn, 1, warmup=0)
        ours = Resize(shape)(image).array[0]
        same = float(np.abs(ours - scipy_whole_array(image, shape)).max())
        stats = {k: summary(v) for k, v in times.items()}
        base = stats["medlens_Resize"]["median_s"]
        rows.append(
            {
                "input": name,
                "output": list(shape),
                "seconds": stats,
                "speedup_vs_medlens": {k: s["median_s"] / base for k, s in stats.items()},
                "max_abs_difference_medlens_vs_scipy": same,
                "value_range": [float(ours.min()), float(ours.max())],
            }
        )
        print(name, shape, {k: round(s["median_s"], 4) for k, s in stats.items()}, same)
    write_result(
        "resize",
        {
            "commit": commit(),
            "description": __doc__.strip().splitlines()[0],
            "cases": rows,
            "note": "speedup_vs_medlens: each method's median time over medlens's (above 1: medlens faster)",
        },
    )


if __name__ == "__main__":
    main()
