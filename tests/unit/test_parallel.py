from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import pytest

import medlens._parallel as parallel_module
from medlens._parallel import can_fork, ordered_map
from medlens.data import Manifest, build_cache, load_manifest
from medlens.data.check import check_dataset
from medlens.data.labels import infer_labels
from medlens.data.synthetic import write_chest_folder
from medlens.errors import DataError, MedlensError
from medlens.planning.fingerprint import fingerprint_dataset
from medlens.transforms import Pipeline, Resize, ZScore

T = TypeVar("T")

pytestmark = pytest.mark.skipif(not can_fork(), reason="worker processes are forked on Linux")


def _square_with_pid(offset: int, x: int) -> tuple[int, int]:
    return x * x + offset, os.getpid()


def _fail_on_three(_: None, x: int) -> int:
    if x == 3:
        raise DataError("cannot read", path=f"img{x}.png", fix="re-export it")
    return x


def _die_on_three(_: None, x: int) -> int:
    if x == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    return x


def _nested(_: None, x: int) -> list[int]:
    return [pid for _, pid in ordered_map(_square_with_pid, [x, x + 1], state=0, workers=2)]


def test_results_come_in_order_from_worker_processes() -> None:
    found = list(ordered_map(_square_with_pid, list(range(40)), state=1, workers=2, ahead=2))
    assert [value for value, _ in found] == [x * x + 1 for x in range(40)]
    assert os.getpid() not in {pid for _, pid in found}
    one = list(ordered_map(_square_with_pid, [2, 3], state=0, workers=1))
    assert one == [(4, os.getpid()), (9, os.getpid())]


def test_an_error_in_a_worker_keeps_its_class_path_and_fix() -> None:
    with pytest.raises(DataError) as err:
        list(ordered_map(_fail_on_three, list(range(8)), workers=2))
    assert err.value.path == "img3.png" and err.value.fix == "re-export it"
    assert str(err.value) == "img3.png: cannot read Fix: re-export it"


def test_a_killed_worker_is_an_error_not_a_hang() -> None:
    with pytest.raises(MedlensError, match=r"worker process .* died.*MEDLENS_WORKERS=1"):
        list(ordered_map(_die_on_three, list(range(8)), workers=2))
    # the pool is gone and the next map works
    assert [v for v, _ in ordered_map(_square_with_pid, [1, 2], state=0, workers=2)] == [1, 4]


def test_a_map_inside_a_worker_runs_in_that_worker() -> None:
    for pids in ordered_map(_nested, [0, 1, 2], workers=2):
        assert len(set(pids)) == 1 and pids[0] != os.getpid()


def _here_and_in_workers(monkeypatch: pytest.MonkeyPatch, run: Callable[[str], T]) -> list[T]:
    """``run(name)`` with every map in this process, then with every map in 2 workers."""
    monkeypatch.setattr(parallel_module, "PARALLEL_AFTER_S", 0.0)  # test images are tiny
    found = []
    for workers in ("1", "2"):
        monkeypatch.setenv("MEDLENS_WORKERS", workers)
        found.append(run(workers))
    return found


def test_a_cache_built_in_workers_equals_one_built_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = write_chest_folder(tmp_path / "data", 24, size=40, seed=3)
    manifest = load_manifest(folder)
    pipe = Pipeline((ZScore(), Resize((16, 16))))
    here, forked = _here_and_in_workers(
        monkeypatch, lambda name: np.array(build_cache(manifest, pipe, tmp_path / name).images)
    )
    np.testing.assert_array_equal(forked, here)


def _with_a_truncated_file(tmp_path: Path, index: int) -> tuple[Manifest, Path]:
    """12 phantom PNGs, the ``index``-th of them cut to 40 bytes."""
    folder = write_chest_folder(tmp_path / "data", 12, size=24, seed=1)
    manifest = load_manifest(folder)
    victim = folder / manifest.rows[index]["path"]
    victim.write_bytes(victim.read_bytes()[:40])
    return manifest, victim


def test_a_bad_image_in_a_parallel_build_names_the_file_and_publishes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest, victim = _with_a_truncated_file(tmp_path, 7)
    monkeypatch.setattr(parallel_module, "PARALLEL_AFTER_S", 0.0)
    monkeypatch.setenv("MEDLENS_WORKERS", "2")
    with pytest.raises(DataError, match=victim.name):
        build_cache(manifest, Pipeline((Resize((16, 16)),)), tmp_path / "cache")
    assert not [p for p in (tmp_path / "cache").iterdir() if p.is_dir()]


def test_a_fingerprint_read_in_workers_equals_one_read_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = write_chest_folder(tmp_path / "data", 16, size=32, seed=2)
    manifest = load_manifest(folder)
    labels = infer_labels(manifest)
    here, forked = _here_and_in_workers(
        monkeypatch, lambda _: fingerprint_dataset(manifest, labels, sample=12)
    )
    assert forked == here


def test_a_data_check_in_workers_reports_what_one_here_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest, _ = _with_a_truncated_file(tmp_path, 5)
    here, forked = _here_and_in_workers(monkeypatch, lambda _: check_dataset(manifest))
    assert forked == here and [p for p, _ in forked.unreadable] == [manifest.rows[5]["path"]]


_ORPHAN_SCRIPT = """
import os, sys, time
from medlens._parallel import ordered_map

def slow(_, x):
    os.write(1, f"{os.getpid()}\\n".encode())  # one write: two workers' lines never interleave
    time.sleep(60)

for _ in ordered_map(slow, list(range(4)), workers=2):
    pass
"""


def test_workers_die_with_a_parent_killed_by_sigkill(tmp_path: Path) -> None:
    script = tmp_path / "parent.py"
    script.write_text(_ORPHAN_SCRIPT)
    parent = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, text=True, cwd=tmp_path
    )
    assert parent.stdout is not None
    workers = [int(parent.stdout.readline()) for _ in range(2)]
    parent.kill()
    parent.wait(timeout=10)
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in workers)


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return False
    return status != "Z"  # a zombie has exited; only its reaper is gone


def test_a_map_left_early_ends_its_workers() -> None:
    results = ordered_map(_square_with_pid, list(range(100)), state=0, workers=2)
    pids = {next(results)[1] for _ in range(4)}
    results.close()
    assert not multiprocessing.active_children()
    assert not any(_alive(pid) for pid in pids)
