"""Decode and preprocess in worker processes: pydicom's JPEG 2000 decoder and most of the
preprocessing hold the GIL, so threads do not add a core (12 radiographs: 1.20 s one after
another, 1.28 s on 2 threads).

Workers are forked, as PyTorch's DataLoader does on Linux: a forked child starts in
milliseconds with everything the parent imported, and - unlike spawn or forkserver - never
re-imports the caller's ``__main__`` (which costs a torch import per pool, and re-runs a script
without a ``__main__`` guard). Where fork is unavailable the work runs in threads; inside a
worker process (the workers are the parallelism) it runs inline.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from threadpoolctl import threadpool_limits

from medlens.errors import MedlensError

T = TypeVar("T")
R = TypeVar("R")

#: (function, state, items) of the map being run; forked workers inherit it, so only an item's
#: index crosses the pipe. One map at a time uses processes; a second one meanwhile uses threads.
_JOB: tuple[Callable[[Any, Any], Any], Any, Sequence[Any]] | None = None
_JOB_LOCK = threading.Lock()
#: estimated one-process time above which a map forks workers (starting them takes ~50 ms)
PARALLEL_AFTER_S = 2.0


def can_fork() -> bool:
    """Whether worker processes can be forked here: Linux, and not inside a child process."""
    return (
        sys.platform.startswith("linux")
        and "fork" in multiprocessing.get_all_start_methods()
        and multiprocessing.parent_process() is None
    )


def default_workers() -> int:
    """``MEDLENS_WORKERS`` if set, else one worker per core this process may use."""
    configured = os.environ.get("MEDLENS_WORKERS", "").strip()
    if configured:
        try:
            return max(1, int(configured))
        except ValueError:
            raise MedlensError(
                f"MEDLENS_WORKERS={configured!r} is not a number", fix="set it to 1, 2, ..."
            ) from None
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


#: prctl option: the signal a process gets when its parent dies (linux/prctl.h)
_PR_SET_PDEATHSIG = 1


def _init_worker(parent: int) -> None:
    # a parent killed with -9 runs no clean-up: without this its workers would wait for tasks
    # forever (they hold the task pipe's write end themselves, so it never reports EOF). The
    # signal follows the forking thread, the one that started the map and consumes it.
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # it died before the line above
        os._exit(1)
    # another thread (a rich progress bar) may have held the console's lock at the fork: write
    # to the real streams, and log plainly, never through a handler bound to that console
    sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
    root = logging.getLogger()
    logging.basicConfig(level=root.level, format="%(levelname)s %(name)s: %(message)s", force=True)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's: it ends the pool
    threadpool_limits(1)  # the workers are the parallelism; nested BLAS threads oversubscribe
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)


def _run(index: int) -> Any:
    if _JOB is None:  # pragma: no cover - a worker forked outside ordered_map
        raise RuntimeError("medlens worker started without a job")
    fn, state, items = _JOB
    return fn(state, items[index])


def ordered_map(
    fn: Callable[[Any, T], R],
    items: Sequence[T],
    *,
    state: Any = None,
    workers: int | None = None,
    ahead: int = 4,
    processes: bool = True,
) -> Generator[R, None, None]:
    """``fn(state, item)`` for every item, yielded in order.

    With ``workers`` > 1 (default :func:`default_workers`) the calls run in that many forked
    processes (``processes`` and fork available) or else threads, at most ``ahead`` per worker
    queued beyond the one being yielded (a slow consumer does not pile up results); with 1, or
    inside any child process, they run here as the results are consumed. For processes ``fn``
    must be a module-level function; ``state`` and ``items`` reach them through the fork,
    unpickled; results and exceptions are pickled back. A worker process that dies (killed, out
    of memory) raises :class:`MedlensError` instead of hanging. A generator left early shuts
    its workers down.
    """
    global _JOB
    workers = default_workers() if workers is None else workers
    if workers <= 1 or len(items) < 2 or multiprocessing.parent_process() is not None:
        for item in items:
            yield fn(state, item)
        return
    forked = processes and can_fork() and _JOB_LOCK.acquire(blocking=False)
    pool: Executor
    if forked:
        _JOB = (fn, state, items)
        pool = ProcessPoolExecutor(
            min(workers, len(items)),
            mp_context=multiprocessing.get_context("fork"),
            initializer=_init_worker,
            initargs=(os.getpid(),),
        )
        task: Callable[[int], Any] = _run
    else:
        pool = ThreadPoolExecutor(min(workers, len(items)))

        def task(index: int) -> Any:
            return fn(state, items[index])

    try:
        queued: deque[Future[Any]] = deque()
        following = iter(range(len(items)))
        for index in following:
            queued.append(pool.submit(task, index))
            if len(queued) >= workers * ahead:
                break
        while queued:
            try:
                result = queued.popleft().result()
            except BrokenProcessPool:
                raise MedlensError(
                    "a worker process reading the images died (killed, or out of memory)",
                    fix="free memory, or read in this process with MEDLENS_WORKERS=1",
                ) from None
            for index in following:
                queued.append(pool.submit(task, index))
                break
            yield result
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        if forked:
            _JOB = None
            _JOB_LOCK.release()


def timed_map(
    fn: Callable[[Any, T], R],
    items: Sequence[T],
    *,
    state: Any = None,
    workers: int | None = None,
    ahead: int = 4,
    threads_when_fast: bool = False,
) -> Generator[R, None, None]:
    """:func:`ordered_map` that runs the first item here and times it: the rest go to worker
    processes when they would take over :data:`PARALLEL_AFTER_S` here (a folder of 2k
    radiographs, ~0.15 s each), and otherwise run here, or in threads with
    ``threads_when_fast`` (MedMNIST-sized files, ~0.1 ms each: not worth a fork)."""
    if not items:
        return
    tic = time.perf_counter()
    first = fn(state, items[0])
    slow = (time.perf_counter() - tic) * (len(items) - 1) > PARALLEL_AFTER_S
    yield first
    if not (slow or threads_when_fast):
        workers = 1
    rest = items[1:]
    yield from ordered_map(fn, rest, state=state, workers=workers, ahead=ahead, processes=slow)
