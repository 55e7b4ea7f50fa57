"""A short real training run: PneumoniaMNIST (official split) through the library API."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medlens.data import load_manifest
from medlens.explain.outputs import explain_inputs
from medlens.inference import load_artifact
from medlens.inference.predictor import InputItem, predict_items
from medlens.training.run import train_run

pytestmark = [pytest.mark.realdata, pytest.mark.integration]


def test_pneumoniamnist_short_run_reaches_auc_090(shared_data: Path, tmp_path: Path) -> None:
    manifest = load_manifest(shared_data / "pneumoniamnist/pneumoniamnist.npz")
    result = train_run(
        manifest,
        tmp_path / "run",
        cache_dir=tmp_path / "cache",
        budget_s=60,
        # two epochs of the smallest candidate: a reduced form of the benchmark
        overrides={
            "epochs": 2,
            "model": "compactnet",
            "model_options": {"widths": [16, 32, 64, 128]},
        },
        resamples=200,
        tensorboard=False,
    )
    test = result.metrics["test"]
    assert test["n"] == 624  # the official test split, untouched
    assert test["auc"] > 0.90, test
    saved = json.loads((tmp_path / "run/metrics.json").read_text())
    assert saved["test"]["auc"] == test["auc"]
    # the artifact predicts single files exactly like the evaluation did
    artifact = load_artifact(result.model_dir)
    rows = list(
        predict_items(artifact, [InputItem(Path(f"{manifest.root}/pneumoniamnist.npz#test/0"))])
    )
    assert rows[0]["prediction"] in ("normal", "pneumonia")
    # and it explains real test images: overlays and faithfulness figures for every method
    items = [InputItem(Path(f"{manifest.root}/pneumoniamnist.npz#test/{i}")) for i in range(4)]
    for method in ("gradcam", "occlusion", "ig"):
        out = tmp_path / method
        entries = explain_inputs(artifact, items, out, method=method)
        assert len(entries) == 4 and all("error" not in e for e in entries)
        for entry in entries:
            assert (out / entry["overlay"]).stat().st_size > 1000
            f = entry["faithfulness"]
            assert 0 <= f["deletion_auc"] <= 1 and 0 <= f["random_deletion_auc"] <= 1
            assert entry["randomisation_similarity"] is not None
