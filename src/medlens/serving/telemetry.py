"""Prometheus-style metrics and the audit log of a service.

The audit log has one JSON line per request: time, token id (never the token), route, model,
SHA-256 of the input bytes, status, result and latency. It never holds file names, DICOM tags or
error texts, which can carry patient identifiers.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from medlens._fs import atomic_write_text

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """Request counts by route/model/status and latency histograms by route/model."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str, int], int] = defaultdict(int)
        self._buckets: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0] * len(BUCKETS))
        self._sums: dict[tuple[str, str], float] = defaultdict(float)
        self._totals: dict[tuple[str, str], int] = defaultdict(int)

    def observe(self, route: str, model: str, status: int, seconds: float) -> None:
        with self._lock:
            self._counts[(route, model, status)] += 1
            key = (route, model)
            for k, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    self._buckets[key][k] += 1
            self._sums[key] += seconds
            self._totals[key] += 1

    def snapshot(
        self, queue_depths: dict[str, int], batches: dict[str, tuple[int, int]]
    ) -> dict[str, Any]:
        """This process's figures as JSON-able data (what :func:`render` sums over workers)."""
        with self._lock:
            return {
                "requests": [[*key, n] for key, n in self._counts.items()],
                "latency": [
                    [*key, list(counts), self._sums[key], self._totals[key]]
                    for key, counts in self._buckets.items()
                ],
                "queue": dict(queue_depths),
                "batches": {m: list(v) for m, v in batches.items()},
            }


def render(snapshots: list[dict[str, Any]]) -> str:
    """The text exposition format (version 0.0.4) of the sum of ``snapshots``."""
    counts: dict[tuple[str, str, int], int] = defaultdict(int)
    buckets: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0] * len(BUCKETS))
    sums: dict[tuple[str, str], float] = defaultdict(float)
    totals: dict[tuple[str, str], int] = defaultdict(int)
    queue: dict[str, int] = defaultdict(int)
    batches: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for snap in snapshots:
        for route, model, status, n in snap["requests"]:
            counts[(route, model, int(status))] += n
        for route, model, per_bucket, total_s, n in snap["latency"]:
            key = (route, model)
            buckets[key] = [a + b for a, b in zip(buckets[key], per_bucket, strict=True)]
            sums[key] += total_s
            totals[key] += n
        for model, depth in snap["queue"].items():
            queue[model] += depth
        for model, (runs, images) in snap["batches"].items():
            batches[model][0] += runs
            batches[model][1] += images
    out = [
        "# HELP medlens_requests_total Requests by route, model and HTTP status.",
        "# TYPE medlens_requests_total counter",
    ]
    for (route, model, status), n in sorted(counts.items()):
        out.append(
            f'medlens_requests_total{{route="{route}",model="{model}",status="{status}"}} {n}'
        )
    out += [
        "# HELP medlens_request_seconds Request latency.",
        "# TYPE medlens_request_seconds histogram",
    ]
    for (route, model), per_bucket in sorted(buckets.items()):
        labels = f'route="{route}",model="{model}"'
        for bound, n in zip(BUCKETS, per_bucket, strict=True):
            out.append(f'medlens_request_seconds_bucket{{{labels},le="{bound}"}} {n}')
        out.append(f'medlens_request_seconds_bucket{{{labels},le="+Inf"}} {totals[(route, model)]}')
        out.append(f"medlens_request_seconds_sum{{{labels}}} {sums[(route, model)]:.6f}")
        out.append(f"medlens_request_seconds_count{{{labels}}} {totals[(route, model)]}")
    out += [
        "# HELP medlens_queue_depth Images waiting for a batch.",
        "# TYPE medlens_queue_depth gauge",
    ]
    out += [f'medlens_queue_depth{{model="{m}"}} {d}' for m, d in sorted(queue.items())]
    out += [
        "# HELP medlens_batches_total Forward passes run.",
        "# TYPE medlens_batches_total counter",
    ]
    out += [f'medlens_batches_total{{model="{m}"}} {b}' for m, (b, _) in sorted(batches.items())]
    out += [
        "# HELP medlens_batched_images_total Images in those passes.",
        "# TYPE medlens_batched_images_total counter",
    ]
    out += [
        f'medlens_batched_images_total{{model="{m}"}} {n}' for m, (_, n) in sorted(batches.items())
    ]
    return "\n".join(out) + "\n"


class SharedMetrics:
    """The metrics of every worker process of one service, through a folder they share.

    Each worker writes its snapshot there (atomically, every ``interval_s`` and at each scrape);
    a scrape of any worker sums them all, so `/metrics` counts the whole service whichever
    worker answers. Other workers' figures are at most ``interval_s`` old; the queue depth of a
    worker that is gone counts as zero, its requests still count.
    """

    def __init__(
        self,
        folder: Path,
        snapshot: Callable[[], dict[str, Any]],
        interval_s: float = 1.0,
    ):
        self.folder = folder
        self._snapshot = snapshot
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="metrics-share", daemon=True)
        self._thread.start()

    def _write(self) -> dict[str, Any]:
        snap = self._snapshot()
        atomic_write_text(self.folder / f"{os.getpid()}.json", json.dumps(snap))
        return snap

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._write()

    def collect(self) -> list[dict[str, Any]]:
        own = self._write()
        snaps = [own]
        for path in self.folder.glob("*.json"):
            if path.stem == str(os.getpid()):
                continue
            try:
                snap = json.loads(path.read_text())
            except (OSError, ValueError):
                continue  # a worker replaced it just now: next scrape
            if not _alive(int(path.stem)):
                snap["queue"] = {}
            snaps.append(snap)
        return snaps

    def close(self) -> None:
        self._stop.set()
        self._write()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def audit_to_stderr() -> None:
    """Send audit lines to stderr (when no --audit-log file is given)."""
    audit = logging.getLogger("medlens.audit")
    audit.setLevel(logging.INFO)
    audit.propagate = False  # the CLI's root handler would print every line a second time
    if not audit.handlers:
        audit.addHandler(logging.StreamHandler())


class AuditLog:
    """JSON lines to a file (appended, flushed per line) or to the ``medlens.audit`` logger."""

    def __init__(self, path: Path | None):
        self._lock = threading.Lock()
        self._file = path.open("a", encoding="utf-8") if path else None
        self._log = logging.getLogger("medlens.audit")

    def write(self, **fields: Any) -> None:
        line = json.dumps({"time": datetime.now(UTC).isoformat(timespec="milliseconds"), **fields})
        with self._lock:
            if self._file is not None:
                self._file.write(line + "\n")
                self._file.flush()
            else:
                self._log.info(line)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
