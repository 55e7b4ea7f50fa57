"""Mixed precision: bfloat16 autocast on CPUs that compute it, float32 weights and evaluation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from medlens.data import load_manifest
from medlens.data.labels import infer_labels
from medlens.data.synthetic import write_chest_folder
from medlens.models import precision
from medlens.models.precision import (
    autocast,
    autocast_dtype,
    guard_small_convolutions,
    precision_name,
)
from medlens.planning import HardwareFingerprint, make_plan
from medlens.training import Trainer, prepare_data
from medlens.training.run import ensure_splits

CPU = HardwareFingerprint(cpu_cores=1, torch_threads=1, gpu=None, gpu_memory_gb=None)


def test_the_precision_follows_the_device_and_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    assert autocast_dtype("cuda:0") is torch.float16
    assert autocast_dtype("cuda", enabled=False) is None
    monkeypatch.setattr(precision, "native_bf16", lambda: True)
    assert autocast_dtype("cpu") is torch.bfloat16
    assert autocast_dtype("cpu", enabled=False) is None
    monkeypatch.setattr(precision, "native_bf16", lambda: False)
    assert autocast_dtype("cpu") is None  # emulated bfloat16 is slower than float32
    assert [precision_name(d) for d in (None, torch.bfloat16)] == ["float32", "bfloat16"]


def test_autocast_runs_convolutions_in_bfloat16_and_none_leaves_float32() -> None:
    conv = torch.nn.Conv2d(1, 2, 3)
    x = torch.randn(1, 1, 8, 8)
    with autocast("cpu", torch.bfloat16):
        assert conv(x).dtype is torch.bfloat16
    with autocast("cpu", None):
        assert conv(x).dtype is torch.float32


@pytest.mark.parametrize("native", [True, False])
def test_a_mixed_precision_run_keeps_float32_weights_and_finite_losses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, native: bool
) -> None:
    monkeypatch.setattr(precision, "native_bf16", lambda: native)
    manifest = ensure_splits(load_manifest(write_chest_folder(tmp_path / "data", 48, size=16)))[0]
    labels = infer_labels(manifest)
    plan = make_plan(manifest, labels, budget_s=30, hardware=CPU, model="compactnet")
    plan = plan.with_overrides(
        {"epochs": 3, "batch_size": 8, "model_options": {"widths": [4, 8]}, "lr": 0.01}
    )
    data = prepare_data(manifest, labels, plan.pipeline(), tmp_path / "cache")
    trainer = Trainer(plan, data, tmp_path / "run", tensorboard=False)
    assert trainer.amp_dtype is (torch.bfloat16 if native else None)
    assert not trainer.scaler.is_enabled()  # loss scaling is for float16 only
    result = trainer.fit()
    assert all(p.dtype is torch.float32 for p in result.model.parameters())
    losses = [row["train_loss"] for row in result.history]
    assert all(torch.isfinite(torch.tensor(losses)))


def test_convolutions_smaller_than_their_kernel_run_in_float32_inside_the_guard() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv3d(8, 8, 3, padding=1), torch.nn.Conv3d(8, 8, 1))
    small = torch.relu(torch.randn(4, 8, 2, 2, 2))
    model(small).square().mean().backward()
    reference = model[0].weight.grad.clone()
    model.zero_grad()
    with autocast("cpu", torch.bfloat16), guard_small_convolutions(model, torch.bfloat16):
        first = model[0](small)
        assert first.dtype is torch.float32  # 2^3 input, 3^3 kernel: float32
        assert model[1](first).dtype is torch.bfloat16  # a 1^3 kernel fits: bfloat16
        model(small).float().square().mean().backward()
    error = (model[0].weight.grad - reference).abs().max() / reference.abs().max()
    assert error < 0.02
    assert "forward" not in vars(model[0])  # the guard is gone after the block


def test_the_guard_is_off_for_float32_and_float16() -> None:
    conv = torch.nn.Conv2d(1, 1, 3)
    for dtype in (None, torch.float16):
        with guard_small_convolutions(conv, dtype):
            assert "forward" not in vars(conv)
