"""Shared fixtures: where the real data lives, synthetic volumes, and the in-process CLI runner."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--shared-data",
        default=os.environ.get("MEDLENS_SHARED_DATA", str(ROOT.parent / "shared" / "data")),
    )


def _require(condition: bool, reason: str) -> None:
    """Skip on a developer machine, fail in CI: CI must never silently skip real-data checks."""
    if not condition:
        if IN_CI:
            pytest.fail(f"{reason} (required in CI)")
        pytest.skip(reason)


@pytest.fixture(scope="session")
def shared_data(request: pytest.FixtureRequest) -> Path:
    path = Path(request.config.getoption("--shared-data")).resolve()
    _require(path.is_dir() and (path / "README.md").exists(), f"real data not found at {path}")
    return path


@pytest.fixture(scope="session")
def dcm2niix() -> str:
    exe = shutil.which("dcm2niix")
    _require(exe is not None, "dcm2niix is not installed (make test installs it with apt-get)")
    assert exe is not None
    return exe


@pytest.fixture
def ct_volume() -> np.ndarray:
    from medlens.data.synthetic import ct_phantom

    return ct_phantom(0, 0, size=20).image[0]


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def run_cli(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Callable[..., CliResult]:
    """Run ``medlens ARGS`` in-process through the real entry point (error handling included)."""
    from medlens.cli.main import main

    def run(*args: str) -> CliResult:
        monkeypatch.setattr(sys, "argv", ["medlens", *args])
        code = 0
        try:
            main()
        except SystemExit as exc:
            code = int(exc.code or 0) if not isinstance(exc.code, str) else 1
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run
