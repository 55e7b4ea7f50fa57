"""Training throughput (images/s): medlens (memory-mapped cache + batch augmentation) vs an
idiomatic MONAI pipeline (Dataset + Compose of dictionary transforms + DataLoader), same model,
same optimizer, same augmentation settings, same PneumoniaMNIST images, in one run. Both train
in float32: the comparison is of the input pipelines, and the bfloat16 autocast medlens uses on
CPUs that support it would speed up the model's step alike for both."""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks.common import SHARED, write_result
from medlens.data import load_manifest
from medlens.data.labels import infer_labels
from medlens.models import create_model
from medlens.planning import Plan
from medlens.training import Trainer, prepare_data

N_TRAIN = 2048
BATCH = 64
OPTIONS = {"widths": [24, 48, 96, 192], "stem_stride": 1}


def medlens_epoch(work: Path) -> float:
    manifest = load_manifest(SHARED / "pneumoniamnist/pneumoniamnist.npz")
    keep = [r for r in manifest.rows if r["split"] == "train"][:N_TRAIN]
    keep += [r for r in manifest.rows if r["split"] == "val"][:64]
    manifest = type(manifest)(keep, manifest.root)
    labels = infer_labels(manifest)
    plan = Plan(
        labels=labels.to_dict(),
        spatial_dims=2,
        in_channels=1,
        input_size=[28, 28],
        preprocessing=[{"name": "zscore"}],
        model="compactnet",
        model_options=OPTIONS,
        batch_size=BATCH,
        epochs=1,
        mixed_precision=False,
        augmentation={
            "rotate_deg": 10.0,
            "scale": 0.1,
            "translate": 0.06,
            "contrast": 0.1,
            "brightness": 0.1,
            "prob": 0.8,
        },
    )
    data = prepare_data(manifest, labels, plan.pipeline(), work / "cache")
    trainer = Trainer(plan, data, work / "run", tensorboard=False)
    trainer._train_epoch(0)  # warm-up (allocator, kernels)
    start = time.perf_counter()
    trainer._train_epoch(1)
    return N_TRAIN / (time.perf_counter() - start)


def monai_epoch(num_workers: int) -> float:
    from monai.data import DataLoader, Dataset
    from monai.transforms import (
        Compose,
        EnsureTyped,
        NormalizeIntensityd,
        RandAdjustContrastd,
        RandAffined,
        RandShiftIntensityd,
    )

    raw = np.load(SHARED / "pneumoniamnist/pneumoniamnist.npz")
    items = [
        {
            "image": raw["train_images"][i][None].astype(np.float32),
            "label": int(raw["train_labels"][i, 0]),
        }
        for i in range(N_TRAIN)
    ]
    transform = Compose(
        [
            NormalizeIntensityd("image"),
            RandAffined(
                "image",
                prob=0.8,
                rotate_range=math.radians(10),
                scale_range=(0.1, 0.1),
                translate_range=(28 * 0.06, 28 * 0.06),
                padding_mode="border",
            ),
            RandShiftIntensityd("image", offsets=0.1, prob=0.8),
            RandAdjustContrastd("image", gamma=(0.9, 1.1), prob=0.8),
            EnsureTyped(["image", "label"], track_meta=False),
        ]
    )
    loader = DataLoader(
        Dataset(items, transform),
        batch_size=BATCH,
        shuffle=True,
        num_workers=num_workers,
        drop_last=False,
    )
    torch.manual_seed(0)
    model = create_model("compactnet", 2, 1, 2, **OPTIONS)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def epoch() -> None:
        model.train()
        for batch in loader:
            optimizer.zero_grad()
            F.cross_entropy(model(batch["image"]), batch["label"]).backward()
            optimizer.step()

    epoch()
    start = time.perf_counter()
    epoch()
    return N_TRAIN / (time.perf_counter() - start)


def main() -> None:
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        results["medlens_images_per_s"] = round(medlens_epoch(Path(tmp)), 1)
    for workers in (0, 2):
        results[f"monai_workers{workers}_images_per_s"] = round(monai_epoch(workers), 1)
    best_monai = max(v for k, v in results.items() if k.startswith("monai"))
    results["speedup_vs_best_monai"] = round(results["medlens_images_per_s"] / best_monai, 2)
    write_result(
        "training_throughput",
        {
            "description": f"one training epoch of {N_TRAIN} PneumoniaMNIST images (28x28), compactnet "
            f"{OPTIONS['widths']}, batch {BATCH}, AdamW, rotation/scale/translation/intensity augmentation",
            **results,
        },
    )


if __name__ == "__main__":
    main()
