"""The default plan on data nobody tuned it for: is a tumour in this BraTS brain-MR slice?

The 6 BraTS 2015 cases of ``../shared/data`` (the shipped split: train 2, validation 2, test 2
patients) become 2-channel axial slices (FLAIR + T1c, 240x240, z-normalised within the brain by
the data's provider) written as medlens ``.npz`` files into ``<split>/<class>/`` folders, as a
user would export them: "tumour" when at least 100 pixels of the slice are labelled tumour,
"no_tumour" when none are, slices in between and slices with under 2,000 brain pixels left out.
``medlens train`` with its defaults then plans, trains and evaluates on the test patients; the
data check's split shift says how alike the patients' slices are.

    PYTHONPATH=src:. python benchmarks/bench_unseen_brats.py [--budget 300]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import SHARED, commit, write_result
from medlens.data import load_manifest
from medlens.data.check import check_dataset
from medlens.io import MedicalImage, read_image, write_image
from medlens.training.run import train_run

BRATS = SHARED / "brats2015_deepmedic_examples_nifti"
SPLITS = {"train": "train", "validation": "val", "test": "test"}
TUMOUR_PIXELS = 100
BRAIN_PIXELS = 2000
KEYS = ("auc", "accuracy", "sensitivity", "specificity", "f1")


def write_slices(out: Path) -> Counter[str]:
    """``out/<split>/<class>/<patient>_z<k>.npz``; returns the count per split and class."""
    counts: Counter[str] = Counter()
    for folder, split in SPLITS.items():
        for case in sorted((BRATS / folder).iterdir()):
            patient = case.name.split("_")[2]  # brats_2013_pat0001_1 -> pat0001
            flair = read_image(case / "Flair_subtrMeanDivStd.nii.gz").array[0]
            t1c = read_image(case / "T1c_subtrMeanDivStd.nii.gz").array[0]
            labels = read_image(case / "OTMultiClass.nii.gz").array[0]
            brain = read_image(case / "brainmask.nii.gz").array[0]
            for k in range(flair.shape[-1]):
                tumour = int((labels[..., k] > 0).sum())
                if brain[..., k].sum() < BRAIN_PIXELS or 0 < tumour < TUMOUR_PIXELS:
                    continue
                name = "tumour" if tumour else "no_tumour"
                image = MedicalImage(np.stack([flair[..., k], t1c[..., k]]).astype(np.float32))
                (out / split / name).mkdir(parents=True, exist_ok=True)
                write_image(image, out / split / name / f"{patient}_z{k:03d}.npz")
                counts[f"{split}/{name}"] += 1
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--budget", type=float, default=300.0, help="training budget, seconds")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        counts = write_slices(work / "slices")
        manifest = load_manifest(work / "slices")
        report = check_dataset(manifest)
        started = time.monotonic()
        result = train_run(
            manifest,
            work / "run",
            cache_dir=work / "cache",
            budget_s=args.budget,
            tensorboard=False,
        )
        wall = round(time.monotonic() - started, 1)
    m, plan = result.metrics, result.plan
    payload: dict[str, Any] = {
        "commit": commit(),
        "budget_s": args.budget,
        "slices": dict(sorted(counts.items())),
        "data_check_ok": report.ok,
        "data_check_warnings": report.warnings,
        "shift": [s.to_dict() for s in report.shifts],
        "plan": {
            "model": plan.model,
            "options": plan.model_options,
            "input_size": plan.input_size,
            "in_channels": plan.in_channels,
            "epochs": plan.epochs,
            "batch_size": plan.batch_size,
        },
        "training": m["training"],
        "test": {k: round(m["test"][k], 4) for k in KEYS} | {"n": m["test"]["n"]},
        "ci": {k: m["test"]["ci"][k] for k in KEYS},
        "val": {k: round(m["val"][k], 4) for k in KEYS if k in m["val"]},
        "threshold": m["threshold"],
        "wall_s": wall,
    }
    print(write_result("unseen_brats", payload))
    print({k: payload[k] for k in ("slices", "plan", "test")})


if __name__ == "__main__":
    main()
