"""Batch augmentation (medlens) vs MONAI dictionary transforms doing the same operations.

Operations: flip, rotation + scale + translation, elastic deformation, gamma, brightness /
contrast, Gaussian noise and blur, applied to images and masks (2D: 256 x 1x128x128; 3D: 32 x
1x48^3). MONAI runs its idiomatic per-sample Compose over a list of dicts.
"""

from __future__ import annotations

import math

import torch
from monai.transforms import (
    Compose,
    RandAdjustContrastd,
    RandAffined,
    RandFlipd,
    RandGaussianNoised,
    RandGaussianSmoothd,
    RandScaleIntensityd,
    RandShiftIntensityd,
)

from benchmarks.common import summary, timed, write_result
from medlens.transforms.augment import BatchAugment

CASES = {"2d": (256, (128, 128)), "3d": (32, (48, 48, 48))}


def monai_pipeline(nd: int) -> Compose:
    keys = ["image", "mask"]
    return Compose(
        [
            RandFlipd(keys, prob=0.5, spatial_axis=nd - 1),
            RandAffined(
                keys,
                prob=0.8,
                rotate_range=[math.radians(15)] * (1 if nd == 2 else 3),
                scale_range=[0.1] * nd,
                translate_range=[0.05 * 48] * nd,
                mode=["bilinear", "nearest"],
                padding_mode="border",
            ),
            RandAdjustContrastd("image", prob=0.8, gamma=(0.74, 1.35)),
            RandScaleIntensityd("image", factors=0.1, prob=0.8),
            RandShiftIntensityd("image", offsets=0.1, prob=0.8),
            RandGaussianNoised("image", prob=0.8, std=0.05),
            RandGaussianSmoothd(
                "image", sigma_x=(0.0, 1.0), sigma_y=(0.0, 1.0), sigma_z=(0.0, 1.0), prob=0.8
            ),
        ]
    )


def monai_elastic(nd: int) -> object:
    from monai.transforms import Rand2DElasticd, Rand3DElasticd

    if nd == 2:
        return Rand2DElasticd(
            ["image", "mask"],
            spacing=(32, 32),
            magnitude_range=(1, 2),
            prob=0.8,
            mode=["bilinear", "nearest"],
        )
    return Rand3DElasticd(
        ["image", "mask"],
        sigma_range=(5, 7),
        magnitude_range=(50, 100),
        prob=0.8,
        mode=["bilinear", "nearest"],
    )


def main() -> None:
    torch.set_num_threads(2)
    results = {}
    for name, (n, size) in CASES.items():
        nd = len(size)
        images = torch.rand(n, 1, *size)
        masks = (images > 0.7).long()
        ours = BatchAugment(
            spatial_dims=nd,
            flip_axes=(nd - 1,),
            rotate_deg=15,
            scale=0.1,
            translate=0.05,
            elastic_alpha=0.01,
            gamma=0.3,
            brightness=0.1,
            contrast=0.1,
            noise_std=0.05,
            blur_sigma=1.0,
            prob=0.8,
        )
        gen = torch.Generator().manual_seed(0)
        medlens_times = timed(lambda: ours(images, masks, generator=gen), 3)
        pipeline = monai_pipeline(nd)
        elastic = monai_elastic(nd)
        pipeline.set_random_state(0)
        samples = [{"image": images[i], "mask": masks[i]} for i in range(n)]

        def run_monai() -> None:
            out = [pipeline(elastic(s)) for s in samples]  # type: ignore[operator]
            torch.stack([o["image"] for o in out])

        monai_times = timed(run_monai, 2)
        m, mo = summary(medlens_times), summary(monai_times)
        results[name] = {
            "batch": [n, 1, *size],
            "medlens_batch": m,
            "monai_dict_transforms": mo,
            "speedup_medlens_over_monai": mo["median_s"] / m["median_s"],
        }
    write_result("augment", {"cases": results, "goal": ">= 2x"})


if __name__ == "__main__":
    main()
