"""Which ONNX Runtime provider runs a float32 2D model fastest on this machine: timed when the
model is first loaded, remembered in the ONNX cache beside its graph.

No fixed rule held for 2D models: OpenVINO's provider ran CompactNet 28^2 at 0.58-0.68 ms per
image at batch 1 against 0.73-0.84 ms on the CPU provider in three benchmark runs and at 0.62 vs
0.52 ms in a fourth, and ResNet-18 224^2 at batch 32 at 16.4-16.7 ms against 17.1-17.7 in two
runs and at 23.9 vs 18.6 ms in another (`benchmarks/bench_inference_latency.py`). The answer
depends on the model, the CPU and the thread count, so it is measured for each of them.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medlens._fs import atomic_write_text

log = logging.getLogger(__name__)

#: the alternative must beat the default by this factor: a near tie is timing noise
MARGIN = 0.9
ROUNDS = 7


def machine_key(threads: int | None) -> str:
    """What the choice depends on besides the model: the CPU, the cores, the thread cap and the
    ONNX Runtime build (a cache folder can travel with an artifact to another machine)."""
    import onnxruntime as ort

    return "|".join(
        [
            _cpu_model(),
            str(os.cpu_count()),
            str(threads or "all"),
            ort.__version__,
            ort.get_device(),
        ]
    )


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def fastest(
    calls: Sequence[Callable[[], object]], *, rounds: int = ROUNDS, margin: float = MARGIN
) -> tuple[int, list[float]]:
    """The index of the fastest of ``calls`` (index 0 is the default, kept unless another is
    faster by ``margin``) and each one's median seconds over ``rounds`` interleaved rounds after
    two warm-up calls each."""
    for call in calls:
        call()
        call()
    times: list[list[float]] = [[] for _ in calls]
    for _ in range(rounds):
        for call, series in zip(calls, times, strict=True):
            began = time.perf_counter()
            call()
            series.append(time.perf_counter() - began)
    medians = [float(np.median(t)) for t in times]
    best = int(np.argmin(medians))
    return (best if medians[best] < margin * medians[0] else 0), medians


def remembered(path: Path, key: str, names: Sequence[str]) -> str | None:
    """The provider chosen earlier for this model on this machine, if any."""
    try:
        record: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    chosen = record.get(key, {}).get("provider")
    return chosen if chosen in names else None


def remember(path: Path, key: str, chosen: str, medians: dict[str, float]) -> None:
    """Record the choice and its timings under ``key`` (other machines' records are kept)."""
    try:
        record: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        record = {}
    ms = {name: round(1000 * s, 3) for name, s in medians.items()}
    record[key] = {"provider": chosen, "median_ms": ms}
    atomic_write_text(path, json.dumps(record, indent=1))
    log.info("provider %s chosen for %s (median ms per call: %s)", chosen, path.stem, ms)
