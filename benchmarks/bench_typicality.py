"""``unlike_training`` on real data: which inputs does a PneumoniaMNIST model's summary flag?

The summary is fitted as ``medlens train`` fits it (the plan's preprocessing of PneumoniaMNIST:
percentile clip, z-score, 28 px; up to 2,000 training images, threshold at the 99th percentile
of validation's scores), then scores the test split and inputs of other kinds put through the
same preprocessing: BraTS brain MR slices (FLAIR), the 192-slice MR series' sagittal slices,
chest phantoms, DRIVE fundus photographs (grey) and uniform noise. No model is trained.

    PYTHONPATH=src:. python benchmarks/bench_typicality.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import SHARED, commit, write_result
from medlens.data import load_manifest
from medlens.data.labels import infer_labels
from medlens.data.synthetic import chest_dataset
from medlens.data.typicality import features
from medlens.io import MedicalImage, read_image
from medlens.training import prepare_data
from medlens.transforms.base import Pipeline

PREPROCESSING = [
    {"name": "percentile_clip", "lower": 0.5, "upper": 99.5},
    {"name": "zscore", "nonzero": False},
    {"name": "resize", "shape": [28, 28], "order": 1},
]


def others(pipeline: Pipeline) -> dict[str, list[MedicalImage]]:
    """Images of other kinds, each a 2D grey image."""
    flair = read_image(
        SHARED / "brats2015_deepmedic_examples_nifti/test/brats_2013_pat0001_1/"
        "Flair_subtrMeanDivStd.nii.gz"
    ).array[0]
    series = read_image(SHARED / "dicom_mr_brain_sag_series").array[0]
    drive = sorted((SHARED / "drive_retina_vessels").rglob("*.tif"))[:20]
    rng = np.random.default_rng(0)
    found = {
        "brain MR (BraTS FLAIR, axial)": [flair[..., k] for k in range(40, 120, 4)],
        "brain MR (DICOM series, sagittal)": [series[k] for k in range(40, 160, 6)],
        "chest phantoms": list(chest_dataset(50, size=64, seed=1).images.reshape(50, 64, 64)),
        "fundus photographs (DRIVE, grey)": [read_image(p).array.mean(axis=0) for p in drive],
        "uniform noise": [rng.random((28, 28)) for _ in range(20)],
    }
    return {
        name: [pipeline(MedicalImage(np.asarray(a, np.float32)[None])) for a in arrays]
        for name, arrays in found.items()
    }


def main() -> None:
    manifest = load_manifest(SHARED / "pneumoniamnist/pneumoniamnist.npz")
    pipeline = Pipeline.from_spec(PREPROCESSING)
    with tempfile.TemporaryDirectory() as tmp:
        data = prepare_data(manifest, infer_labels(manifest), pipeline, Path(tmp))
        typicality = data.typicality()
        flagged: dict[str, Any] = {
            split: data.unlike_training(typicality, split) for split in ("val", "test")
        }
    for name, images in others(pipeline).items():
        scores = typicality.scores(features(np.stack([im.array for im in images])))
        flagged[name] = {
            "n": len(images),
            "flagged": round(float((scores > typicality.threshold).mean()), 4),
            "median_distance": round(float(np.median(scores)), 2),
        }
    payload = {
        "commit": commit(),
        "threshold": round(typicality.threshold, 4),
        "unlike_training": flagged,
    }
    print(write_result("typicality", payload))


if __name__ == "__main__":
    main()
