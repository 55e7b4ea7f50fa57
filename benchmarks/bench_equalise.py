"""What the plan's equalisation of radiographs buys and costs (``planner.equalise_for``).

Invariance: each of the first 200 PneumoniaMNIST training images is given a gamma change (0.6
and 1.6: another exposure or processing curve), and the mean absolute difference between the
two versions is measured after min-max scaling alone and after CLAHE (tiles of half the image)
at clip limits 0.01 and 0.02 (the plan's), all in [0, 1].

Cost: the plan's preprocessing of one image with and without CLAHE, for a 28 px model input and
for a 224 px one (median of 50 calls each, interleaved).

    python benchmarks/bench_equalise.py
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np

from benchmarks.common import SHARED, commit, write_result
from medlens.io import MedicalImage
from medlens.transforms import CLAHE, MinMax, from_spec

NAME = "equalise"
GAMMAS = (0.6, 1.6)
CLIPS = (0.01, 0.02)
PLAN_CLAHE = {"name": "clahe", "clip_limit": 0.02, "kernel_fraction": 0.5}


def invariance(images: np.ndarray) -> dict[str, Any]:
    def moved(transform: Any, gamma: float) -> float:
        diffs = []
        for raw in images:
            x = MedicalImage(raw[None].astype(np.float32) / 255.0)
            y = MedicalImage(x.array**gamma)
            diffs.append(float(np.abs(transform(x).array - transform(y).array).mean()))
        return round(statistics.mean(diffs), 4)

    out: dict[str, Any] = {}
    for gamma in GAMMAS:
        row = {"min_max": moved(MinMax(), gamma)}
        for clip in CLIPS:
            row[f"clahe_clip_{clip}"] = moved(CLAHE(clip_limit=clip, kernel_fraction=0.5), gamma)
        out[f"gamma_{gamma}"] = row
    return out


def cost(size: int, rounds: int = 50) -> dict[str, float]:
    rng = np.random.default_rng(0)
    image = MedicalImage(rng.random((1, size, size)).astype(np.float32))
    tail = [
        {"name": "percentile_clip", "lower": 0.5, "upper": 99.5},
        {"name": "zscore", "nonzero": False},
    ]
    plans = {
        "without_ms": [from_spec(s) for s in tail],
        "with_clahe_ms": [from_spec(s) for s in (PLAN_CLAHE, *tail)],
    }
    times: dict[str, list[float]] = {k: [] for k in plans}
    for _ in range(rounds):
        for key, steps in plans.items():
            started = time.perf_counter()
            x = image
            for step in steps:
                x = step(x)
            times[key].append((time.perf_counter() - started) * 1000)
    return {k: round(statistics.median(v), 3) for k, v in times.items()}


def main() -> None:
    data = np.load(SHARED / "pneumoniamnist" / "pneumoniamnist.npz")
    write_result(
        NAME,
        {
            "commit": commit(),
            "description": "mean absolute change of a [0, 1] image under a gamma change, "
            "min-max scaled vs CLAHE (tiles of half the image); per-image preprocessing time "
            "with and without the plan's CLAHE",
            "invariance": invariance(data["train_images"][:200]),
            "cost_per_image": {f"{size}px": cost(size) for size in (28, 224)},
        },
    )


if __name__ == "__main__":
    main()
