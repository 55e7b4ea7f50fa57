"""A run killed with SIGKILL in the middle of an epoch resumes to the same weights."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from medlens.data import load_manifest
from medlens.data.labels import infer_labels
from medlens.data.synthetic import write_chest_folder
from medlens.errors import ArtifactError
from medlens.planning import HardwareFingerprint, Plan, make_plan
from medlens.serialization import load_weights
from medlens.training import Trainer, prepare_data
from medlens.training.run import ensure_splits

CPU = HardwareFingerprint(cpu_cores=1, torch_threads=1, gpu=None, gpu_memory_gb=None)

SCRIPT = """
import sys, time, torch
torch.set_num_threads(1)
from medlens.data import Manifest
from medlens.data.labels import infer_labels
from medlens.planning import Plan
from medlens.training import Trainer, prepare_data
manifest = Manifest.read(sys.argv[1]); plan = Plan.load(sys.argv[2])
data = prepare_data(manifest, infer_labels(manifest), plan.pipeline(), sys.argv[4])
def on_event(kind, info):
    if kind == "step" and info["epoch"] == 1 and info["step"] == 2:
        print("KILL ME", flush=True)
        time.sleep(60)
Trainer(plan, data, sys.argv[3], on_event=on_event, tensorboard=False).fit(resume=True)
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("resume")
    folder = write_chest_folder(root / "data", 40, size=16)
    manifest = ensure_splits(load_manifest(folder))[0]
    manifest_path = manifest.write(root / "manifest.csv")
    plan = make_plan(
        manifest, infer_labels(manifest), budget_s=30, hardware=CPU, model="compactnet"
    ).with_overrides(
        {
            "epochs": 3,
            "batch_size": 8,
            "model_options": {"widths": [4, 8, 8, 16]},
            "patience": 10,
            "mixup": 0.4,  # the resumed epochs replay mixup's draws too
        }
    )
    plan_path = plan.save(root / "plan.json")
    return manifest_path, plan_path, root / "cache"


def _train(manifest_path: Path, plan_path: Path, cache: Path, out: Path, resume: bool) -> None:
    from medlens.data import Manifest

    manifest, plan = Manifest.read(manifest_path), Plan.load(plan_path)
    data = prepare_data(manifest, infer_labels(manifest), plan.pipeline(), cache)
    Trainer(plan, data, out, tensorboard=False).fit(resume=resume)


def test_kill_9_then_resume_matches_an_uninterrupted_run(
    setup: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    manifest_path, plan_path, cache = setup
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the killed child runs single-threaded too: same float order
    try:
        _train(manifest_path, plan_path, cache, tmp_path / "straight", resume=False)
        killed = tmp_path / "killed"
        child = subprocess.Popen(
            [
                sys.executable,
                "-c",
                SCRIPT,
                str(manifest_path),
                str(plan_path),
                str(killed),
                str(cache),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None
        deadline = time.monotonic() + 120
        while "KILL ME" not in child.stdout.readline():
            assert child.poll() is None and time.monotonic() < deadline, "child ended early"
        os.kill(child.pid, signal.SIGKILL)  # mid-epoch 2, after epoch 1's checkpoint
        child.wait()
        history = (killed / "history.csv").read_text().strip().splitlines()
        assert len(history) == 2  # header + epoch 1
        # a kill during a checkpoint's write leaves its temporary file: resuming removes it
        partial = killed / "checkpoints/.checkpoint.safetensors.x1y2.part.safetensors"
        partial.write_bytes(b"\0" * 4096)
        _train(manifest_path, plan_path, cache, killed, resume=True)
        assert not partial.exists()
    finally:
        torch.set_num_threads(threads)
    straight = load_weights(tmp_path / "straight/checkpoints/best.safetensors")
    resumed = load_weights(killed / "checkpoints/best.safetensors")
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
    assert (killed / "history.csv").read_text().count("\n") == (
        tmp_path / "straight/history.csv"
    ).read_text().count("\n")


def test_corrupt_checkpoint_is_a_clear_error(
    setup: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    manifest_path, plan_path, cache = setup
    ckpt = tmp_path / "run/checkpoints/checkpoint.safetensors"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ArtifactError, match="corrupt"):
        _train(manifest_path, plan_path, cache, tmp_path / "run", resume=True)


def test_checkpoint_of_another_plan_is_refused(
    setup: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    manifest_path, plan_path, cache = setup
    _train(manifest_path, plan_path, cache, tmp_path / "run", resume=False)
    other = Plan.load(plan_path).with_overrides({"lr": 0.5})
    other_path = other.save(tmp_path / "other.json")
    with pytest.raises(ArtifactError, match="different plan"):
        _train(manifest_path, other_path, cache, tmp_path / "run", resume=True)
