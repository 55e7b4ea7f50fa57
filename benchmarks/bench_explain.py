"""Explanations: time per image of each method next to MONAI's GradCAM / OcclusionSensitivity on
the same model in the same run (2D 224x224 ResNet-18, 3D 64^3 CompactNet), then deletion /
insertion areas of each method on the PneumoniaMNIST test split after a short training.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.visualize import GradCAM, GradCAMpp, OcclusionSensitivity

from benchmarks.common import SHARED, summary, timed, write_result
from medlens.data import load_manifest
from medlens.explain import explain_batch, relevance_maps
from medlens.explain.faithfulness import faithfulness
from medlens.explain.occlusion import default_stride
from medlens.inference import load_artifact
from medlens.models import create_model
from medlens.training.run import train_run

CASES = {
    "2d_224_resnet18": ("resnet18", 2, (224, 224), {}),
    "3d_64_compactnet": ("compactnet", 3, (64, 64, 64), {"stem_stride": 2}),
}


def timings() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for case, (name, dims, shape, options) in CASES.items():
        torch.manual_seed(0)
        model = create_model(name, dims, 1, 2, **options).eval()
        x = torch.randn(1, 1, *shape)
        stride = default_stride(shape)
        patch = 2 * stride[0]
        rows: dict[str, Any] = {}
        for method in ("gradcam", "gradcam++", "occlusion", "ig"):
            rows[f"medlens_{method}"] = summary(
                timed(lambda m=method: relevance_maps([model], x, method=m, class_index=1), 3)
            )
        maps = relevance_maps([model], x, method="gradcam", class_index=1)
        rows["medlens_faithfulness_check"] = summary(
            timed(lambda: faithfulness(model, x[0].numpy(), maps[0], 1), 3)
        )
        for label, cls in (("monai_gradcam", GradCAM), ("monai_gradcam++", GradCAMpp)):
            cam = cls(nn_module=model, target_layers=model.target_layer)
            rows[label] = summary(timed(lambda c=cam: c(x, class_idx=1), 3))
        occlusion = OcclusionSensitivity(
            nn_module=model,
            mask_size=patch,
            overlap=0.5,
            n_batch=64 if dims == 2 else 8,
            mode="mean_img",
            verbose=False,
        )
        rows["monai_occlusion"] = summary(timed(lambda: occlusion(x), 3))
        rows["occlusion_settings"] = {"patch": patch, "stride": stride[0]}
        for ours, theirs in (
            ("gradcam", "monai_gradcam"),
            ("gradcam++", "monai_gradcam++"),
            ("occlusion", "monai_occlusion"),
        ):
            rows[f"speedup_{ours}_vs_monai"] = round(
                rows[theirs]["median_s"] / rows[f"medlens_{ours}"]["median_s"], 2
            )
        out[case] = rows
    return out


def pneumonia_faithfulness() -> dict[str, Any]:
    data = SHARED / "pneumoniamnist" / "pneumoniamnist.npz"
    with tempfile.TemporaryDirectory() as tmp:
        run = train_run(
            load_manifest(data),
            Path(tmp) / "run",
            cache_dir=Path(tmp) / "cache",
            budget_s=180,
            resamples=200,
            tensorboard=False,
        )
        artifact = load_artifact(run.model_dir)
        manifest = load_manifest(run.run_dir / "manifest.csv")
        from medlens.io import read_image

        test = [r for r in manifest.rows if r["split"] == "test"]  # the whole test split
        images = np.stack([artifact.preprocess(read_image(manifest.resolve(r))) for r in test])
        probs = artifact.probabilities(artifact.logits(images))
        decided = [artifact.labels.classes.index(d) for d in artifact.decide(probs)]
        result: dict[str, Any] = {
            "test_auc": round(run.metrics["test"]["auc"], 4),
            "model": run.plan.model,
            "model_options": run.plan.model_options,
            "n_images": len(test),
        }
        for method in ("gradcam", "gradcam++", "occlusion", "ig"):
            found = explain_batch(
                artifact.members,
                images,
                decided,
                artifact.labels.classes,
                probs,
                method=method,
            )

            def stat(values: list[float]) -> dict[str, float]:
                return {
                    "mean": round(float(np.mean(values)), 4),
                    "sd": round(float(np.std(values)), 4),
                }

            result[method] = {
                "deletion_auc": stat([e.faithfulness.deletion_auc for e in found]),
                "random_deletion_auc": stat([e.faithfulness.random_deletion_auc for e in found]),
                "insertion_auc": stat([e.faithfulness.insertion_auc for e in found]),
                "random_insertion_auc": stat([e.faithfulness.random_insertion_auc for e in found]),
                "flagged_fraction": round(
                    float(np.mean([e.faithfulness.flagged for e in found])), 3
                ),
                "randomisation_similarity": stat(
                    [float(e.randomisation_similarity or 0.0) for e in found]
                ),
            }
        return result


def main() -> None:
    description = (
        "Seconds per explanation (batch of 1) for each medlens method vs MONAI GradCAM / "
        "GradCAM++ / OcclusionSensitivity (same model, same patch and overlap, mean fill) on "
        "untrained weights; then deletion/insertion areas (mean, SD) on the whole PneumoniaMNIST "
        "test split after a 3-minute training, with random-map baselines"
    )
    write_result(
        "explain",
        {
            "description": description,
            "timing": timings(),
            "pneumoniamnist_faithfulness": pneumonia_faithfulness(),
        },
    )


if __name__ == "__main__":
    main()
