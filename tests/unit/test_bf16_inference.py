"""bfloat16 inference: only on CPUs that compute it natively, only after a check made from the
artifact's current weights, and close to float32."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medlens.errors import ArtifactError, ConfigError
from medlens.inference import load_artifact, providers
from medlens.inference.bf16 import REPORT_FILE, check_bf16
from medlens.inference.engine import Engine
from medlens.inference.providers import OPENVINO, bf16_available, runtime_for
from tests.unit.test_serving import make_artifact

needs_bf16 = pytest.mark.skipif(
    not bf16_available(), reason="needs OpenVINO and a CPU with native bfloat16"
)


def _hint(runtime: providers.Runtime) -> str:
    config = json.loads(runtime.options[0]["load_config"])["CPU"]
    # unpinned: pinned, the one-thread sessions of two serving workers shared one core
    assert config["ENABLE_CPU_PINNING"] == "NO"
    return str(config["INFERENCE_PRECISION_HINT"])


def test_bf16_is_refused_where_it_cannot_run_natively(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(providers, "available", lambda: ["CPUExecutionProvider"])
    with pytest.raises(ConfigError, match="OpenVINO"):
        runtime_for(2, precision="bf16")
    assert not bf16_available()
    monkeypatch.setattr(providers, "available", lambda: [OPENVINO, "CPUExecutionProvider"])
    monkeypatch.setattr("medlens.models.precision.native_bf16", lambda: False)
    with pytest.raises(ConfigError, match="no native bfloat16"):
        runtime_for(3, precision="bf16")
    monkeypatch.setattr("medlens.models.precision.native_bf16", lambda: True)
    for dims in (2, 3):  # every model runs on OpenVINO in bf16, plain Conv3d graphs
        runtime = runtime_for(dims, precision="bf16")
        assert (runtime.name, runtime.unroll_3d, _hint(runtime)) == ("openvino", False, "bf16")
    # fp32 on OpenVINO says so: the plugin's own default on CPUs with AMX is bf16
    assert _hint(runtime_for(3)) == "f32"


def test_bf16_needs_onnx_runtime(tmp_path: Path) -> None:
    artifact = load_artifact(make_artifact(tmp_path / "m"))
    with pytest.raises(ConfigError, match="ONNX Runtime"):
        Engine(artifact, backend="torch", precision="bf16")


@needs_bf16
@pytest.mark.parametrize("dims", [2, 3])
def test_bf16_serves_only_a_current_check(tmp_path: Path, dims: int) -> None:
    artifact = load_artifact(make_artifact(tmp_path / "m", dims=dims))
    with pytest.raises(ArtifactError, match="--bf16 --calibration"):
        Engine(artifact, precision="bf16")
    shape = (24, 1, 24, 24) if dims == 2 else (24, 1, 12, 12, 12)
    images = np.random.default_rng(2).normal(size=shape).astype(np.float32)
    report = check_bf16(artifact, images, check_targets=np.arange(24) % 2)
    assert (artifact.folder / REPORT_FILE).is_file() and report.check_images == 24
    assert report.auc_fp32 is not None and report.auc_bf16 is not None
    engine = Engine(artifact, precision="bf16", cache_dir=tmp_path / "cache")
    assert (engine.backend_used, engine.provider) == ("onnx-bf16", "openvino")
    fp32 = artifact.probabilities(engine.torch_logits(images))
    bf16 = artifact.probabilities(engine.logits(images))
    # bfloat16 keeps 8 bits of mantissa: close, but not float32-close (OpenVINO's float32
    # differs from torch by ~1e-7 here, its bfloat16 by ~7e-4), so bf16 did run
    assert 1e-5 < np.abs(bf16 - fp32).max() < 0.05
    assert np.abs(bf16 - fp32).max() == pytest.approx(report.max_probability_change, abs=2e-3)
    weights = artifact.folder / artifact.meta["members"][0]  # not the typicality summary
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(ArtifactError, match="other weights"):
        Engine(load_artifact(artifact.folder), precision="bf16")
