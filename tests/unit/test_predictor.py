"""Prediction inputs: DICOM series folders, single files, wrong dimensionality, unreadable files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import medlens._parallel as parallel_module
from medlens.data.fake_dicom import SeriesSpec, write_dicom_series
from medlens.data.labels import LabelSpec
from medlens.data.typicality import Typicality, features
from medlens.errors import ArtifactError, DataError
from medlens.inference import load_artifact, save_artifact
from medlens.inference.engine import Engine
from medlens.inference.predictor import expand_inputs, predict_items, write_predictions
from medlens.io import MedicalImage, write_image
from medlens.models import create_model
from medlens.models.forward import batched_embeddings


@pytest.fixture
def model_3d(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    model = create_model("compactnet", 3, 1, 2, widths=(4, 4, 8, 8), stem_stride=2)
    return save_artifact(
        tmp_path / "model",
        [model],
        labels=LabelSpec("binary", ["normal", "lesion"], ["0", "1"]),
        preprocessing=[{"name": "zscore"}, {"name": "resize", "shape": [12, 12, 12]}],
        plan={"input_size": [12, 12, 12]},
        operating_point={"temperature": 1.5, "threshold": 0.4, "method": "youden"},
        metrics={},
        data_hash="test",
    )


def test_series_folders_files_and_bad_inputs(model_3d: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    studies = tmp_path / "studies"
    write_dicom_series(rng.normal(0, 100, (10, 16, 16)), studies / "a", SeriesSpec(series_number=1))
    write_dicom_series(rng.normal(0, 100, (8, 20, 20)), studies / "b", SeriesSpec(series_number=2))
    nifti = write_image(
        MedicalImage(rng.normal(size=(1, 9, 9, 9)).astype(np.float32)), tmp_path / "v.nii.gz"
    )
    flat = write_image(MedicalImage(rng.random((1, 16, 16)).astype(np.float32)), tmp_path / "x.png")
    write_dicom_series(rng.normal(0, 100, (2, 16, 16)), studies / "xr", SeriesSpec(modality="DX"))
    items = expand_inputs([studies, nifti, flat])
    assert len(items) == 6 and sum(1 for i in items if i.series_uid) == 2
    # each series is read from its own folder; two radiographs of a series are two images
    assert sorted(i.path.name for i in items if i.series_uid) == ["a", "b"]
    assert sum(1 for i in items if i.path.parent.name == "xr") == 2
    items = [i for i in items if i.path.parent.name != "xr"]
    artifact = load_artifact(model_3d)
    rows = list(predict_items(artifact, items, batch_size=3))
    assert len(rows) == 4
    good = [r for r in rows if "error" not in r]
    assert len(good) == 3
    for row in good:
        assert row["prediction"] == ("lesion" if row["p_lesion"] >= 0.4 else "normal")
        assert row["p_lesion"] + row["p_normal"] == pytest.approx(1, abs=1e-5)
    bad = next(r for r in rows if "error" in r)
    assert "x.png" in bad["input"] and "2D image was given to a 3D model" in bad["error"]
    out = write_predictions(rows, tmp_path / "p.csv", {"name": "m"})
    assert out.read_text().count("\n") == 5
    # read ahead in forked workers (as for compressed radiographs), in threads, or here: same
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(parallel_module, "PARALLEL_AFTER_S", 0.0)
        forked = list(predict_items(artifact, items, batch_size=3, workers=2))
    assert forked == rows == list(predict_items(artifact, items, batch_size=3, workers=1))


def test_nothing_to_predict_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images found"):
        expand_inputs([tmp_path / "empty"])
    with pytest.raises(DataError, match="not found"):
        expand_inputs([tmp_path / "missing"])


def test_a_cached_onnx_export_runs_without_building_the_torch_models(
    model_3d: Path, tmp_path: Path
) -> None:
    x = np.random.default_rng(0).normal(size=(2, 1, 12, 12, 12)).astype(np.float32)
    expected = Engine(load_artifact(model_3d), backend="onnx", cache_dir=tmp_path).logits(x)
    artifact = load_artifact(model_3d)
    engine = Engine(artifact, backend="onnx", cache_dir=tmp_path)  # the export is cached
    np.testing.assert_allclose(engine.logits(x), expected, rtol=1e-5, atol=1e-6)
    assert artifact._members is None  # no torch model (nor MONAI) was built
    np.testing.assert_allclose(engine.torch_logits(x), expected, rtol=1e-4, atol=1e-5)
    assert artifact._members is not None  # built when torch is asked for


def test_the_engine_gives_the_embedding_beside_the_logits(
    tmp_path: Path,
) -> None:
    """An artifact whose ``unlike_training`` measures the model's features: ONNX Runtime (one
    pass, both averaged over 27 shifted views, Conv3d unrolled) gives what torch gives, and
    predictions carry the same distances either way."""
    torch.manual_seed(0)
    model = create_model("compactnet", 3, 1, 2, widths=(4, 4, 8, 8), stem_stride=2)
    volumes = np.random.default_rng(1).normal(size=(60, 1, 12, 12, 12)).astype(np.float32)
    embedded = batched_embeddings([model], volumes)
    summary = Typicality.fit(
        features(volumes[:40]), features(volumes[40:]), embedded[:40], embedded[40:]
    )
    folder = save_artifact(
        tmp_path / "model",
        [model],
        labels=LabelSpec("binary", ["normal", "lesion"], ["0", "1"]),
        preprocessing=[{"name": "resize", "shape": [12, 12, 12]}],
        plan={"input_size": [12, 12, 12]},
        operating_point={"temperature": 1.0, "threshold": 0.5, "tta_shift": 1},
        metrics={},
        data_hash="test",
        typicality=summary,
    )
    artifact = load_artifact(folder)
    x = volumes[:5]
    logits, embedding = Engine(artifact, backend="onnx", cache_dir=tmp_path).outputs(x)
    assert artifact.embeds and embedding is not None and embedding.shape == (5, 8)
    np.testing.assert_allclose(logits, artifact.logits(x), atol=1e-4)
    np.testing.assert_allclose(embedding, artifact.embeddings(x), rtol=1e-4, atol=1e-5)
    items = expand_inputs(
        [write_image(MedicalImage(v), tmp_path / f"v{k}.nii.gz") for k, v in enumerate(x)]
    )
    engine = Engine(artifact, backend="onnx", cache_dir=tmp_path)
    served = list(predict_items(artifact, items, engine=engine, workers=1))
    local = list(predict_items(artifact, items, workers=1))
    for a, b in zip(served, local, strict=True):
        assert a["distance_from_training"] == pytest.approx(b["distance_from_training"], abs=2e-3)
        assert a["unlike_training"] == b["unlike_training"]


def test_an_unknown_architecture_is_refused_at_load(model_3d: Path, tmp_path: Path) -> None:
    import json
    import shutil

    copy = Path(shutil.copytree(model_3d, tmp_path / "copy"))
    meta = json.loads((copy / "model.json").read_text())
    meta["architecture"]["name"] = "vit-huge"
    (copy / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="unknown architecture 'vit-huge'"):
        load_artifact(copy)
