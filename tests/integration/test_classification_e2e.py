"""End to end on synthetic phantoms through the CLI: plan -> train -> evaluate -> predict -> export."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from medlens.data.synthetic import write_chest_folder
from medlens.inference.providers import bf16_available
from medlens.planning import Plan

pytestmark = pytest.mark.integration

#: one model: 12 epochs finish well inside the budget, which would otherwise train ensemble
#: members (tested on their own below)
OVERRIDES = [
    "--set",
    "max_members=1",
    "--set",
    "epochs=12",
    "--set",
    "model_options.widths=[8,16,32,32]",
    "--set",
    "batch_size=16",
]


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_chest_folder(
        tmp_path_factory.mktemp("e2e") / "chest", 240, size=40, seed=3, nodule_radius=(0.06, 0.1)
    )


@pytest.fixture(scope="module")
def trained(
    phantoms: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, object]]:
    import sys

    from medlens.cli.main import main

    out = tmp_path_factory.mktemp("run")
    plan = out / "plan.json"
    for args in (
        ["plan", str(phantoms), "--out", str(plan), "--budget", "10m", *OVERRIDES],
        ["train", str(phantoms), "--out", str(out / "run"), "--plan", str(plan)],
    ):
        sys.argv = ["medlens", *args]
        try:
            main()
        except SystemExit as exc:
            assert not exc.code, f"medlens {' '.join(args)} exited {exc.code}"
    metrics = json.loads((out / "run/metrics.json").read_text())
    return out / "run", metrics


def test_training_learned_and_wrote_everything(trained: tuple[Path, dict[str, object]]) -> None:
    run, metrics = trained
    test = metrics["test"]
    assert isinstance(test, dict)
    assert test["auc"] > 0.8, f"the model did not learn: test AUC {test['auc']}"
    for key in ("auc", "accuracy", "sensitivity", "specificity", "f1"):
        low, high = test["ci"][key]
        assert low <= test[key] <= high
    assert 0 < float(metrics["threshold"]) < 1 and metrics["threshold_method"] == "youden"
    for name in (
        "plan.json",
        "metrics.json",
        "report.html",
        "history.csv",
        "manifest.csv",
        "model/model.json",
        "model/weights.safetensors",
        "model/plan.json",
    ):
        assert (run / name).is_file(), name
    assert list((run / "tensorboard").iterdir())
    html = (run / "report.html").read_text()
    for section in ("ROC", "Confusion matrix", "calibration", "Learning curves", "Test cases"):
        assert section in html
    assert html.count("data:image/png;base64") >= 4
    meta = json.loads((run / "model/model.json").read_text())
    assert meta["labels"]["classes"] == ["nodule", "normal"]
    assert meta["name"] == "run"  # served as /v1/models/run/predict
    assert meta["data_hash"] and meta["versions"]["torch"]
    assert meta["operating_point"]["threshold"] == metrics["threshold"]
    # 40 px phantoms: scored over the 9 one-pixel shifts, and the artifact predicts the same way
    training = metrics["training"]
    assert isinstance(training, dict)
    assert meta["operating_point"]["tta_shift"] == 1 == training["tta_shift"]
    assert isinstance(training["preprocessing_s"], float) and training["preprocessing_s"] >= 0
    # phantoms of one generator: no split is told apart from training's (classes with 20
    # images or more in both are compared)
    shifts = metrics["shift"]
    assert isinstance(shifts, list) and shifts and not any(s["flagged"] for s in shifts)
    assert "Split shift" in html and "No split differs" in html
    # the training images' summaries (pixels, the members' features): stored with the model,
    # flagged shares in metrics.json
    assert (run / "model" / meta["typicality"]["file"]).is_file() and meta["typicality"][
        "embedding"
    ]
    typicality = metrics["typicality"]
    assert (
        isinstance(typicality, dict) and typicality["threshold"] == meta["typicality"]["threshold"]
    )
    assert 0 <= typicality["unlike_training"]["test"] <= 0.2 and "unlike the training" in html
    assert typicality["features"] is True and "or in the model's features" in html


def test_evaluate_reuses_the_frozen_operating_point(
    trained: tuple[Path, dict[str, object]],
    phantoms: Path,
    run_cli: Callable[..., object],
    tmp_path: Path,
) -> None:
    run, metrics = trained
    result = run_cli(
        "evaluate",
        str(run / "model"),
        str(run / "manifest.csv"),
        "--out",
        str(tmp_path),
        "--resamples",
        "200",
    )
    assert result.code == 0, result.err  # type: ignore[attr-defined]
    again = json.loads((tmp_path / "metrics.json").read_text())
    assert again["threshold"] == metrics["threshold"]
    assert again["test"]["auc"] == pytest.approx(metrics["test"]["auc"], abs=1e-6)
    assert (tmp_path / "report.html").is_file()


def test_evaluate_decodes_only_the_rows_it_scores(
    trained: tuple[Path, dict[str, object]], tmp_path: Path
) -> None:
    from collections import Counter

    from medlens.data import Manifest
    from medlens.errors import ConfigError
    from medlens.evaluation.artifact_eval import evaluate_artifact
    from medlens.inference import load_artifact
    from medlens.models.tta import TTA
    from medlens.training import prepare_data

    run, metrics = trained
    artifact = load_artifact(run / "model")
    manifest = Manifest.read(run / "manifest.csv")
    splits = Counter(r["split"] for r in manifest)
    found, data, _ = evaluate_artifact(
        artifact,
        manifest,
        split="test",
        cache_dir=tmp_path / "fresh",
        resamples=50,
        trained_on=manifest,  # the same data: no training images are added for the shift
    )
    assert len(data.manifest) == splits["test"] + splits["val"] < len(manifest)
    assert found["shift"] == []  # no training images to compare with
    test = metrics["test"]
    assert isinstance(test, dict) and found["test"]["auc"] == pytest.approx(test["auc"], abs=1e-6)
    # the whole data already cached, as training leaves it: that cache is used, nothing rebuilt
    whole = tmp_path / "whole"
    prepare_data(manifest, artifact.labels, artifact.pipeline, whole, check_leakage=False)
    found, data, _ = evaluate_artifact(
        artifact, manifest, split="test", cache_dir=whole, resamples=50
    )
    assert len(data.manifest) == len(manifest) and found["shift"] == metrics["shift"]
    assert len([p for p in whole.iterdir() if p.is_dir()]) == 1
    # the same share unlike the training images as training measured; with flips added to the
    # views (--tta), the features still come from the views the summary was scaled with
    shares = metrics["typicality"]
    assert isinstance(shares, dict)
    assert found["typicality"]["unlike_training"]["test"] == shares["unlike_training"]["test"]
    _, data, scores = evaluate_artifact(
        artifact, manifest, split="test", cache_dir=whole, resamples=50, tta=TTA((-1,), 1)
    )
    assert scores.embedding is not None
    np.testing.assert_allclose(scores.embedding, artifact.embeddings(data.images(scores.indices)))
    with pytest.raises(ConfigError, match="no rows in split 'holdout'"):
        evaluate_artifact(artifact, manifest, split="holdout", cache_dir=whole)


def test_evaluating_an_external_set_compares_it_with_the_training_images(
    trained: tuple[Path, dict[str, object]], run_cli: Callable[..., object], tmp_path: Path
) -> None:
    import shutil
    from collections import Counter

    from medlens.data import Manifest

    run, _ = trained
    manifest = Manifest.read(run / "manifest.csv")
    site2 = tmp_path / "site2"
    for row in manifest:
        if row["split"] != "train":  # another site's images: these were never trained on
            (site2 / row["label"]).mkdir(parents=True, exist_ok=True)
            shutil.copy(manifest.resolve(row), site2 / row["label"])
    result = run_cli("evaluate", str(run / "model"), str(site2), "--out", str(tmp_path / "ev"))
    assert result.code == 0, result.err  # type: ignore[attr-defined]
    found = json.loads((tmp_path / "ev/metrics.json").read_text())
    train = Counter(r["label"] for r in manifest if r["split"] == "train")
    site = Counter(r["label"] for r in manifest if r["split"] != "train")
    assert found["test"]["n"] == sum(site.values())
    # one generator made both: compared class by class, and alike
    assert [(s["label"], s["n"], s["n_reference"]) for s in found["shift"]] == [
        (label, site[label], train[label]) for label in sorted(train)
    ]
    assert not any(s["flagged"] for s in found["shift"])
    # and how many of its images are unlike the training images: few, as they are alike
    assert 0 <= found["typicality"]["unlike_training"]["test"] <= 0.2
    assert "Images unlike the training images" in (tmp_path / "ev/report.html").read_text()
    # a site whose images are noise: most are flagged, and evaluate says so
    noisy = tmp_path / "site3"
    rng = np.random.default_rng(0)
    for label in train:
        (noisy / label).mkdir(parents=True)
        for i in range(12):
            pixels = rng.integers(0, 255, (40, 40)).astype(np.uint8)
            Image.fromarray(pixels).save(noisy / label / f"n{i}.png")
    result = run_cli("evaluate", str(run / "model"), str(noisy), "--out", str(tmp_path / "ev3"))
    assert result.code == 0, result.err  # type: ignore[attr-defined]
    shares = json.loads((tmp_path / "ev3/metrics.json").read_text())["typicality"]
    assert shares["unlike_training"]["test"] == 1.0
    out = " ".join(result.out.split())  # type: ignore[attr-defined]
    assert "100 % of the test images are unlike the training images" in out


def test_predict_writes_probabilities_and_decisions(
    trained: tuple[Path, dict[str, object]],
    phantoms: Path,
    run_cli: Callable[..., object],
    tmp_path: Path,
) -> None:
    run, _ = trained
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    out = tmp_path / "p.csv"
    result = run_cli(
        "predict",
        str(run / "model"),
        str(phantoms / "nodule"),
        str(tmp_path / "broken.png"),
        "--out",
        str(out),
    )
    assert result.code == 0, result.err  # type: ignore[attr-defined]
    rows = list(csv.DictReader(out.open()))
    good = [r for r in rows if not r.get("error")]
    assert len(good) == len(list((phantoms / "nodule").glob("*.png")))
    assert all(abs(float(r["p_nodule"]) + float(r["p_normal"]) - 1) < 1e-5 for r in good)
    assert sum(r["prediction"] == "nodule" for r in good) > 0.7 * len(good)
    assert any("broken.png" in r["input"] and r["error"] for r in rows)
    # the table leads with the failure (the input last on the command line), then the tally
    out_text = " ".join(result.out.split())  # type: ignore[attr-defined]
    assert out_text.index("corrupt or unsupported") < out_text.index("│ nodule │")
    assert f"20 of {len(rows)} shown" in out_text
    tally = sum(r["prediction"] == "nodule" for r in good)
    assert f"nodule {tally}" in out_text and "1 input(s) could not be read" in out_text
    as_json = tmp_path / "p.json"
    noise = tmp_path / "noise.png"  # nothing like a chest phantom
    pixels = np.random.default_rng(0).integers(0, 255, (40, 40)).astype(np.uint8)
    Image.fromarray(pixels).save(noise)
    called = run_cli(
        "predict", str(run / "model"), str(phantoms / "normal"), str(noise), "--out", str(as_json)
    )
    assert called.code == 0  # type: ignore[attr-defined]
    payload = json.loads(as_json.read_text())
    assert payload["model"]["classes"] == ["nodule", "normal"] and payload["predictions"]
    *phantom_rows, noise_row = payload["predictions"]
    assert noise_row["input"].endswith("noise.png") and noise_row["unlike_training"] is True
    flagged = sum(r["unlike_training"] for r in phantom_rows)
    assert flagged <= 0.1 * len(phantom_rows)  # the training images' own kind: typical
    assert {"distance_from_training", "unlike_training"} <= set(good[0])  # the CSV has them too


def test_export_onnx_reports_parity(
    trained: tuple[Path, dict[str, object]], run_cli: Callable[..., object]
) -> None:
    run, _ = trained
    result = run_cli("export", str(run / "model"), "--onnx")
    assert result.code == 0, result.err  # type: ignore[attr-defined]
    assert (run / "model/model.onnx").is_file()
    assert "max |difference|" in result.out  # type: ignore[attr-defined]


def test_int8_export_keeps_the_decisions(
    trained: tuple[Path, dict[str, object]],
    phantoms: Path,
    run_cli: Callable[..., object],
    tmp_path: Path,
) -> None:
    import shutil

    run, _ = trained
    model = tmp_path / "model"
    shutil.copytree(run / "model", model)
    refused = run_cli("export", str(model), "--int8")
    assert refused.code == 2 and "--calibration" in refused.err  # type: ignore[attr-defined]
    result = run_cli("export", str(model), "--int8", "--calibration", str(run / "manifest.csv"))
    assert result.code == 0, result.err  # type: ignore[attr-defined]
    report = json.loads((model / "quantization.json").read_text())
    # calibrated on the validation rows, checked on the test rows
    assert report["calibration_images"] > 0 and report["check_images"] > 0
    assert report["decision_agreement"] >= 0.9, report
    assert abs(report["auc_int8"] - report["auc_fp32"]) <= 0.03, report
    rows = {}
    for precision in ("fp32", "int8"):
        out = tmp_path / f"{precision}.csv"
        args = ("predict", str(model), str(phantoms / "nodule"), "--out", str(out))
        done = run_cli(*args, "--precision", precision)
        assert done.code == 0, done.err  # type: ignore[attr-defined]
        rows[precision] = [r["prediction"] for r in csv.DictReader(out.open())]
    same = sum(a == b for a, b in zip(rows["fp32"], rows["int8"], strict=True))
    assert same >= 0.9 * len(rows["fp32"])
    # weights changed after quantization: the stale INT8 model is refused, not used
    weights = model / json.loads((model / "model.json").read_text())["members"][0]
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")
    stale = run_cli("predict", str(model), str(phantoms / "nodule"), "--precision", "int8")
    assert stale.code == 2 and "other weights" in stale.err  # type: ignore[attr-defined]


@pytest.mark.skipif(not bf16_available(), reason="needs OpenVINO and a CPU with native bf16")
def test_bf16_is_checked_before_it_serves(
    trained: tuple[Path, dict[str, object]],
    phantoms: Path,
    run_cli: Callable[..., object],
    tmp_path: Path,
) -> None:
    import shutil

    run, _ = trained
    model = tmp_path / "model"
    shutil.copytree(run / "model", model)
    args = ("predict", str(model), str(phantoms / "nodule"))
    unchecked = run_cli(*args, "--out", str(tmp_path / "x.csv"), "--precision", "bf16")
    assert unchecked.code == 2 and "--bf16 --calibration" in unchecked.err  # type: ignore[attr-defined]
    result = run_cli("export", str(model), "--bf16", "--calibration", str(run / "manifest.csv"))
    assert result.code == 0, result.err  # type: ignore[attr-defined]
    report = json.loads((model / "bf16.json").read_text())
    assert report["check_images"] > 0 and report["decision_agreement"] >= 0.9, report
    assert abs(report["auc_bf16"] - report["auc_fp32"]) <= 0.01, report
    rows = {}
    for precision in ("fp32", "bf16"):
        out = tmp_path / f"{precision}.csv"
        done = run_cli(*args, "--out", str(out), "--precision", precision)
        assert done.code == 0, done.err  # type: ignore[attr-defined]
        rows[precision] = [r["prediction"] for r in csv.DictReader(out.open())]
    same = sum(a == b for a, b in zip(rows["fp32"], rows["bf16"], strict=True))
    assert same >= 0.9 * len(rows["fp32"])


def test_fine_tuning_a_frozen_backbone_from_an_artifact(
    trained: tuple[Path, dict[str, object]],
    phantoms: Path,
    run_cli: Callable[..., object],
    tmp_path: Path,
) -> None:
    from medlens.inference import load_artifact

    run, _ = trained
    out = tmp_path / "tuned"
    init = ("--init-from", str(run / "model"), "--freeze-backbone")
    args = ("train", str(phantoms), "--out", str(out), "--budget", "2m", *init)
    result = run_cli(*args, "--set", "epochs=2", "--set", "max_members=1")
    assert result.code == 0, result.err  # type: ignore[attr-defined]
    metrics = json.loads((out / "metrics.json").read_text())
    # two epochs show the pipeline, not the quality (test AUC 0.45 in one CI run, > 0.8 here)
    assert metrics["training"]["epochs_run"] == [2] and 0 <= metrics["test"]["auc"] <= 1
    assert "Test cases" in (out / "report.html").read_text()  # Grad-CAM through frozen layers
    plan = Plan.load(out / "plan.json")
    assert plan.freeze_backbone and plan.init_from == str(run / "model")
    source, tuned = (load_artifact(p).members[0] for p in (run / "model", out / "model"))
    assert tuned.spec() == source.spec()  # the pre-trained architecture, kept
    frozen = dict(source.features.named_parameters())
    for name, value in tuned.features.named_parameters():
        assert torch.equal(value, frozen[name]), f"backbone parameter {name} moved"


def test_incompatible_artifacts_are_refused(
    trained: tuple[Path, dict[str, object]], run_cli: Callable[..., object], tmp_path: Path
) -> None:
    import shutil

    run, _ = trained
    newer = tmp_path / "newer"
    shutil.copytree(run / "model", newer)
    meta = json.loads((newer / "model.json").read_text())
    meta["format_version"] = 99
    (newer / "model.json").write_text(json.dumps(meta))
    result = run_cli("predict", str(newer), str(run / "manifest.csv"))
    assert result.code == 2 and "newer than this medlens reads" in result.err  # type: ignore[attr-defined]
    meta["format_version"] = 1
    meta["architecture"]["options"]["widths"] = [4, 4, 4, 4]
    (newer / "model.json").write_text(json.dumps(meta))
    result = run_cli("export", str(newer))
    assert result.code == 2 and "do not fit the architecture" in result.err  # type: ignore[attr-defined]
    assert "Traceback" not in result.err  # type: ignore[attr-defined]


def test_bad_training_inputs_get_one_line_errors(
    run_cli: Callable[..., object], tmp_path: Path
) -> None:
    one_class = write_chest_folder(tmp_path / "one", 6, size=16)
    shutil_rm = __import__("shutil").rmtree
    for folder in one_class.iterdir():
        if folder.name == "normal":
            shutil_rm(folder)
    result = run_cli("train", str(one_class), "--out", str(tmp_path / "r"))
    assert result.code == 2 and "only one class" in result.err  # type: ignore[attr-defined]
    result = run_cli("train", str(tmp_path / "missing"), "--out", str(tmp_path / "r"))
    assert result.code == 2 and "not found" in result.err  # type: ignore[attr-defined]
    result = run_cli("train", str(one_class), "--out", str(tmp_path / "r"), "--budget", "soon")
    assert result.code == 2 and "budget" in result.err  # type: ignore[attr-defined]


def test_a_trained_run_is_not_overwritten_by_accident(
    run_cli: Callable[..., object], trained: tuple[Path, dict[str, object]], phantoms: Path
) -> None:
    run, _ = trained
    before = (run / "model/model.json").stat().st_mtime_ns
    result = run_cli("train", str(phantoms), "--out", str(run), "--budget", "10s")
    assert result.code == 2 and "already holds a trained model" in result.err  # type: ignore[attr-defined]
    assert "--overwrite" in result.err  # type: ignore[attr-defined]
    assert (run / "model/model.json").stat().st_mtime_ns == before


def test_cross_validation_ships_an_ensemble(phantoms: Path, tmp_path: Path) -> None:
    from medlens.data import load_manifest
    from medlens.inference import load_artifact
    from medlens.training.run import train_run

    result = train_run(
        load_manifest(phantoms),
        tmp_path / "cv",
        cache_dir=tmp_path / "cache",
        model="compactnet",
        folds=2,
        overrides={"epochs": 3, "batch_size": 16, "model_options": {"widths": [8, 8, 16, 16]}},
        resamples=100,
        tensorboard=False,
    )
    assert result.metrics["training"]["folds"] == 2 and len(result.results) == 2
    assert result.plan.folds == 2
    assert (tmp_path / "cv/fold0/history.csv").is_file() and (
        tmp_path / "cv/fold1/history.csv"
    ).is_file()
    # the operating point comes from out-of-fold predictions on every non-test row
    n_pool = sum(
        1 for r in load_manifest(tmp_path / "cv/manifest.csv").rows if r["split"] != "test"
    )
    assert result.metrics["val"]["n"] == n_pool
    artifact = load_artifact(result.model_dir)
    assert artifact.meta["members"] == ["member0.safetensors", "member1.safetensors"]
    assert len(artifact.members) == 2


def test_budget_left_by_early_stopping_trains_another_member(
    phantoms: Path, tmp_path: Path
) -> None:
    from medlens.data import load_manifest
    from medlens.inference import load_artifact
    from medlens.training.run import train_run

    result = train_run(
        load_manifest(phantoms),
        tmp_path / "run",
        cache_dir=tmp_path / "cache",
        model="compactnet",
        overrides={
            "epochs": 10,
            "min_epochs": 0,
            "patience": 1,
            "lr": 0.02,
            "max_members": 2,
            "batch_size": 16,
            "model_options": {"widths": [8, 8, 16, 16]},
        },
        resamples=50,
        tensorboard=False,
    )
    training = result.metrics["training"]
    assert training["stopped"][0] == "early_stopping" and training["members"] == 2
    member = Plan.load(tmp_path / "run/member1/plan.json")
    assert member.seed != result.plan.seed and member.epochs <= result.plan.epochs
    assert (tmp_path / "run/member1/history.csv").is_file()
    artifact = load_artifact(result.model_dir)
    assert artifact.meta["members"] == ["member0.safetensors", "member1.safetensors"]
    assert result.metrics["test"]["auc"] > 0.8


@pytest.mark.parametrize("task", ["multiclass", "ordinal", "multilabel"])
def test_other_tasks_train_evaluate_and_predict(phantoms: Path, tmp_path: Path, task: str) -> None:
    from medlens.data import Manifest, load_manifest
    from medlens.inference import load_artifact
    from medlens.inference.predictor import InputItem, predict_items
    from medlens.training.run import train_run

    base = load_manifest(phantoms)
    rows = []
    for i, row in enumerate(base.rows):
        nodule = row["label"] == "nodule"
        if task == "multilabel":
            labels = {"label_nodule": str(int(nodule)), "label_even": str(i % 2)}
        else:  # three grades: no nodule, nodule in an even / odd patient
            labels = {"label": "0" if not nodule else str(1 + i % 2)}
        rows.append({"path": row["path"], "patient_id": row["patient_id"], **labels})
    manifest = Manifest(rows, base.root)
    result = train_run(
        manifest,
        tmp_path / task,
        cache_dir=tmp_path / "cache",
        model="compactnet",
        task=None if task == "multilabel" else task,
        overrides={"epochs": 2, "batch_size": 16, "model_options": {"widths": [8, 8, 16, 16]}},
        resamples=50,
        tensorboard=False,
    )
    metrics = result.metrics
    assert metrics["task"] == task
    assert len(metrics["test"]["per_class"]) == (2 if task == "multilabel" else 3)
    assert 0 <= metrics["test"]["auc"] <= 1 and "auc" in metrics["test"]["ci"]
    if task == "multilabel":
        assert isinstance(metrics["threshold"], list) and len(metrics["threshold"]) == 2
    else:
        assert metrics["threshold"] is None and len(metrics["test"]["confusion_matrix"]) == 3
    artifact = load_artifact(result.model_dir)
    first = next((phantoms / "nodule").glob("*.png"))
    row = next(predict_items(artifact, [InputItem(first)]))
    probabilities = [v for k, v in row.items() if k.startswith("p_")]
    assert len(probabilities) == (2 if task == "multilabel" else 3)
    if task != "multilabel":
        assert abs(sum(probabilities) - 1) < 1e-5
