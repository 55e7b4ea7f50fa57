"""Pickle-free state files: round trip, corruption, wrong kind."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from medlens.errors import ArtifactError
from medlens.serialization import load_state, load_weights, save_state, save_weights


def test_optimizer_state_round_trips(tmp_path: Path) -> None:
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "epoch": 3,
        "history": [{"loss": 0.5, "best": True}],
        "pair": (1, "a"),
        "none": None,
    }
    save_state(tmp_path / "c.safetensors", state, kind="checkpoint")
    back = load_state(tmp_path / "c.safetensors", kind="checkpoint")
    assert back["epoch"] == 3 and back["history"] == state["history"] and back["pair"] == (1, "a")
    fresh = torch.optim.AdamW(model.parameters())
    fresh.load_state_dict(back["optimizer"])
    torch.testing.assert_close(
        fresh.state_dict()["state"][0]["exp_avg"], optimizer.state_dict()["state"][0]["exp_avg"]
    )


def test_corrupt_and_foreign_files_are_refused(tmp_path: Path) -> None:
    path = save_state(tmp_path / "c.safetensors", {"x": torch.ones(2)}, kind="checkpoint")
    with pytest.raises(ArtifactError, match="expected 'artifact'"):
        load_state(path, kind="artifact")
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(ArtifactError, match="corrupt"):
        load_state(path, kind="checkpoint")
    (tmp_path / "w.safetensors").write_bytes(b"\x00" * 30)
    with pytest.raises(ArtifactError, match="corrupt weights"):
        load_weights(tmp_path / "w.safetensors")
    with pytest.raises(ArtifactError, match="not found"):
        load_weights(tmp_path / "missing.safetensors")


def test_weights_are_plain_safetensors(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    save_weights(tmp_path / "w.safetensors", {"a": torch.arange(3.0)}, {"format": "x"})
    torch.testing.assert_close(load_file(str(tmp_path / "w.safetensors"))["a"], torch.arange(3.0))
