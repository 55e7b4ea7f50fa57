"""Localisation and faithfulness of Grad-CAM / Grad-CAM++ on phantoms whose label is a nodule at
a known place: pointing game over nodule-positive test images and deletion area vs random maps.

A short CompactNet training on 240 chest phantoms (40 px, nodules 6-10 % of the size) first.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.common import write_result
from medlens.data import load_manifest
from medlens.data.synthetic import chest_dataset, write_chest_folder
from medlens.explain import cam_maps, energy_inside, faithfulness, pointing_game
from medlens.inference import load_artifact
from medlens.io import read_image
from medlens.training.run import train_run

N, SIZE, RADIUS, SEED = 240, 40, (0.06, 0.1), 5


def masks_by_file() -> dict[str, np.ndarray]:
    """The generator's nodule masks, keyed like ``write_chest_folder`` names its files."""
    data = chest_dataset(N, size=SIZE, seed=SEED, nodule_radius=RADIUS)
    seen: dict[str, int] = {}
    out = {}
    for mask, label, pid in zip(data.masks, data.labels, data.patient_ids, strict=True):
        seen[pid] = seen.get(pid, 0) + 1
        out[f"{'nodule' if label else 'normal'}/{pid}_{seen[pid]}.png"] = mask[0]
    return out


def main() -> None:
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        folder = write_chest_folder(root / "chest", N, size=SIZE, seed=SEED, nodule_radius=RADIUS)
        run = train_run(
            load_manifest(folder),
            root / "run",
            cache_dir=root / "cache",
            model="compactnet",
            overrides={
                "epochs": 15,
                "batch_size": 16,
                "model_options": {"widths": [8, 16, 32, 32]},
            },
            resamples=50,
            tensorboard=False,
        )
        results["test_auc"] = round(run.metrics["test"]["auc"], 4)
        artifact = load_artifact(run.model_dir)
        model, masks = artifact.members[0], masks_by_file()
        manifest = load_manifest(run.run_dir / "manifest.csv")
        rows = [r for r in manifest.rows if r["split"] == "test" and r["label"] == "nodule"]
        images = np.stack([artifact.preprocess(read_image(manifest.resolve(r))) for r in rows])
        truth = [masks[r["path"].split("chest/")[-1]] for r in rows]
        nodule = artifact.labels.classes.index("nodule")
        for method in ("gradcam", "gradcam++"):
            for layer in (model.target_layer, "features.stage3"):
                maps = cam_maps(
                    model, torch.from_numpy(images), method=method, class_index=nodule, layer=layer
                )
                scores = [
                    faithfulness(model, i, m, nodule) for i, m in zip(images, maps, strict=True)
                ]
                results[f"{method}@{layer}"] = {
                    "pointing_game": round(
                        float(
                            np.mean([pointing_game(m, t) for m, t in zip(maps, truth, strict=True)])
                        ),
                        3,
                    ),
                    "energy_inside": round(
                        float(
                            np.mean([energy_inside(m, t) for m, t in zip(maps, truth, strict=True)])
                        ),
                        3,
                    ),
                    "deletion_auc": round(float(np.mean([s.deletion_auc for s in scores])), 4),
                    "random_deletion_auc": round(
                        float(np.mean([s.random_deletion_auc for s in scores])), 4
                    ),
                    "flagged_fraction": round(float(np.mean([s.flagged for s in scores])), 3),
                }
        results["n_images"] = len(rows)
    description = (
        "Grad-CAM / Grad-CAM++ on chest phantoms with known nodules after a short CompactNet "
        "training: pointing game and energy inside the nodule masks, deletion areas vs random maps"
    )
    write_result("explain_phantoms", {"description": description, **results})


if __name__ == "__main__":
    main()
