"""Dynamic batching: concurrent requests grouped into one forward pass within a few milliseconds,
behind a bounded queue that refuses work (instead of piling it up) when full. A request that
finds nothing queued or running can run at once on its own thread (``run_if_idle``): there is
no batch to join, and the hop to the batcher thread and back would only add latency."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray


class QueueFullError(Exception):
    """The batcher's queue is at its limit: retry later."""


@dataclass
class _Job:
    image: NDArray[np.float32]
    future: Future[NDArray[np.float32]]


class DynamicBatcher:
    """Runs ``fn`` (a batch (N, ...) -> outputs (N, ...)) on groups of submitted images: the first
    waiting image opens a batch, which closes after ``window_s`` or at ``max_batch`` images.
    Images of different shapes never share a batch."""

    def __init__(
        self,
        fn: Callable[[NDArray[np.float32]], NDArray[np.float32]],
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
        self._busy = threading.Lock()  # held while ``fn`` runs, by either path
        self._count = threading.Lock()
        self._pending = 0  # submitted jobs not yet answered
        self.batches = 0
        self.images = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    def submit(self, image: NDArray[np.float32]) -> Future[NDArray[np.float32]]:
        """A future of ``fn``'s output row for ``image``; raises :class:`QueueFullError` when full."""
        job = _Job(image, Future())
        with self._count:
            try:
                self._queue.put_nowait(job)
            except queue.Full:
                raise QueueFullError from None
            self._pending += 1
        return job.future

    def run_if_idle(self, image: NDArray[np.float32]) -> NDArray[np.float32] | None:
        """``fn``'s output row for ``image``, computed now on the calling thread when no job is
        queued or running; None otherwise (then ``submit`` it). Never jumps the queue."""
        if self._pending or not self._busy.acquire(blocking=False):
            return None
        try:
            if self._pending:
                return None
            out: NDArray[np.float32] = self.fn(image[None])[0]
            self.batches += 1
            self.images += 1
            return out
        finally:
            self._busy.release()

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
            with self._busy:
                for group in groups.values():
                    self._answer(group)
            with self._count:
                self._pending -= len(jobs)

    def _answer(self, group: list[_Job]) -> None:
        """Run one same-shape group and hand each caller its row (or the error)."""
        live = [j for j in group if j.future.set_running_or_notify_cancel()]
        if not live:
            return
        try:
            out = self.fn(np.stack([j.image for j in live]))
        except Exception as err:  # every waiting caller gets the error, the loop lives on
            for j in live:
                j.future.set_exception(err)
            return
        self.batches += 1
        self.images += len(live)
        for j, row in zip(live, out, strict=True):
            j.future.set_result(row)
