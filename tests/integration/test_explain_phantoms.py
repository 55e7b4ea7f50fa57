"""Explanations of a model trained on phantoms whose label is a nodule at a known place:
the maps must find the nodule, beat random maps on deletion, and fail under random weights."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from medlens.data import load_manifest
from medlens.data.synthetic import chest_dataset, write_chest_folder
from medlens.explain import (
    RANDOMISATION_LIMIT,
    explain_batch,
    pointing_game,
    randomised_copy,
    relevance_maps,
)
from medlens.inference import Artifact, load_artifact
from medlens.io import read_image
from medlens.training.run import train_run

pytestmark = pytest.mark.integration

N, SIZE, SEED, RADIUS = 400, 48, 5, (0.06, 0.1)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("explain")
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
            "max_members": 1,  # one model: its 20 epochs leave most of the budget
        },
        resamples=20,
        tensorboard=False,
    )
    assert run.metrics["test"]["auc"] > 0.95, "the phantom model did not learn"
    return run.run_dir, folder


@pytest.fixture(scope="module")
def nodules(trained: tuple[Path, Path]) -> tuple[Artifact, np.ndarray, list[np.ndarray], int]:
    """The held-out (val + test) nodule images, preprocessed, with their true masks."""
    run_dir, _ = trained
    data = chest_dataset(N, size=SIZE, seed=SEED, nodule_radius=RADIUS)
    seen: dict[str, int] = {}
    masks = {}
    for mask, label, pid in zip(data.masks, data.labels, data.patient_ids, strict=True):
        seen[pid] = seen.get(pid, 0) + 1
        masks[f"{'nodule' if label else 'normal'}/{pid}_{seen[pid]}.png"] = mask[0]
    artifact = load_artifact(run_dir / "model")
    manifest = load_manifest(run_dir / "manifest.csv")
    rows = [r for r in manifest.rows if r["split"] != "train" and r["label"] == "nodule"]
    images = np.stack([artifact.preprocess(read_image(manifest.resolve(r))) for r in rows])
    truth = [masks[r["path"].split("chest/")[-1]] for r in rows]
    return artifact, images, truth, artifact.labels.classes.index("nodule")


@pytest.mark.parametrize("method", ["gradcam", "occlusion"])
def test_maps_find_the_nodule_and_beat_random_maps(
    nodules: tuple[Artifact, np.ndarray, list[np.ndarray], int], method: str
) -> None:
    artifact, images, truth, nodule = nodules
    images, truth = images[:32], truth[:32]
    probs = artifact.probabilities(artifact.logits(images))
    found = explain_batch(
        artifact.members,
        images,
        [nodule] * len(images),
        artifact.labels.classes,
        probs,
        method=method,
    )
    hits = np.mean([pointing_game(e.relevance, t) for e, t in zip(found, truth, strict=True)])
    assert hits >= 0.8, f"{method}: pointing game {hits:.2f}"
    deletion = np.mean([e.faithfulness.deletion_auc for e in found])
    random = np.mean([e.faithfulness.random_deletion_auc for e in found])
    assert deletion < random, f"{method}: deletion {deletion:.3f} vs random {random:.3f}"
    similarity = np.mean([e.randomisation_similarity for e in found])
    assert similarity < RANDOMISATION_LIMIT
    # and the same maps from randomised weights no longer find the nodule
    shuffled = [randomised_copy(m, seed=1) for m in artifact.members]
    random_maps = relevance_maps(
        shuffled, torch.from_numpy(images), method=method, class_index=nodule
    )
    random_hits = np.mean([pointing_game(m, t) for m, t in zip(random_maps, truth, strict=True)])
    assert random_hits < hits - 0.3, f"{method}: random weights still point ({random_hits:.2f})"


def _medlens(*args: str) -> None:
    from medlens.cli.main import main

    sys.argv = ["medlens", *args]
    try:
        main()
    except SystemExit as exc:
        assert not exc.code, f"medlens {' '.join(args)} exited {exc.code}"


def test_cli_writes_overlays_maps_and_faithfulness(
    trained: tuple[Path, Path], tmp_path: Path
) -> None:
    run_dir, folder = trained
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    inputs = [*sorted((folder / "nodule").glob("*.png"))[:2], broken]
    out = tmp_path / "maps"
    _medlens(
        "explain", str(run_dir / "model"), *map(str, inputs), "--out", str(out),
        "--method", "gradcam++", "--class", "nodule",
    )  # fmt: skip
    document = json.loads((out / "explanations.json").read_text())
    entries = document["explanations"]
    assert [("error" in e) for e in entries] == [False, False, True]
    assert "broken.png" in entries[2]["error"]
    for entry in entries[:2]:
        assert entry["class"] == "nodule" and entry["method"] == "gradcam++"
        assert (out / entry["overlay"]).read_bytes().startswith(b"\x89PNG")
        assert {Path(m).suffix for m in entry["maps"]} == {".npy", ".png"}
        relevance = np.load(out / entry["maps"][0])
        assert relevance.shape == (SIZE, SIZE)
        f = entry["faithfulness"]
        assert {"deletion_auc", "insertion_auc", "random_deletion_auc"} <= set(f)
        assert isinstance(entry["passes_randomisation_check"], bool)
    assert "gradcam++" in (out / "index.html").read_text()


def test_cli_permutation_importance(trained: tuple[Path, Path], tmp_path: Path) -> None:
    run_dir, _ = trained
    out = tmp_path / "importance"
    manifest = str(run_dir / "manifest.csv")
    _medlens(
        "explain", str(run_dir / "model"), manifest, "--permutation", "--out", str(out),
        "--grid", "2", "--repeats", "2",
    )  # fmt: skip
    document = json.loads((out / "importance.json").read_text())
    assert document["baseline_auc"] > 0.9 and len(document["regions"]) == 4
    assert all(len(r["repeats"]) == 2 for r in document["regions"])
    assert (out / "importance.png").read_bytes().startswith(b"\x89PNG")
    assert (out / "importance.csv").read_text().startswith("region,auc_drop,std")


def test_cli_unknown_class_is_one_line(
    trained: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir, folder = trained
    from medlens.cli.main import main

    image = sorted((folder / "nodule").glob("*.png"))[0]
    sys.argv = ["medlens", "explain", str(run_dir / "model"), str(image), "--class", "nodul"]
    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code != 0
    err = capsys.readouterr().err
    assert "did you mean 'nodule'" in err and "Traceback" not in err
