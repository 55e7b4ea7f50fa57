"""Localisation and faithfulness of every explanation method on phantoms whose label is a nodule
at a known place: pointing game, energy inside the nodule, deletion/insertion vs random maps.

A 20-epoch CompactNet training on 400 chest phantoms (48 px, nodule radius 6-10 % of the side)
first - the same setting as tests/integration/test_explain_phantoms.py, on all held-out images.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import write_result
from medlens.data import load_manifest
from medlens.data.synthetic import chest_dataset, write_chest_folder
from medlens.explain import METHODS, energy_inside, explain_batch, pointing_game
from medlens.inference import load_artifact
from medlens.io import read_image
from medlens.training.run import train_run

N, SIZE, RADIUS, SEED = 400, 48, (0.06, 0.1), 5


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
                "epochs": 20,
                "batch_size": 32,
                "model_options": {"widths": [16, 32, 64, 64]},
            },
            resamples=50,
            tensorboard=False,
        )
        results["test_auc"] = round(run.metrics["test"]["auc"], 4)
        artifact = load_artifact(run.model_dir)
        masks = masks_by_file()
        manifest = load_manifest(run.run_dir / "manifest.csv")
        rows = [r for r in manifest.rows if r["split"] != "train" and r["label"] == "nodule"]
        images = np.stack([artifact.preprocess(read_image(manifest.resolve(r))) for r in rows])
        truth = [masks[r["path"].split("chest/")[-1]] for r in rows]
        nodule = artifact.labels.classes.index("nodule")
        probs = artifact.probabilities(artifact.logits(images))
        for method in METHODS:
            began = time.perf_counter()
            found = explain_batch(
                artifact.members, images, [nodule] * len(images), artifact.labels.classes, probs,
                method=method,
            )  # fmt: skip
            seconds = (time.perf_counter() - began) / len(images)
            pairs = list(zip(found, truth, strict=True))
            results[method] = {
                "pointing_game": round(
                    float(np.mean([pointing_game(e.relevance, t) for e, t in pairs])), 3
                ),
                "energy_inside": round(
                    float(
                        np.mean([energy_inside(np.clip(e.relevance, 0, None), t) for e, t in pairs])
                    ),
                    3,
                ),
                "deletion_auc": round(
                    float(np.mean([e.faithfulness.deletion_auc for e in found])), 4
                ),
                "random_deletion_auc": round(
                    float(np.mean([e.faithfulness.random_deletion_auc for e in found])), 4
                ),
                "insertion_auc": round(
                    float(np.mean([e.faithfulness.insertion_auc for e in found])), 4
                ),
                "random_insertion_auc": round(
                    float(np.mean([e.faithfulness.random_insertion_auc for e in found])), 4
                ),
                "flagged_fraction": round(
                    float(np.mean([e.faithfulness.flagged for e in found])), 3
                ),
                "randomisation_similarity": round(
                    float(np.mean([e.randomisation_similarity or 0.0 for e in found])), 3
                ),
                "seconds_per_image_with_checks": round(seconds, 3),
            }
        results["n_images"] = len(rows)
    description = (
        "Each method on chest phantoms (48 px) with known nodules after a 20-epoch CompactNet "
        "training: pointing game (tolerance 15/224 of the side) and energy inside the nodule "
        "masks over the held-out nodule images, deletion/insertion areas vs random maps, "
        "similarity to the maps of randomised weights"
    )
    write_result("explain_phantoms", {"description": description, **results})


if __name__ == "__main__":
    main()
