"""Preprocessed cache: decode and preprocess once into memory-mapped arrays, reuse across runs.

The key hashes the inputs (path, size, modification time, label, split of every row) and the
preprocessing pipeline. A build happens in a private temporary folder under an exclusive file
lock and is published with one atomic rename, so two processes building the same key at once
end up sharing one complete store and a killed build leaves nothing half-written behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from threadpoolctl import threadpool_limits

from medlens._parallel import timed_map
from medlens.data.builders import load_sample
from medlens.data.manifest import Manifest
from medlens.errors import DataError
from medlens.io import split_selector
from medlens.transforms.base import Pipeline

CACHE_FORMAT = 1
Progress = Callable[[int, int], None]


def cache_key(manifest: Manifest, pipeline: Pipeline) -> str:
    """Hash of the inputs (with file size and mtime) and of the preprocessing settings."""
    h = hashlib.sha256(f"medlens-cache-{CACHE_FORMAT}".encode())
    h.update(pipeline.to_json().encode())
    stats: dict[Path, str] = {}
    for row in manifest:
        h.update(json.dumps(row, sort_keys=True).encode())
        for column in manifest.path_columns:
            if row.get(column):
                base = split_selector(manifest.resolve(row, column))[0]
                if base not in stats:
                    try:
                        st = base.stat()
                        stats[base] = f"{base.resolve()}:{st.st_size}:{st.st_mtime_ns}"
                    except OSError:
                        stats[base] = f"{base}:missing"
                h.update(stats[base].encode())
    return h.hexdigest()[:24]


@dataclass(frozen=True)
class CachedArrays:
    """A published cache entry: ``images`` (N, C, *spatial) float32 memmap, labels, splits."""

    folder: Path
    images: NDArray[np.float32]
    labels: list[dict[str, str]]
    splits: NDArray[np.str_]

    def indices(self, split: str) -> NDArray[np.int64]:
        return np.flatnonzero(self.splits == split)

    def batches(
        self,
        indices: NDArray[np.int64],
        batch_size: int,
        *,
        generator: torch.Generator | None = None,
    ) -> Iterator[tuple[NDArray[np.int64], torch.Tensor]]:
        """Yield ``(row indices, image tensor)`` batches; shuffled when a generator is given.

        Each batch is one sorted fancy-index into the memmap (sequential reads), not a Python
        loop over samples.
        """
        order = (
            indices
            if generator is None
            else indices[torch.randperm(len(indices), generator=generator).numpy()]
        )
        for start in range(0, len(order), batch_size):
            chosen = np.sort(order[start : start + batch_size])
            yield chosen, torch.from_numpy(np.ascontiguousarray(self.images[chosen]))


def _load(folder: Path) -> CachedArrays:
    info = json.loads((folder / "info.json").read_text())
    return CachedArrays(
        folder=folder,
        images=np.load(folder / "images.npy", mmap_mode="r"),
        labels=info["labels"],
        splits=np.asarray(info["splits"]),
    )


def build_cache(
    manifest: Manifest,
    pipeline: Pipeline,
    cache_dir: str | Path,
    *,
    progress: Progress | None = None,
) -> CachedArrays:
    """Return the cache entry for (manifest, pipeline), building it if needed.

    Example:
        >>> cached = build_cache(manifest, Pipeline((ZScore(), Resize((64, 64)))), ".cache")  # doctest: +SKIP
        >>> cached.images.shape
        (1000, 1, 64, 64)
    """
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = cache_key(manifest, pipeline)
    final = cache_dir / key
    if (final / "info.json").exists():
        return _load(final)
    with (cache_dir / f"{key}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a concurrent builder waits here, then reuses our result
        if (final / "info.json").exists():
            return _load(final)
        # builds of this key happen under the lock only: a folder left by one is from a build
        # that was killed (kill -9, out of memory), and can be the size of the whole dataset
        for stale in cache_dir.glob(f".{key}.*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=cache_dir))
        try:
            # one BLAS thread, as in each worker: the sums of a resize's matrix product then
            # round alike whether the build runs in workers or here (else ~5e-7 apart)
            with threadpool_limits(1):
                _build_into(tmp, manifest, pipeline, progress)
            os.replace(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return _load(final)


def _prepared(state: tuple[Manifest, Pipeline], row: dict[str, str]) -> NDArray[np.float32]:
    manifest, pipeline = state
    return pipeline(load_sample(manifest, row)).array


def _build_into(
    folder: Path, manifest: Manifest, pipeline: Pipeline, progress: Progress | None
) -> None:
    # decoding (JPEG 2000 holds the GIL) and resizing a 2k radiograph take ~0.15 s: a folder of
    # them is built in worker processes; MedMNIST-sized samples (~0.1 ms) in this one
    with contextlib.closing(
        timed_map(_prepared, manifest.rows, state=(manifest, pipeline))
    ) as arrays:
        first = next(arrays)
        images = np.lib.format.open_memmap(
            folder / "images.npy", mode="w+", dtype=np.float32, shape=(len(manifest), *first.shape)
        )
        images[0] = first
        for i, (row, array) in enumerate(zip(manifest.rows[1:], arrays, strict=True), start=1):
            if array.shape != first.shape:
                raise DataError(
                    f"after preprocessing this image has shape {array.shape}, the first had {first.shape}",
                    path=row["path"],
                    fix="end the pipeline with Resize or CropOrPad so that all images share one shape",
                )
            images[i] = array
            if progress is not None:
                progress(i + 1, len(manifest))
    images.flush()
    del images
    info: dict[str, Any] = {
        "format": CACHE_FORMAT,
        "pipeline": pipeline.spec(),
        "labels": [{c: row.get(c, "") for c in manifest.label_columns} for row in manifest],
        "splits": [row.get("split", "") for row in manifest],
        "paths": [row["path"] for row in manifest],
    }
    (folder / "info.json").write_text(json.dumps(info))
