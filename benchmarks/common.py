"""Shared helpers for benchmarks: timing, machine facts, JSON results."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
SHARED = Path(
    os.environ.get("MEDLENS_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)


def timed(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> list[float]:
    """Wall-clock seconds of ``repeats`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def summary(times: list[float]) -> dict[str, float]:
    return {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        "runs": len(times),
    }


def machine() -> dict[str, Any]:
    import torch

    return {
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def scores_record(targets: Any, logits: Any) -> dict[str, list[Any]]:
    """Targets and logits (5 decimals) as JSON lists: an operating-point rule can then be
    re-scored on a run without retraining it."""
    return {"targets": targets.tolist(), "logits": logits.round(5).tolist()}


def write_result(name: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {
        "benchmark": name,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": machine(),
        **payload,
    }
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2))
    tmp.replace(path)
    print(json.dumps(payload, indent=2))
    return path


def commit() -> str:
    """The short hash of the checked-out commit, '+' when src/ has uncommitted changes."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], capture_output=True, text=True, check=False, cwd=Path(__file__).parent
        ).stdout.strip()

    src = str(Path(__file__).resolve().parents[1] / "src")  # git resolves paths from its cwd
    return git("rev-parse", "--short", "HEAD") + (
        "+" if git("status", "--porcelain", "--", src) else ""
    )
