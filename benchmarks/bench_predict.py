"""Scoring an archive: `medlens predict` on a folder of files vs the loop a user would write
(read, preprocess, torch eager, one image at a time) vs the service under 32 clients, same
model, same files, same run.

2D: the PneumoniaMNIST test split as 624 PNGs; 3D: the AdrenalMNIST3D test split as 298 gzipped
NIfTI volumes. Models as `medlens train` ships them for 28 px inputs (test-time shifts: 9 / 27
views), plus a one-view ResNet-18 at 224 px; untrained weights (speed only).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import bench_serving
from benchmarks.bench_serving import MODELS, _artifact, _load_test, _multipart, _serve
from benchmarks.common import SHARED, commit, write_result
from medlens.inference import Artifact, load_artifact
from medlens.inference.engine import Engine
from medlens.inference.predictor import expand_inputs, predict_items
from medlens.io import read_image, read_medmnist, write_image
from medlens.io.image import MedicalImage

CASES = ("compactnet-28-tta", "resnet18-224", "compactnet3d-28-tta")
SOURCES = {2: ("pneumoniamnist", ".png"), 3: ("adrenalmnist3d", ".nii.gz")}
#: seconds of the 32-client load on the service
SERVICE_S = float(os.environ.get("MEDLENS_BENCH_SECONDS", 15))


def _archive(root: Path, dims: int) -> Path:
    """The test split of the dataset as one file per image."""
    name, suffix = SOURCES[dims]
    folder = root / f"{name}-test"
    if folder.is_dir():
        return folder
    folder.mkdir()
    images = read_medmnist(SHARED / name / f"{name}.npz")["test"].images
    for i, array in enumerate(images):
        pixels = np.asarray(array)[None]  # (1, H, W) or (1, D, H, W)
        write_image(MedicalImage(pixels), folder / f"{i:04d}{suffix}")
    return folder


def _torch_loop(artifact: Artifact, files: list[Path]) -> float:
    """What a notebook does: each file read, preprocessed and run through torch on its own."""
    started = time.perf_counter()
    for path in files:
        x = artifact.preprocess(read_image(path))[None]
        artifact.logits(x)
    return time.perf_counter() - started


def _predict(artifact: Artifact, engine: Engine, folder: Path) -> tuple[float, int]:
    started = time.perf_counter()
    rows = list(predict_items(artifact, expand_inputs([folder]), engine=engine))
    assert not any("error" in r for r in rows), rows[:3]
    return time.perf_counter() - started, len(rows)


def _cli(model: Path, folder: Path, out: Path, env: dict[str, str]) -> float:
    """`medlens predict MODEL FOLDER` end to end: start-up, model load, every file, the CSV."""
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "medlens.cli.main", "predict", str(model), str(folder),
         "--out", str(out)],
        check=True, env=env, capture_output=True,
    )  # fmt: skip
    return time.perf_counter() - started


def _service(model: Path, root: Path, sample: Path, kind: str) -> dict[str, Any]:
    bench_serving.SECONDS = SERVICE_S
    process, port = _serve(model, root, 0.0, "fp32")
    try:
        body, form = _multipart(sample.read_bytes(), sample.name, kind)
        (root / "body").write_bytes(body)
        return _load_test(port, model.name, root / "body", form, 32)
    finally:
        os.kill(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def main() -> None:
    rows: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        env = {**os.environ, "MEDLENS_CACHE": str(root / "cache")}
        for case in CASES:
            name, size, options, precision, shift = MODELS[case]
            folder = _archive(root, len(size))
            files = sorted(p for p in folder.iterdir() if p.is_file())
            model = _artifact(root / case, name, size, options, precision, shift)
            artifact = load_artifact(model)
            engine = Engine(artifact, cache_dir=root / "cache" / "onnx")
            engine.warm_up()
            _predict(artifact, engine, folder)  # the page cache and the providers warm
            predict_s, n = _predict(artifact, engine, folder)
            cli_s = _cli(model, folder, root / f"{case}.csv", env)
            loop_s = _torch_loop(artifact, files)
            kind = "image/png" if len(size) == 2 else "application/octet-stream"
            service = _service(model, root, files[0], kind)
            rows[case] = {
                "images": n,
                "provider": engine.provider,
                "predict_images_per_s": round(n / predict_s, 1),
                "predict_cli_end_to_end_s": round(cli_s, 2),
                "predict_cli_images_per_s": round(n / cli_s, 1),
                "torch_loop_images_per_s": round(n / loop_s, 1),
                "speedup_vs_torch_loop": round(loop_s / predict_s, 2),
                "service_32_clients_images_per_s": service["images_per_s"],
                "service_5xx": service["status_5xx"],
                "predict_vs_service": round((n / predict_s) / service["images_per_s"], 2),
                "measured": {"date": time.strftime("%Y-%m-%d %H:%M"), "commit": commit()},
            }
            print(json.dumps({case: rows[case]}))
    write_result(
        "predict_archive",
        {
            "description": (
                "images/s scoring a folder: medlens predict's engine in-process (ONNX Runtime, "
                "batches of 32, files read by 2 threads while a batch runs; second pass), the "
                "CLI end to end (start-up and model load included), a per-image torch eager "
                "loop (read, preprocess, forward), and the service with 32 keep-alive clients "
                f"posting one of the files for {SERVICE_S:g} s (1 process). 2D: PneumoniaMNIST "
                "test split as 624 PNGs; 3D: AdrenalMNIST3D test split as 298 .nii.gz; "
                "untrained weights"
            ),
            "cases": rows,
        },
    )


if __name__ == "__main__":
    main()
