"""Do test-time shifts help, decided on held-out training images, never on a test split.

Scores models that ``bench_protocol.py --keep DIR`` trained (on the official train split less a
stratified quarter, which is the held-out set here) with each set of test-time views, without
retraining: temperature and the Youden cut are fitted on the validation split's scores under the
same views, exactly as ``medlens train`` does, then applied to the held-out images.

    PYTHONPATH=src:. python benchmarks/bench_protocol.py --protocols single --keep /tmp/keep
    PYTHONPATH=src:. python benchmarks/bench_tta.py /tmp/keep/*/model
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.bench_classification import FILES
from benchmarks.bench_protocol import carve
from benchmarks.common import SHARED, write_result
from medlens.data import load_manifest
from medlens.evaluation import evaluate_scores
from medlens.evaluation.artifact_eval import artifact_scores
from medlens.inference import load_artifact
from medlens.models.tta import TTA
from medlens.training.data import prepare_data

NAME = "tta"
VIEWS = {"none": TTA(), "shift1": TTA(shift=1), "shift2": TTA(shift=2)}
KEYS = ("auc", "accuracy", "sensitivity", "specificity", "f1", "ece")


def score_model(folder: Path, cache: Path) -> dict[str, Any]:
    run = folder.parent.name  # bench_protocol names runs DATASET-PROTOCOL-SEED
    dataset = run.split("-")[0]
    artifact = load_artifact(folder)
    manifest = carve(load_manifest(SHARED / FILES[dataset]))
    data = prepare_data(
        manifest,
        artifact.labels,
        artifact.pipeline,
        cache,
        in_channels=artifact.in_channels,
        check_leakage=False,
    )
    out: dict[str, Any] = {
        "run": f"{folder.parent.parent.name}/{run}",
        "dataset": dataset,
        "members": len(artifact.members),
    }
    for name, tta in VIEWS.items():
        val = artifact_scores(artifact, data, "val", tta=tta)
        held_out = artifact_scores(artifact, data, "test", tta=tta)
        metrics = evaluate_scores(val, held_out, artifact.labels, resamples=200)
        out[name] = {k: round(float(metrics["test"][k]), 4) for k in KEYS}
        out[name]["youden_j"] = round(out[name]["sensitivity"] + out[name]["specificity"] - 1, 4)
        out[name]["val_auc"] = round(float(metrics["val"]["auc"]), 4)
        out[name]["threshold"] = round(float(metrics["threshold"]), 4)
        print(run, name, out[name], flush=True)
    return out


def summarise(models: list[dict[str, Any]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for dataset in sorted({m["dataset"] for m in models}):
        mine = [m for m in models if m["dataset"] == dataset]
        entry: dict[str, Any] = {"models": len(mine)}
        for name in VIEWS:
            entry[name] = {
                k: round(statistics.mean(m[name][k] for m in mine), 4)
                for k in (*KEYS, "youden_j", "val_auc")
            }
            entry[name]["better_accuracy_than_none"] = sum(
                m[name]["accuracy"] > m["none"]["accuracy"] for m in mine
            )
        summary[dataset] = entry
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("models", nargs="+", type=Path, help="model folders kept by bench_protocol")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        models = [score_model(folder, Path(tmp)) for folder in args.models]
    write_result(
        NAME,
        {
            "description": "test-time views scored on held-out training images (a stratified "
            "quarter of the official train split, bench_protocol.carve) by models trained "
            "without them; temperature and Youden cut fitted on validation under the same views",
            "views": {name: tta.to_meta() for name, tta in VIEWS.items()},
            "models": models,
            "summary": summarise(models),
        },
    )


if __name__ == "__main__":
    main()
