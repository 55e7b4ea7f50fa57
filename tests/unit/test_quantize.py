"""INT8 models: made from the artifact's own weights, checked, and refused when stale."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from medlens.errors import ArtifactError, ConfigError
from medlens.inference import load_artifact
from medlens.inference.engine import Engine
from medlens.inference.quantize import INT8_FILE, calibration_split, quantize_artifact
from tests.unit.test_serving import make_artifact


@dataclass
class _Rows:
    """The two things calibration_split reads from PreparedData."""

    splits: list[str]

    @property
    def manifest(self) -> Any:
        return type("M", (), {"rows": [{"split": s} if s else {} for s in self.splits]})

    def indices(self, split: str) -> np.ndarray:
        return np.flatnonzero(np.asarray(self.splits) == split).astype(np.int64)


def test_calibration_uses_validation_and_checks_on_test() -> None:
    data = _Rows(["train"] * 50 + ["val"] * 10 + ["test"] * 20)
    calibrate, check = calibration_split(data, max_images=8)  # type: ignore[arg-type]
    assert len(calibrate) == 8 and set(calibrate) <= set(range(50, 60))
    assert len(check) == 8 and set(check) <= set(range(60, 80))
    unsplit = _Rows([""] * 30)
    calibrate, check = calibration_split(unsplit)  # type: ignore[arg-type]
    assert len(calibrate) == 15 and len(check) == 15 and not set(calibrate) & set(check)
    with pytest.raises(ConfigError, match="two images"):
        calibration_split(_Rows([""]))  # type: ignore[arg-type]


def test_int8_model_tracks_the_fp32_model_and_is_refused_when_stale(tmp_path: Path) -> None:
    artifact = load_artifact(make_artifact(tmp_path / "m"))
    with pytest.raises(ArtifactError, match="medlens export"):
        Engine(artifact, precision="int8")
    rng = np.random.default_rng(0)
    images = rng.normal(size=(48, 1, 24, 24)).astype(np.float32)
    report = quantize_artifact(artifact, images[:32], images[32:], check_targets=np.arange(16) % 2)
    assert report.path == artifact.folder / INT8_FILE and report.path.is_file()
    assert report.calibration_images == 32 and report.check_images == 16
    assert report.auc_fp32 is not None and report.auc_int8 is not None
    engine = Engine(artifact, precision="int8")
    assert engine.backend_used == "onnx-int8"
    fp32 = artifact.probabilities(Engine(artifact, backend="torch").logits(images[32:]))
    int8 = artifact.probabilities(engine.logits(images[32:]))
    assert np.abs(int8 - fp32).max() == pytest.approx(report.max_probability_change, abs=1e-4)
    assert np.abs(int8 - fp32).max() < 0.05
    weights = artifact.folder / artifact.meta["members"][0]  # not the typicality summary
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(ArtifactError, match="other weights"):
        Engine(load_artifact(artifact.folder), precision="int8")


def test_int8_needs_onnx_runtime(tmp_path: Path) -> None:
    artifact = load_artifact(make_artifact(tmp_path / "m"))
    with pytest.raises(ConfigError, match="ONNX Runtime"):
        Engine(artifact, backend="torch", precision="int8")
    with pytest.raises(ConfigError, match="precision"):
        Engine(artifact, precision="fp16")
