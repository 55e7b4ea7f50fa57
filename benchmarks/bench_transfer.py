"""Transfer learning on real data: pre-train on PneumoniaMNIST (grey chest X-ray), fine-tune on
blood-cell crops from BCCD (RGB microscopy: RBC / WBC / platelets, official image-level split).

Reports the source model's own test metrics and, on the target, training from scratch vs
initialising the backbone from the source artifact (full fine-tuning and frozen backbone),
each with the same budget.

    python benchmarks/bench_transfer.py [--source-budget 180] [--target-budget 120]
"""

from __future__ import annotations

import argparse
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from PIL import Image

from benchmarks.common import SHARED, write_result
from medlens.data import load_manifest
from medlens.training.run import train_run

BCCD = SHARED / "bccd_blood_cell_detection/BCCD"
KEYS = ("auc", "accuracy", "sensitivity", "specificity", "f1")


def write_cell_crops(out: Path) -> Path:
    """``out/<split>/<class>/<image>_<k>.png`` for every usable box (file prefix = smear image)."""
    for split in ("train", "val", "test"):
        for stem in (BCCD / f"ImageSets/Main/{split}.txt").read_text().split():
            tree = ET.parse(BCCD / f"Annotations/{stem}.xml")
            image = Image.open(BCCD / f"JPEGImages/{stem}.jpg").convert("RGB")
            for k, obj in enumerate(tree.getroot().iter("object")):
                box = obj.find("bndbox")
                if box is None:
                    continue
                x0, y0, x1, y1 = (
                    int(float(box.findtext(t) or 0)) for t in ("xmin", "ymin", "xmax", "ymax")
                )
                if x1 - x0 < 4 or y1 - y0 < 4:  # the dataset's degenerate boxes
                    continue
                folder = out / split / (obj.findtext("name") or "unknown")
                folder.mkdir(parents=True, exist_ok=True)
                name = stem.replace("_", "")
                image.crop((x0, y0, x1, y1)).resize((32, 32)).save(folder / f"{name}_{k}.png")
    return out


def summary(metrics: dict[str, Any], plan: Any) -> dict[str, Any]:
    return {
        "test": {k: round(metrics["test"][k], 4) for k in KEYS},
        "ci": {k: metrics["test"]["ci"][k] for k in KEYS},
        "n_test": metrics["test"]["n"],
        "model": plan.model,
        "epochs_run": metrics["training"]["epochs_run"],
        "seconds": metrics["training"]["seconds"],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--source-budget", type=float, default=180.0)
    parser.add_argument("--target-budget", type=float, default=120.0)
    args = parser.parse_args(argv)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        source = train_run(
            load_manifest(SHARED / "pneumoniamnist/pneumoniamnist.npz"),
            work / "source",
            cache_dir=work / "cache",
            budget_s=args.source_budget,
            tensorboard=False,
        )
        results["source_pneumoniamnist"] = summary(source.metrics, source.plan)
        cells = load_manifest(write_cell_crops(work / "cells"))
        variants = {
            "target_from_scratch": {
                "model": source.plan.model,
                "model_options": source.plan.model_options,
            },
            "target_fine_tuned": {"init_from": str(source.model_dir)},
            "target_frozen_backbone": {"init_from": str(source.model_dir), "freeze_backbone": True},
        }
        for name, overrides in variants.items():
            run = train_run(
                cells,
                work / name,
                cache_dir=work / "cache",
                budget_s=args.target_budget,
                overrides=overrides,
                tensorboard=False,
            )
            results[name] = summary(run.metrics, run.plan)
    write_result(
        "transfer_learning",
        {
            "description": "pre-train on PneumoniaMNIST, fine-tune on BCCD blood-cell crops (3 classes, "
            "official image-level split, macro one-vs-rest metrics); same target budget for each variant",
            "source_budget_s": args.source_budget,
            "target_budget_s": args.target_budget,
            **results,
        },
    )


if __name__ == "__main__":
    main()
