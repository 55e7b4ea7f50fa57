"""One epoch over the preprocessed memmap cache vs decoding + preprocessing every epoch.

Data: the first 2,000 PneumoniaMNIST training images exported as PNG files (the way users bring
data), preprocessed by ZScore + Resize to 64x64, batches of 64.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from benchmarks.common import SHARED, summary, timed, write_result
from medlens.data import build_cache, load_manifest, load_sample
from medlens.io import read_medmnist
from medlens.transforms import Pipeline, Resize, ZScore

N_IMAGES = 2000
BATCH = 64
PIPELINE = Pipeline((ZScore(), Resize((64, 64))))


def export_pngs(root: Path) -> Path:
    split = read_medmnist(SHARED / "pneumoniamnist/pneumoniamnist.npz")["train"]
    for i in range(N_IMAGES):
        folder = root / str(int(split.labels[i, 0]))
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(split.images[i]).save(folder / f"img{i:05d}.png")
    return root


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        manifest = load_manifest(export_pngs(Path(tmp) / "png"))

        def decode_epoch() -> None:
            order = np.random.default_rng(0).permutation(len(manifest))
            for start in range(0, len(order), BATCH):
                batch = [
                    PIPELINE(load_sample(manifest, manifest.rows[i])).array
                    for i in order[start : start + BATCH]
                ]
                torch.from_numpy(np.stack(batch))

        build_times = timed(
            lambda: build_cache(manifest, PIPELINE, Path(tmp) / f"cache{np.random.randint(1e9)}"),
            1,
            warmup=0,
        )
        cached = build_cache(manifest, PIPELINE, Path(tmp) / "cache")
        indices = np.arange(len(manifest))

        def cached_epoch() -> None:
            for _ in cached.batches(indices, BATCH, generator=torch.Generator().manual_seed(0)):
                pass

        decode = summary(timed(decode_epoch, 3))
        cache = summary(timed(cached_epoch, 5))
    write_result(
        "cache_epoch",
        {
            "data": f"{N_IMAGES} PneumoniaMNIST train images as PNG, ZScore + Resize(64x64), batch {BATCH}",
            "decode_every_epoch": decode,
            "cached_epoch": cache,
            "cache_build_once": summary(build_times),
            "speedup_cached_over_decode": decode["median_s"] / cache["median_s"],
            "goal": ">= 10x",
        },
    )


if __name__ == "__main__":
    main()
