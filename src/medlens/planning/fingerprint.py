"""Dataset and machine fingerprints: the facts a plan is derived from."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from medlens._parallel import timed_map
from medlens.data.builders import load_sample
from medlens.data.labels import LabelSpec
from medlens.data.manifest import Manifest
from medlens.errors import DataError
from medlens.models.precision import native_bf16


@dataclass(frozen=True)
class DatasetFingerprint:
    """Counts per split, image geometry and intensities (from a sample), class balance."""

    counts: dict[str, int]
    spatial_dims: int
    median_shape: list[int]
    min_shape: list[int]
    max_shape: list[int]
    channels: list[int]
    median_spacing: list[float]
    intensity: dict[str, float]
    modality: str
    task: str
    class_counts: dict[str, int]
    sampled: int
    #: the largest ratio, over axes, of the sample's largest to smallest spacing (1.0: one spacing)
    spacing_ratio: float = 1.0
    #: distinct patients per split: what splits and confidence intervals resample
    patients: dict[str, int] = field(default_factory=dict)

    @property
    def one_grid(self) -> bool:
        """Every sampled image has the same shape and spacing: a voxel is the same size in all."""
        return self.min_shape == self.max_shape and self.spacing_ratio <= 1.01

    @property
    def imbalance(self) -> float:
        """Largest over smallest training class count (1.0 = balanced)."""
        counts = [c for c in self.class_counts.values() if c > 0]
        return max(counts) / min(counts) if counts else 1.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "imbalance": round(self.imbalance, 3)}


@dataclass(frozen=True)
class HardwareFingerprint:
    cpu_cores: int
    torch_threads: int
    gpu: str | None
    gpu_memory_gb: float | None
    #: the CPU computes bfloat16 natively, so training on it runs in mixed precision
    bf16: bool = False

    @property
    def device(self) -> str:
        return "cuda" if self.gpu else "cpu"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def hardware_fingerprint() -> HardwareFingerprint:
    gpu, memory = None, None
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        gpu, memory = props.name, round(props.total_memory / 2**30, 1)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return HardwareFingerprint(cores or 1, torch.get_num_threads(), gpu, memory, native_bf16())


@dataclass(frozen=True)
class _Summary:
    shape: tuple[int, ...]
    channels: int
    spacing: tuple[float, ...]
    modality: str
    values: NDArray[Any]  # up to 2000 voxels drawn at random


def _summarise(state: tuple[Manifest, int], item: tuple[int, dict[str, str]]) -> _Summary:
    manifest, seed = state
    index, row = item
    image = load_sample(manifest, row)
    flat = image.array.reshape(-1)
    draw = np.random.default_rng([seed, index]).integers(0, flat.size, size=min(2000, flat.size))
    return _Summary(
        image.spatial_shape, image.channels, image.spacing, image.meta.modality or "", flat[draw]
    )


def fingerprint_dataset(
    manifest: Manifest, labels: LabelSpec, *, sample: int = 200, seed: int = 0
) -> DatasetFingerprint:
    """Fingerprint ``manifest``; geometry and intensities come from up to ``sample`` images."""
    rows = manifest.rows
    chosen = np.random.default_rng(seed).choice(
        len(rows), size=min(sample, len(rows)), replace=False
    )
    items = [(int(i), rows[i]) for i in sorted(chosen)]
    # a sample of 2k radiographs takes ~30 s in one process: read them in workers
    summaries = list(timed_map(_summarise, items, state=(manifest, seed)))
    shapes = [s.shape for s in summaries]
    spacings = [s.spacing for s in summaries]
    channels = Counter(s.channels for s in summaries)
    modalities = Counter(s.modality for s in summaries)
    values = [s.values for s in summaries]
    dims = {len(s) for s in shapes}
    if len(dims) != 1:
        raise DataError(
            f"the data mixes 2D and 3D images ({sorted(dims)})",
            path=manifest.root,
            fix="train 2D and 3D data separately",
        )
    shape_arr = np.asarray(shapes)
    pooled = np.concatenate(values).astype(np.float64)
    train = [r for r in rows if r.get("split") == "train"] or rows
    targets = labels.encode(train, source=manifest.root)
    per_class = (
        targets.sum(axis=0)
        if labels.multilabel
        else np.bincount(targets, minlength=labels.num_outputs)
    )
    return DatasetFingerprint(
        counts=dict(Counter(r.get("split") or "unsplit" for r in rows)),
        patients={split: len(ids) for split, ids in _patients_per_split(rows).items()},
        spatial_dims=dims.pop(),
        median_shape=[int(v) for v in np.median(shape_arr, axis=0)],
        min_shape=[int(v) for v in shape_arr.min(axis=0)],
        max_shape=[int(v) for v in shape_arr.max(axis=0)],
        channels=sorted(channels),
        median_spacing=[float(v) for v in np.median(np.asarray(spacings), axis=0)],
        intensity={
            "min": float(pooled.min()),
            "max": float(pooled.max()),
            "mean": float(pooled.mean()),
            "std": float(pooled.std()),
            "p01": float(np.percentile(pooled, 1)),
            "p99": float(np.percentile(pooled, 99)),
        },
        modality=modalities.most_common(1)[0][0],
        task=labels.task,
        class_counts={c: int(n) for c, n in zip(labels.classes, per_class, strict=True)},
        sampled=len(chosen),
        spacing_ratio=_spacing_ratio(np.asarray(spacings, dtype=np.float64)),
    )


def _patients_per_split(rows: list[dict[str, str]]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for row in rows:
        out.setdefault(row.get("split") or "unsplit", set()).add(row["patient_id"])
    return out


def _spacing_ratio(spacings: np.ndarray) -> float:
    low = spacings.min(axis=0)
    if np.any(low <= 0):
        return float("inf")  # a zero or negative spacing: no geometry to trust
    return round(float(np.max(spacings.max(axis=0) / low)), 4)
