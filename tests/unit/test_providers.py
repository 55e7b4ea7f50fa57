"""Which ONNX Runtime provider serves a model: OpenVINO's for 3D where installed, with the plain
Conv3d graph, and the same logits as torch; INT8 made and checked on the provider that serves it."""

from __future__ import annotations

import platform
import sys
from pathlib import Path

import numpy as np
import pytest

from medlens.inference import load_artifact
from medlens.inference.engine import Engine
from medlens.inference.providers import OPENVINO, available, runtime_for
from medlens.inference.quantize import quantize_artifact
from tests.unit.test_serving import make_artifact

X86_LINUX = sys.platform == "linux" and platform.machine() == "x86_64"
needs_openvino = pytest.mark.skipif(
    OPENVINO not in available(), reason="ONNX Runtime without the OpenVINO provider"
)


@pytest.mark.skipif(not X86_LINUX, reason="onnxruntime-openvino has wheels for x86-64 Linux")
def test_the_openvino_build_is_installed() -> None:
    assert OPENVINO in available()  # pyproject installs onnxruntime-openvino here


@needs_openvino
def test_3d_models_run_on_openvino_and_2d_on_the_cpu_provider() -> None:
    volume, image = runtime_for(3), runtime_for(2)
    assert (volume.name, volume.unroll_3d) == ("openvino", False)
    assert (image.name, image.unroll_3d) == ("cpu", True)
    assert runtime_for(3, openvino=False).name == "cpu"
    assert runtime_for(2, openvino=True).name == "openvino"


@needs_openvino
def test_openvino_logits_match_torch(tmp_path: Path) -> None:
    artifact = load_artifact(make_artifact(tmp_path / "m3", dims=3))
    engine = Engine(artifact, cache_dir=tmp_path / "cache", threads=1)
    assert (engine.backend_used, engine.provider) == ("onnx", "openvino")
    assert [p.suffixes for p in (tmp_path / "cache").iterdir()] == [[".conv3d", ".onnx"]]
    assert engine.warm_up().shape == (1, 2)
    batch = np.random.default_rng(0).normal(size=(5, 1, 12, 12, 12)).astype(np.float32)
    for rows in (batch, batch[:1], batch[:3]):  # the batch axis stays dynamic
        np.testing.assert_allclose(engine.logits(rows), engine.torch_logits(rows), atol=1e-4)


@needs_openvino
def test_int8_is_checked_on_the_provider_that_serves_it(tmp_path: Path) -> None:
    artifact = load_artifact(make_artifact(tmp_path / "m3", dims=3))
    images = np.random.default_rng(1).normal(size=(40, 1, 12, 12, 12)).astype(np.float32)
    report = quantize_artifact(artifact, images[:24], images[24:])
    assert report.provider == "openvino"
    engine = Engine(artifact, precision="int8")
    assert engine.provider == "openvino"
    fp32 = artifact.probabilities(engine.torch_logits(images[24:]))
    int8 = artifact.probabilities(engine.logits(images[24:]))
    assert np.abs(int8 - fp32).max() == pytest.approx(report.max_probability_change, abs=1e-4)
    assert np.abs(int8 - fp32).max() < 0.05
