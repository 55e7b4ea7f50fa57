"""Dynamic batching: concurrent requests grouped into one forward pass within a few milliseconds,
behind a bounded queue that refuses work (instead of piling it up) when full."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray


class QueueFullError(Exception):
    """The batcher's queue is at its limit: retry later."""


@dataclass
class _Job:
    image: NDArray[np.float32]
    future: Future[Any]


class DynamicBatcher:
    """Runs ``fn`` (a batch (N, ...) -> one output per image) on groups of submitted images: the
    first waiting image opens a batch, which closes after ``window_s`` or at ``max_batch`` images.
    Images of different shapes never share a batch."""

    def __init__(
        self,
        fn: Callable[[NDArray[np.float32]], Sequence[Any]],
        *,
        max_batch: int = 32,
        window_s: float = 0.005,
        max_queue: int = 256,
        name: str = "batcher",
    ):
        self.fn = fn
        self.max_batch = max_batch
        self.window_s = window_s
        self._queue: queue.Queue[_Job | None] = queue.Queue(maxsize=max_queue)
        self.batches = 0
        self.images = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    def submit(self, image: NDArray[np.float32]) -> Future[Any]:
        """A future of ``fn``'s output row for ``image``; raises :class:`QueueFullError` when full."""
        job = _Job(image, Future())
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise QueueFullError from None
        return job.future

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=5)

    def _collect(self, first: _Job) -> tuple[list[_Job], bool]:
        jobs, deadline = [first], time.perf_counter() + self.window_s
        while len(jobs) < self.max_batch:
            remaining = deadline - time.perf_counter()
            try:
                job = (
                    self._queue.get(timeout=max(remaining, 0))
                    if remaining > 0
                    else self._queue.get_nowait()
                )
            except queue.Empty:
                break
            if job is None:
                return jobs, True
            jobs.append(job)
        return jobs, False

    def _run(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is None:
                return
            jobs, stop = self._collect(first)
            groups: dict[tuple[int, ...], list[_Job]] = {}
            for job in jobs:
                groups.setdefault(job.image.shape, []).append(job)
            for group in groups.values():
                live = [j for j in group if j.future.set_running_or_notify_cancel()]
                if not live:
                    continue
                try:
                    out = self.fn(np.stack([j.image for j in live]))
                except Exception as err:  # every waiting caller gets the error, the loop lives on
                    for j in live:
                        j.future.set_exception(err)
                    continue
                self.batches += 1
                self.images += len(live)
                for j, row in zip(live, out, strict=True):
                    j.future.set_result(row)
