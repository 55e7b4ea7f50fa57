"""Which ONNX Runtime provider serves a model: OpenVINO's for 3D where installed, with the plain
Conv3d graph, and the same logits as torch; for 2D the faster of the CPU provider and OpenVINO's,
timed once and remembered; INT8 made and checked on the provider that serves it."""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from medlens.errors import ConfigError
from medlens.inference import autotune, load_artifact
from medlens.inference.engine import Engine
from medlens.inference.providers import CUDA, OPENVINO, Runtime, available, runtime_for
from medlens.inference.quantize import quantize_artifact
from medlens.serving.service import ModelService
from medlens.serving.settings import ServeSettings
from tests.unit.test_serving import make_artifact

X86_LINUX = sys.platform == "linux" and platform.machine() == "x86_64"
needs_openvino = pytest.mark.skipif(
    OPENVINO not in available(), reason="ONNX Runtime without the OpenVINO provider"
)


@pytest.mark.skipif(not X86_LINUX, reason="onnxruntime-openvino has wheels for x86-64 Linux")
def test_the_openvino_build_is_installed() -> None:
    assert OPENVINO in available()  # pyproject installs onnxruntime-openvino here


@needs_openvino
def test_3d_models_default_to_openvino_and_2d_to_the_cpu_provider() -> None:
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


def test_the_default_provider_is_kept_unless_another_is_clearly_faster() -> None:
    def sleeper(seconds: float) -> object:
        return lambda: time.sleep(seconds)

    best, medians = autotune.fastest([sleeper(0.004), sleeper(0.001)], rounds=3)
    assert best == 1 and medians[0] > medians[1]
    best, _ = autotune.fastest([sleeper(0.004), sleeper(0.0039)], rounds=3)
    assert best == 0  # within the margin: timing noise does not switch providers


def test_a_remembered_choice_belongs_to_one_machine_and_survives_a_bad_file(
    tmp_path: Path,
) -> None:
    record = tmp_path / "digest.providers.json"
    assert autotune.remembered(record, "cpu-a", ["cpu", "openvino"]) is None
    autotune.remember(record, "cpu-a", "openvino", {"cpu": 0.002, "openvino": 0.001})
    autotune.remember(record, "cpu-b", "cpu", {"cpu": 0.001, "openvino": 0.002})
    assert autotune.remembered(record, "cpu-a", ["cpu", "openvino"]) == "openvino"
    assert autotune.remembered(record, "cpu-b", ["cpu", "openvino"]) == "cpu"
    assert autotune.remembered(record, "cpu-a", ["cpu"]) is None  # no longer a candidate
    record.write_text("{not json")
    assert autotune.remembered(record, "cpu-a", ["cpu", "openvino"]) is None


@needs_openvino
def test_a_2d_model_runs_on_the_faster_provider_timed_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    artifact = load_artifact(make_artifact(tmp_path / "m2"))
    cache = tmp_path / "cache"
    engine = Engine(artifact, cache_dir=cache, threads=1)
    (record,) = cache.glob("*.providers.json")
    choice = json.loads(record.read_text())[autotune.machine_key(1)]
    assert choice["provider"] == engine.provider
    assert set(choice["median_ms"]) == {"cpu", "openvino"}
    assert len(list(cache.glob("*.onnx"))) == 1  # one graph serves both providers in 2D
    batch = np.random.default_rng(0).normal(size=(3, 1, 24, 24)).astype(np.float32)
    np.testing.assert_allclose(engine.logits(batch), engine.torch_logits(batch), atol=1e-4)

    def untimed(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the remembered choice should have been used")

    monkeypatch.setattr(autotune, "fastest", untimed)
    assert Engine(artifact, cache_dir=cache, threads=1).provider == engine.provider
    # another thread count is another measurement
    with pytest.raises(AssertionError, match="remembered"):
        Engine(artifact, cache_dir=cache, threads=2)


@needs_openvino
def test_a_provider_that_fails_on_the_model_leaves_the_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    session = Runtime.session

    def openvino_fails(runtime: Runtime, path: str, threads: int | None = None) -> object:
        if runtime.name == "openvino":
            raise RuntimeError("cannot compile this graph")
        return session(runtime, path, threads)

    monkeypatch.setattr(Runtime, "session", openvino_fails)
    engine = Engine(load_artifact(make_artifact(tmp_path / "m2")), cache_dir=tmp_path / "cache")
    assert (engine.backend_used, engine.provider) == ("onnx", "cpu")  # not torch


@needs_openvino
def test_a_named_provider_is_used_as_named(tmp_path: Path) -> None:
    artifact = load_artifact(make_artifact(tmp_path / "m2"))
    for name in ("cpu", "openvino"):
        engine = Engine(artifact, cache_dir=tmp_path / "cache", provider=name)
        assert engine.provider == name
    assert not list((tmp_path / "cache").glob("*.providers.json"))  # nothing was timed
    if CUDA not in available():
        with pytest.raises(ConfigError, match="no cuda provider"):
            Engine(artifact, cache_dir=tmp_path / "cache", provider="cuda")
    with pytest.raises(ConfigError, match="unknown provider"):
        Engine(artifact, provider="tpu")
    with pytest.raises(ConfigError, match="applies to fp32"):
        Engine(artifact, provider="cpu", precision="int8")
    settings = ServeSettings(model_dirs=(artifact.folder,), tokens=(), provider="openvino")
    service = ModelService(artifact.folder, settings)  # `medlens serve --provider openvino`
    assert service.engine.provider == "openvino"
    service.close()
