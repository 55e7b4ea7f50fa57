"""A time budget is honoured: training stops before an epoch that would end past its deadline."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from medlens.data import load_manifest
from medlens.data.labels import infer_labels
from medlens.data.synthetic import write_chest_folder
from medlens.planning import HardwareFingerprint, make_plan
from medlens.training import Trainer, prepare_data
from medlens.training.run import ensure_splits

CPU = HardwareFingerprint(cpu_cores=1, torch_threads=1, gpu=None, gpu_memory_gb=None)


def test_training_stops_before_an_epoch_that_would_overrun(tmp_path: Path) -> None:
    manifest = ensure_splits(load_manifest(write_chest_folder(tmp_path / "data", 24, size=16)))[0]
    labels = infer_labels(manifest)
    plan = make_plan(manifest, labels, budget_s=30, hardware=CPU, model="compactnet")
    plan = plan.with_overrides(
        {"epochs": 4, "batch_size": 8, "model_options": {"widths": [4, 8]}, "patience": 10}
    )
    data = prepare_data(manifest, labels, plan.pipeline(), tmp_path / "cache")

    def slow_first_epoch(kind: str, info: dict[str, Any]) -> None:
        if kind == "step" and info["epoch"] == 0 and info["step"] == 1:
            time.sleep(1.0)  # an epoch of >= 1 s: a second one cannot end inside 1.5 s

    trainer = Trainer(
        plan, data, tmp_path / "run", on_event=slow_first_epoch, deadline_s=1.5, tensorboard=False
    )
    result = trainer.fit()
    assert result.stopped == "deadline"
    assert len(result.history) == 1  # waiting for the deadline to pass would have run a second


def test_the_schedule_anneals_inside_a_deadline_the_plan_underestimated(tmp_path: Path) -> None:
    manifest = ensure_splits(load_manifest(write_chest_folder(tmp_path / "data", 24, size=16)))[0]
    labels = infer_labels(manifest)
    plan = make_plan(manifest, labels, budget_s=30, hardware=CPU, model="compactnet")
    plan = plan.with_overrides(
        {"epochs": 20, "batch_size": 8, "model_options": {"widths": [4, 8]}, "patience": 50}
    )
    data = prepare_data(manifest, labels, plan.pipeline(), tmp_path / "cache")

    def slow_epochs(kind: str, info: dict[str, Any]) -> None:
        if kind == "step" and info["step"] == 1:
            time.sleep(0.3)  # 20 epochs of >= 0.3 s cannot fit in 3 s; about 8 can

    trainer = Trainer(
        plan, data, tmp_path / "run", on_event=slow_epochs, deadline_s=3.0, tensorboard=False
    )
    result = trainer.fit()
    assert len(result.history) < 20 and trainer.epochs < 20
    # the learning rate decayed to the end of its cosine instead of being cut at ~0.6 of its peak
    assert result.history[-1]["lr"] < 0.1 * plan.lr


def test_the_schedule_anneals_when_the_machine_slows_down_mid_run(tmp_path: Path) -> None:
    manifest = ensure_splits(load_manifest(write_chest_folder(tmp_path / "data", 24, size=16)))[0]
    labels = infer_labels(manifest)
    plan = make_plan(manifest, labels, budget_s=30, hardware=CPU, model="compactnet")
    plan = plan.with_overrides(
        {"epochs": 20, "batch_size": 8, "model_options": {"widths": [4, 8]}, "patience": 50}
    )
    data = prepare_data(manifest, labels, plan.pipeline(), tmp_path / "cache")

    def slower_after_three(kind: str, info: dict[str, Any]) -> None:
        if kind == "step" and info["step"] == 1:
            # the first three epochs say 20 fit in 4 s; from the fourth on about 8 more fit
            time.sleep(0.05 if info["epoch"] < 3 else 0.4)

    trainer = Trainer(
        plan, data, tmp_path / "run", on_event=slower_after_three, deadline_s=4.0, tensorboard=False
    )
    result = trainer.fit()
    assert len(result.history) < 20 and trainer.epochs < 20
    # refitted after the slowdown, not only once after the third (fast) epoch
    assert result.history[-1]["lr"] < 0.1 * plan.lr
