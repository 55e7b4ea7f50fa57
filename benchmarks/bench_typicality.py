"""``unlike_training`` on real data: what do PneumoniaMNIST and AdrenalMNIST3D models flag?

For each, a model is trained with the default plan (a short budget: the summary needs a model,
not a good one), and its artifact's summary - pixels and the model's pooled features, fitted as
``medlens train`` fits them - scores the validation and test splits and inputs of other kinds
put through the artifact's preprocessing. 2D: BraTS brain MR slices (FLAIR), the 192-slice MR
series' sagittal slices, chest phantoms, DRIVE fundus photographs (grey), uniform noise. 3D:
BraTS FLAIR volumes, brain masks and tumour label maps (binary, as the gland masks are), the MR
series, CT phantoms and their liver masks, uniform noise. Beside it, the pixel view alone (what
artifacts stored before the embedding), from the same training images with its own
99th-percentile threshold.

    PYTHONPATH=src:. python benchmarks/bench_typicality.py [--budget 180]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import SHARED, commit, timed, write_result
from medlens.data import load_manifest
from medlens.data.labels import infer_labels
from medlens.data.synthetic import chest_dataset, ct_phantom
from medlens.data.typicality import MAX_IMAGES, Typicality
from medlens.inference import load_artifact
from medlens.io import MedicalImage, read_image
from medlens.training import prepare_data
from medlens.training.run import train_run

BRATS = SHARED / "brats2015_deepmedic_examples_nifti"


def others_2d() -> dict[str, list[np.ndarray]]:
    """Grey 2D images of other kinds than chest radiographs."""
    flair = read_image(BRATS / "test/brats_2013_pat0001_1/Flair_subtrMeanDivStd.nii.gz").array[0]
    series = read_image(SHARED / "dicom_mr_brain_sag_series").array[0]
    drive = sorted((SHARED / "drive_retina_vessels").rglob("*.tif"))[:20]
    rng = np.random.default_rng(0)
    return {
        "brain MR (BraTS FLAIR, axial)": [flair[..., k] for k in range(40, 120, 4)],
        "brain MR (DICOM series, sagittal)": [series[k] for k in range(40, 160, 6)],
        "chest phantoms": list(chest_dataset(50, size=64, seed=1).images.reshape(50, 64, 64)),
        "fundus photographs (DRIVE, grey)": [read_image(p).array.mean(axis=0) for p in drive],
        "uniform noise": [rng.random((28, 28)) for _ in range(20)],
    }


def others_3d() -> dict[str, list[np.ndarray]]:
    """Volumes of other kinds than adrenal gland masks, among them binary masks of other organs
    (BraTS brain masks and tumour labels: a mask, as AdrenalMNIST3D's are, of another shape)."""
    patients = sorted(p for p in BRATS.glob("*/brats_*") if p.is_dir())
    rng = np.random.default_rng(0)

    def volumes(name: str) -> list[np.ndarray]:
        return [read_image(p / name).array[0] for p in patients if (p / name).is_file()]

    return {
        "brain MR (BraTS FLAIR volumes)": volumes("Flair_subtrMeanDivStd.nii.gz"),
        "brain masks (BraTS, binary)": volumes("brainmask.nii.gz"),
        "tumour label maps (BraTS, binary)": [
            (v > 0).astype(np.float32) for v in volumes("OTMultiClass.nii.gz")
        ],
        "brain MR (the DICOM series)": [read_image(SHARED / "dicom_mr_brain_sag_series").array[0]],
        "CT phantoms": [ct_phantom(seed, size=48).image[0] for seed in range(10)],
        "organ masks of CT phantoms (liver, binary)": [
            (ct_phantom(seed, size=48).mask[0] == 2).astype(np.float32) for seed in range(10)
        ],
        "uniform noise": [rng.random((28, 28, 28)) for _ in range(10)],
    }


def _flagged(typicality: Typicality, distances: np.ndarray) -> dict[str, float]:
    return {
        "flagged": round(float((distances > typicality.threshold).mean()), 4),
        "median_distance": round(float(np.median(distances)), 2),
    }


def measure(data_file: str, others: dict[str, list[np.ndarray]], budget_s: float) -> dict[str, Any]:
    """Train on ``data_file`` with the default plan, then score its splits and ``others``."""
    manifest = load_manifest(SHARED / data_file)
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache"
        run = train_run(
            manifest, Path(tmp) / "run", cache_dir=cache, budget_s=budget_s, tensorboard=False
        )
        artifact = load_artifact(run.model_dir)
        both = artifact.typicality
        assert both is not None and both.embedding is not None
        data = prepare_data(manifest, infer_labels(manifest), artifact.pipeline, cache)
        pixels = data.typicality(seed=run.plan.seed)  # the same images, the pixel view alone

        def embed(images: np.ndarray) -> np.ndarray | None:
            return artifact.embeddings(images)  # over the test-time views, as predictions

        found: dict[str, Any] = {
            split: {
                "pixels": data.unlike_training(pixels, split),
                "pixels + embedding": data.unlike_training(
                    both, split, embed(data.images(data.indices(split)[:MAX_IMAGES]))
                ),
            }
            for split in ("val", "test")
        }
        for name, images in others.items():
            arrays = np.stack(
                [artifact.preprocess(MedicalImage(np.asarray(a, np.float32)[None])) for a in images]
            )
            found[name] = {
                "n": len(arrays),
                "pixels": _flagged(pixels, pixels.distances(arrays)),
                "pixels + embedding": _flagged(both, both.distances(arrays, embed(arrays))),
            }
        one = data.images(data.indices("test")[:1])
        embedding = artifact.embeddings(one)
        cost_ms = {
            "pixels": 1000 * float(np.median(timed(lambda: pixels.distances(one), 50))),
            "embedding part (the pooled features come with the logits)": 1000
            * float(np.median(timed(lambda: both.combine(np.ones(1), embedding), 50))),
        }
    return {
        "model": {
            "plan": run.plan.model,
            "options": run.plan.model_options,
            "budget_s": budget_s,
            "test_auc": round(float(run.metrics["test"]["auc"]), 4),
            "members": len(artifact.meta["members"]),
            "embedding_values": int(both.embedding.mean.size),
        },
        "unlike_training": found,
        "cost_per_input_ms": {k: round(v, 3) for k, v in cost_ms.items()},
    }


def main(budget_s: float) -> None:
    payload = {
        "commit": commit(),
        "pneumoniamnist": measure("pneumoniamnist/pneumoniamnist.npz", others_2d(), budget_s),
        "adrenalmnist3d": measure("adrenalmnist3d/adrenalmnist3d.npz", others_3d(), budget_s),
    }
    print(write_result("typicality", payload))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=180.0, help="training seconds per dataset")
    main(parser.parse_args().budget)
