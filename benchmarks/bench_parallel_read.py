"""Reading folders of full-size images: worker processes against one process and threads.

Decoding a JPEG 2000 radiograph and shrinking it to the model's input take ~0.15 s, and both
hold the GIL most of the time, so threads add little. Two archives, made in a temporary folder:

- 48 JPEG 2000 chest radiographs: pydicom's RG1_J2KI, RG3_J2KI and RG3_J2KR (1955x1841 and
  1760x2140), copied with new instance UIDs and patient ids;
- 240 8-bit PNGs of 1024^2 px (PneumoniaMNIST training images upscaled, with film grain, so
  that they compress like an exported radiograph: ~650 KB each).

Measured, interleaved: the training cache build (percentile clip, z-score, resize to 128^2) in
this process with one BLAS thread against forked workers (the default: one per core), with the
arrays compared; and ``predict_items`` with a CompactNet at 128 px (untrained) reading ahead in
two threads (what it did before) against forked workers.

    PYTHONPATH=src:. python benchmarks/bench_parallel_read.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import torch
from PIL import Image
from scipy.ndimage import zoom

import medlens._parallel as parallel
from benchmarks.common import SHARED, commit, write_result
from medlens.data import build_cache, load_manifest
from medlens.data.labels import LabelSpec
from medlens.inference import load_artifact, save_artifact
from medlens.inference.predictor import expand_inputs, predict_items
from medlens.models import create_model
from medlens.transforms import Pipeline

NAME = "parallel_read"
RADIOGRAPHS = ("RG1_J2KI.dcm", "RG3_J2KI.dcm", "RG3_J2KR.dcm")
PREPROCESSING = [
    {"name": "percentile_clip", "lower": 0.5, "upper": 99.5},
    {"name": "zscore", "nonzero": False},
    {"name": "resize", "shape": [128, 128], "order": 1},
]


def _radiographs(folder: Path, count: int = 48) -> Path:
    source = SHARED / "dicom_pydicom_samples" / "pydicom_data_store"
    for i in range(count):
        ds = pydicom.dcmread(source / RADIOGRAPHS[i % 3])
        ds.SOPInstanceUID = f"{ds.SOPInstanceUID}.{i}"
        ds.PatientID = f"P{i}"
        out = folder / ("normal", "pneumonia")[i % 2]
        out.mkdir(parents=True, exist_ok=True)
        ds.save_as(out / f"r{i:03d}.dcm")
    return folder


def _pngs(folder: Path, count: int = 240) -> Path:
    data = np.load(SHARED / "pneumoniamnist" / "pneumoniamnist.npz")
    rng = np.random.default_rng(0)
    for i in range(count):
        out = folder / ("normal", "pneumonia")[int(data["train_labels"][i, 0])]
        out.mkdir(parents=True, exist_ok=True)
        big = zoom(data["train_images"][i].astype(np.float32), 1024 / 28, order=3)
        grain = rng.normal(0, 6, big.shape)
        Image.fromarray(np.clip(big + grain, 0, 255).astype(np.uint8)).save(out / f"p{i:04d}.png")
    return folder


def _model(folder: Path) -> Path:
    torch.manual_seed(0)
    return save_artifact(
        folder,
        [create_model("compactnet", 2, 1, 2, widths=(16, 32, 64, 128), stem_stride=2)],
        labels=LabelSpec("binary", ["normal", "pneumonia"], ["0", "1"]),
        preprocessing=PREPROCESSING,
        plan={"input_size": [128, 128]},
        operating_point={"temperature": 1.0, "threshold": 0.5, "method": "youden"},
        metrics={},
        data_hash="benchmark",
    )


def _build(archive: Path, cache: Path, workers: str) -> tuple[float, np.ndarray]:
    manifest = load_manifest(archive)
    before = os.environ.get("MEDLENS_WORKERS")
    os.environ["MEDLENS_WORKERS"] = workers
    try:
        started = time.perf_counter()
        arrays = np.array(build_cache(manifest, Pipeline.from_spec(PREPROCESSING), cache).images)
        return time.perf_counter() - started, arrays
    finally:
        if before is None:
            del os.environ["MEDLENS_WORKERS"]
        else:
            os.environ["MEDLENS_WORKERS"] = before


def _predict(model: Path, archive: Path, processes: bool) -> tuple[float, list[dict[str, Any]]]:
    artifact = load_artifact(model)
    items = expand_inputs([archive])
    # the threshold decides processes against threads; 10^9 s keeps the threads
    default = parallel.PARALLEL_AFTER_S
    parallel.PARALLEL_AFTER_S = default if processes else 1e9
    try:
        started = time.perf_counter()
        rows = list(predict_items(artifact, items, workers=2))
        return time.perf_counter() - started, rows
    finally:
        parallel.PARALLEL_AFTER_S = default


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    cases: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = _model(root / "model")
        archives = {
            "jpeg2000_radiographs_48": _radiographs(root / "dcm"),
            "png_1024px_240": _pngs(root / "png"),
        }
        for name, archive in archives.items():
            found: dict[str, list[float]] = {k: [] for k in ("one", "forked", "threads", "fork")}
            same = True
            for k in range(args.repeats):
                one_s, one = _build(archive, root / f"c1-{name}-{k}", "1")
                forked_s, forked = _build(archive, root / f"c2-{name}-{k}", "2")
                same &= bool(np.array_equal(one, forked))
                threads_s, rows_t = _predict(model, archive, processes=False)
                fork_s, rows_f = _predict(model, archive, processes=True)
                same &= rows_t == rows_f
                for key, value in zip(found, (one_s, forked_s, threads_s, fork_s), strict=True):
                    found[key].append(value)
            med = {key: statistics.median(v) for key, v in found.items()}
            cases[name] = {
                "files": len(expand_inputs([archive])),
                "cache_build_s": {"one_process": med["one"], "forked_workers": med["forked"]},
                "cache_speedup": round(med["one"] / med["forked"], 2),
                "predict_s": {"threads": med["threads"], "forked_workers": med["fork"]},
                "predict_speedup": round(med["threads"] / med["fork"], 2),
                "identical_results": same,
                "runs": found,
            }
            print(name, cases[name]["cache_speedup"], cases[name]["predict_speedup"], same)
    write_result(
        NAME,
        {
            "description": __doc__.split("\n\n")[0] + " (median seconds of interleaved runs)",
            "commit": commit(),
            "workers": parallel.default_workers(),
            "cases": cases,
        },
    )


if __name__ == "__main__":
    main()
