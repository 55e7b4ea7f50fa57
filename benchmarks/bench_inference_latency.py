"""Inference latency per image: torch eager vs ONNX Runtime, batch 1 and 32, same model."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

from benchmarks.common import summary, timed, write_result
from medlens.inference.onnx import export_onnx
from medlens.models import create_model

CASES = {
    "compactnet-2d-28": ("compactnet", 2, (1, 28, 28), {"widths": [24, 48, 96, 192]}),
    "resnet18-2d-224": ("resnet18", 2, (3, 224, 224), {}),
    "compactnet-3d-28": (
        "compactnet",
        3,
        (1, 28, 28, 28),
        {"widths": [24, 48, 96, 192], "stem_stride": 2},
    ),
}


def main() -> None:
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for case, (name, dims, shape, options) in CASES.items():
            model = create_model(name, dims, shape[0], 2, **options).eval()
            path = export_onnx([model], shape, Path(tmp) / f"{case}.onnx").path
            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            for batch in (1, 32):
                x = np.random.default_rng(0).normal(size=(batch, *shape)).astype(np.float32)
                xt = torch.from_numpy(x)
                repeats = 30 if batch == 1 else 5

                def eager() -> None:
                    with torch.inference_mode():
                        model(xt)

                eager_t = summary(timed(eager, repeats, warmup=2))
                onnx_t = summary(timed(lambda: session.run(None, {"image": x}), repeats, warmup=2))
                results[f"{case}/batch{batch}"] = {
                    "torch_eager_ms_per_image": round(eager_t["median_s"] / batch * 1000, 3),
                    "onnxruntime_ms_per_image": round(onnx_t["median_s"] / batch * 1000, 3),
                    "speedup": round(eager_t["median_s"] / onnx_t["median_s"], 2),
                }
    write_result(
        "inference_latency",
        {"description": "median per-image latency, fp32, CPU", "cases": results},
    )


if __name__ == "__main__":
    main()
