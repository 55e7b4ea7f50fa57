"""Prometheus-style metrics and the audit log of a service.

The audit log has one JSON line per request: time, token id (never the token), route, model,
SHA-256 of the input bytes, status, result and latency. It never holds file names, DICOM tags or
error texts, which can carry patient identifiers.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

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

    def render(self, queue_depths: dict[str, int], batches: dict[str, tuple[int, int]]) -> str:
        """The text exposition format (version 0.0.4)."""
        out = [
            "# HELP medlens_requests_total Requests by route, model and HTTP status.",
            "# TYPE medlens_requests_total counter",
        ]
        with self._lock:
            for (route, model, status), n in sorted(self._counts.items()):
                out.append(
                    f'medlens_requests_total{{route="{route}",model="{model}",status="{status}"}} {n}'
                )
            out += [
                "# HELP medlens_request_seconds Request latency.",
                "# TYPE medlens_request_seconds histogram",
            ]
            for (route, model), counts in sorted(self._buckets.items()):
                labels = f'route="{route}",model="{model}"'
                for bound, n in zip(BUCKETS, counts, strict=True):
                    out.append(f'medlens_request_seconds_bucket{{{labels},le="{bound}"}} {n}')
                total = self._totals[(route, model)]
                out.append(f'medlens_request_seconds_bucket{{{labels},le="+Inf"}} {total}')
                out.append(
                    f"medlens_request_seconds_sum{{{labels}}} {self._sums[(route, model)]:.6f}"
                )
                out.append(f"medlens_request_seconds_count{{{labels}}} {total}")
        out += [
            "# HELP medlens_queue_depth Images waiting for a batch.",
            "# TYPE medlens_queue_depth gauge",
        ]
        out += [f'medlens_queue_depth{{model="{m}"}} {d}' for m, d in sorted(queue_depths.items())]
        out += [
            "# HELP medlens_batches_total Forward passes run.",
            "# TYPE medlens_batches_total counter",
        ]
        out += [
            f'medlens_batches_total{{model="{m}"}} {b}' for m, (b, _) in sorted(batches.items())
        ]
        out += [
            "# HELP medlens_batched_images_total Images in those passes.",
            "# TYPE medlens_batched_images_total counter",
        ]
        out += [
            f'medlens_batched_images_total{{model="{m}"}} {n}'
            for m, (_, n) in sorted(batches.items())
        ]
        return "\n".join(out) + "\n"


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
