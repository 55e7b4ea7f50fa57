"""Which training protocol a small dataset should get, decided without its test split.

A quarter of the official *training* split (stratified, fixed seed) is held out as a stand-in
test set and the real test split is dropped, so the choice never sees the test images the
quality benchmark reports. Each protocol runs ``train_run`` with the default plan and the same
10-minute budget:

- ``single``: train on train, early stopping and the operating point on the data's own
  validation split, ensemble members in the budget early stopping leaves (the default);
- ``cv5``: 5-fold cross-validation over train + val, the 5 fold models averaged, temperature
  and operating point fitted on the out-of-fold predictions of every non-test image;
- ``mixup``: ``single`` with mixup (alpha 0.4). At commit bba3293 the plan itself turned mixup
  on below 2000 training images, so its ``single`` runs mixed and ``no_mixup`` was the
  baseline; mixup lost on both seeds run and the plan leaves it off since;
- ``stem1``: ``single`` with a full-resolution stem on narrow widths (8-64, stem stride 1: about
  the compute of widths 24-192 at stride 2, which 3D inputs get now);
- ``patience6``: ``single`` with early stopping after 6 epochs without improvement (the plan
  says max(10, epochs / 3)), leaving more of the budget to ensemble members;
- ``noscale``: ``single`` without random zoom. AdrenalMNIST3D volumes are binary gland masks on
  one grid, and the gland's voxel count alone ranks the training labels with AUC 0.68: a
  +-15 % zoom changes that volume by up to +-50 %.
- ``clahe``: ``single`` with adaptive histogram equalisation first (tiles of half the image,
  clip limit 0.02) for 2D grey images: a change of exposure or processing, a monotone change
  of the grey values, then barely moves the image the network sees. Decided on the ``pcK``
  hold-outs (``carve_site``), where training and held-out images differ as sites do; the plan
  now does it for grey projection radiographs, so ``single`` runs on PneumoniaMNIST from
  commit 5688107 on are equalised too, and ``noequalise`` is the plan before it.
- ``smooth``: ``single`` with a Gaussian blur (sigma 0.75 voxel) before normalisation. The
  volumes are binary masks; the augmentation's rotations and sub-voxel moves interpolate them
  into soft edges (trilinear weights add ~0.4 voxel of blur on average) that validation and
  test volumes never have. Blurring every volume makes the two alike.
- ``texture``: ``single`` with nnU-Net's other two intensity augmentations, Gaussian blur
  (sigma up to 1 pixel) and additive Gaussian noise (SD up to 0.1 of the z-scored image), each
  on 80 % of the samples like the rest. A second site's detector, dose and processing change
  the sharpness and noise of an image, not only its grey values, and equalisation (the plan
  for radiographs) amplifies noise in flat regions.

Each run records the commit it ran (a run is repeated when the code changed) and its
validation and held-out logits, so operating-point rules can be compared without retraining.

    python benchmarks/bench_protocol.py [--datasets adrenalmnist3d] [--protocols single cv5]
        [--seeds 0 1 2] [--budget 600] [--holdout random pc0+ pc0-]
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.bench_classification import FILES
from benchmarks.common import RESULTS, SHARED, commit, scores_record, write_result
from medlens.data import load_manifest
from medlens.data.manifest import Manifest
from medlens.training.run import train_run

NAME = "training_protocol"
#: protocol -> (folds, plan overrides)
PROTOCOLS: dict[str, tuple[int, dict[str, Any]]] = {
    "single": (0, {}),
    "cv5": (5, {}),
    "mixup": (0, {"mixup": 0.4}),
    "stem1": (0, {"model_options": {"widths": [8, 16, 32, 64], "stem_stride": 1}}),
    "patience6": (0, {"patience": 6}),
    "noscale": (0, {"augmentation.scale": 0.0}),
    "smooth": (
        0,
        {
            "preprocessing": [
                {"name": "gaussian_denoise", "sigma_mm": 0.75},
                {"name": "percentile_clip", "lower": 0.5, "upper": 99.5},
                {"name": "zscore", "nonzero": False},
                {"name": "resize", "shape": [28, 28, 28], "order": 1},
            ]
        },
    ),
    "texture": (0, {"augmentation.blur_sigma": 1.0, "augmentation.noise_std": 0.1}),
    "noequalise": (
        0,
        {
            "preprocessing": [
                {"name": "percentile_clip", "lower": 0.5, "upper": 99.5},
                {"name": "zscore", "nonzero": False},
                {"name": "resize", "shape": [28, 28], "order": 1},
            ]
        },
    ),
    "clahe": (
        0,
        {
            "preprocessing": [
                {"name": "clahe", "clip_limit": 0.02, "kernel_fraction": 0.5},
                {"name": "percentile_clip", "lower": 0.5, "upper": 99.5},
                {"name": "zscore", "nonzero": False},
                {"name": "resize", "shape": [28, 28], "order": 1},
            ]
        },
    ),
}
HOLDOUTS = ("random", "pc0+", "pc0-", "pc1+", "pc1-")
HELD_OUT = 0.25
CARVE_SEED = 1234
KEYS = ("auc", "accuracy", "sensitivity", "specificity", "f1", "pr_auc", "ece")


def carve(manifest: Manifest) -> Manifest:
    """Drop the test split; a stratified quarter of train becomes the stand-in test split."""
    rng = np.random.default_rng(CARVE_SEED)
    rows = [dict(r) for r in manifest.rows if r["split"] != "test"]
    for label in sorted({r["label"] for r in rows}):
        train = [r for r in rows if r["split"] == "train" and r["label"] == label]
        for i in rng.permutation(len(train))[: round(HELD_OUT * len(train))]:
            train[i]["split"] = "test"
    return Manifest(rows, manifest.root)


def carve_site(manifest: Manifest, holdout: str) -> Manifest:
    """Drop the test split; a second "site" along one principal direction becomes the test split.

    ``pc0+`` etc.: the images are z-scored and projected on the given principal component of
    the training images; in each class the quarter of training furthest along it (sign
    ``+``/``-``), and the validation images past that class's cut, are held out. Training and
    validation are then one population and the held-out images another, as the official
    PneumoniaMNIST test normals are (a linear classifier tells them from training's, AUC 0.81),
    while the held-out labels stay unread until scoring.
    """
    component, sign = int(holdout[2:-1]), 1.0 if holdout.endswith("+") else -1.0
    arrays = np.load(manifest.root / manifest.rows[0]["path"].split("#")[0])
    flat = {split: _zscored(arrays[f"{split}_images"]) for split in ("train", "val")}
    mean = flat["train"].mean(0)
    direction = np.linalg.svd(flat["train"] - mean, full_matrices=False)[2][component]
    direction *= np.sign(direction[np.argmax(np.abs(direction))])  # SVD's sign is arbitrary
    rows = [dict(r) for r in manifest.rows if r["split"] != "test"]
    along = {id(r): sign * float((flat[r["split"]][_index(r)] - mean) @ direction) for r in rows}
    for label in sorted({r["label"] for r in rows}):
        cut = np.quantile(
            [along[id(r)] for r in rows if r["split"] == "train" and r["label"] == label],
            1 - HELD_OUT,
        )
        for r in rows:
            if r["label"] == label and along[id(r)] > cut:
                r["split"] = "test"
    return Manifest(rows, manifest.root)


def _zscored(images: np.ndarray) -> np.ndarray:
    flat = images.reshape(len(images), -1).astype(np.float64)
    return (flat - flat.mean(1, keepdims=True)) / (flat.std(1, keepdims=True) + 1e-6)


def _index(row: dict[str, str]) -> int:
    """``pneumoniamnist.npz#train/17`` -> 17."""
    return int(row["path"].rsplit("/", 1)[1])


def run_one(
    dataset: str, protocol: str, seed: int, budget: float, work: Path, holdout: str = "random"
) -> dict[str, Any]:
    manifest = load_manifest(SHARED / FILES[dataset])
    manifest = carve(manifest) if holdout == "random" else carve_site(manifest, holdout)
    started = time.monotonic()
    folds, overrides = PROTOCOLS[protocol]
    result = train_run(
        manifest,
        work / f"{dataset}-{protocol}-{seed}-{holdout}",
        cache_dir=work / "cache",
        budget_s=budget,
        seed=seed,
        folds=folds,
        overrides=overrides,
        tensorboard=False,
    )
    m = result.metrics
    assert result.val is not None and result.test is not None
    return {
        "protocol": protocol,
        "holdout": holdout,
        "seed": seed,
        "commit": commit(),
        "held_out": {k: m["test"][k] for k in KEYS if k in m["test"]},
        "n_held_out": m["test"]["n"],
        "plan": {
            "options": result.plan.model_options,
            "epochs": result.plan.epochs,
            "folds": result.plan.folds,
            "mixup": result.plan.mixup,
        },
        "training": m["training"],
        "wall_s": round(time.monotonic() - started, 1),
        "budget_s": budget,
        "temperature": m["temperature"],
        "threshold": m["threshold"],
        "scores": {
            "val": scores_record(result.val.targets, result.val.logits),
            "held_out": scores_record(result.test.targets, result.test.logits),
        },
    }


def _group(run: dict[str, Any]) -> str:
    """Runs of one protocol, hold-out and commit are summarised together."""
    site = "" if run.get("holdout", "random") == "random" else f"/{run['holdout']}"
    return f"{run['protocol']}{site}@{run.get('commit') or 'untagged'}"


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for group in sorted({_group(r) for r in runs}):
        mine = [r for r in runs if _group(r) == group]
        out[group] = {"seeds": sorted(r["seed"] for r in mine)}
        for key in KEYS:
            values = [r["held_out"][key] for r in mine if key in r["held_out"]]
            out[group][key] = {
                "mean": round(statistics.mean(values), 4),
                "sd": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0,
            }
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--datasets", nargs="+", default=["adrenalmnist3d"])
    parser.add_argument("--protocols", nargs="+", default=list(PROTOCOLS), choices=PROTOCOLS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--budget", type=float, default=600.0)
    parser.add_argument("--keep", type=Path, help="keep the run folders (models) here")
    parser.add_argument(
        "--holdout",
        nargs="+",
        default=["random"],
        choices=HOLDOUTS,
        help="random: a stratified quarter of train; pcK+/-: a second site (carve_site)",
    )
    args = parser.parse_args(argv)
    path = RESULTS / f"{NAME}.json"
    datasets: dict[str, Any] = json.loads(path.read_text())["datasets"] if path.exists() else {}
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        for dataset in args.datasets:
            entry = datasets.setdefault(dataset, {"runs": []})
            for seed in args.seeds:  # protocols interleaved: machine drift hits both alike
                for holdout, protocol in itertools.product(args.holdout, args.protocols):
                    done = {
                        (
                            r["protocol"],
                            r.get("holdout", "random"),
                            r["seed"],
                            r["budget_s"],
                            r.get("commit"),
                        )
                        for r in entry["runs"]
                    }
                    if (protocol, holdout, seed, args.budget, commit()) in done:
                        continue
                    entry["runs"].append(
                        run_one(dataset, protocol, seed, args.budget, work, holdout)
                    )
                    entry["summary"] = summarise(entry["runs"])
                    write_result(
                        NAME,
                        {
                            "description": "default plan, 10-minute budget, one protocol per "
                            f"run; test split dropped, a stratified {HELD_OUT:.0%} of the official "
                            f"train split (seed {CARVE_SEED}) held out and scored (held_out); "
                            "runs with holdout pcK+/- hold out a second site instead: the "
                            f"{HELD_OUT:.0%} of each training class furthest along principal "
                            "component K, and the validation images past that cut",
                            "datasets": datasets,
                        },
                    )


if __name__ == "__main__":
    main()
