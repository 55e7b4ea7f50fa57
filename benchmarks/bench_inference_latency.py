"""Inference latency per image: torch eager vs ONNX Runtime (fp32, and the INT8 model that
`medlens export --int8` makes), batch 1 and 32, same model.

The models have random weights (latency does not depend on them); the INT8 calibration uses
random inputs here. The quality cost of INT8 is measured on real data, not here (README).
3D models are exported with their convolutions unrolled into 2D ones (the default); the
``onnxruntime_conv3d`` column is the same model exported with plain Conv3d nodes.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

from benchmarks.common import summary, timed, write_result
from medlens.data.labels import LabelSpec
from medlens.inference import load_artifact, save_artifact
from medlens.inference.onnx import export_onnx
from medlens.inference.quantize import INT8_FILE, quantize_artifact
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


def _int8(model: torch.nn.Module, shape: tuple[int, ...], folder: Path) -> Path:
    """The INT8 model `medlens export --int8` would make, calibrated on random inputs."""
    artifact = load_artifact(
        save_artifact(
            folder,
            [model],
            labels=LabelSpec("binary", ["a", "b"], ["0", "1"]),
            preprocessing=[],
            plan={"input_size": list(shape[1:])},
            operating_point={"temperature": 1.0, "threshold": 0.5, "method": "youden"},
            metrics={},
            data_hash="benchmark",
        )
    )
    rng = np.random.default_rng(1)
    calibration = rng.normal(size=(32, *shape)).astype(np.float32)
    quantize_artifact(artifact, calibration, calibration[:8])
    return folder / INT8_FILE


def main() -> None:
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for case, (name, dims, shape, options) in CASES.items():
            model = create_model(name, dims, shape[0], 2, **options).eval()
            path = export_onnx([model], shape, Path(tmp) / f"{case}.onnx").path
            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            plain = None
            if dims == 3:
                plain_path = Path(tmp) / f"{case}-conv3d.onnx"
                export_onnx([model], shape, plain_path, unroll_3d=False)
                plain = ort.InferenceSession(str(plain_path), providers=["CPUExecutionProvider"])
            int8 = ort.InferenceSession(
                str(_int8(model, shape, Path(tmp) / case)), providers=["CPUExecutionProvider"]
            )
            for batch in (1, 32):
                x = np.random.default_rng(0).normal(size=(batch, *shape)).astype(np.float32)
                xt = torch.from_numpy(x)
                repeats = 30 if batch == 1 else 5

                def eager() -> None:
                    with torch.inference_mode():
                        model(xt)

                eager_t = summary(timed(eager, repeats, warmup=2))
                onnx_t = summary(timed(lambda: session.run(None, {"image": x}), repeats, warmup=2))
                int8_t = summary(timed(lambda: int8.run(None, {"image": x}), repeats, warmup=2))
                row = {
                    "torch_eager_ms_per_image": round(eager_t["median_s"] / batch * 1000, 3),
                    "onnxruntime_ms_per_image": round(onnx_t["median_s"] / batch * 1000, 3),
                    "onnxruntime_int8_ms_per_image": round(int8_t["median_s"] / batch * 1000, 3),
                    "speedup": round(eager_t["median_s"] / onnx_t["median_s"], 2),
                    "speedup_int8": round(eager_t["median_s"] / int8_t["median_s"], 2),
                }
                if plain is not None:
                    session3d = plain
                    plain_t = summary(
                        timed(lambda: session3d.run(None, {"image": x}), repeats, warmup=2)
                    )
                    row["onnxruntime_conv3d_ms_per_image"] = round(
                        plain_t["median_s"] / batch * 1000, 3
                    )
                    row["speedup_conv3d"] = round(eager_t["median_s"] / plain_t["median_s"], 2)
                results[f"{case}/batch{batch}"] = row
    write_result(
        "inference_latency",
        {
            "description": "median per-image latency on CPU: torch eager fp32, ONNX Runtime fp32 "
            "and ONNX Runtime INT8 (static, per-channel, QDQ); speedups are vs torch eager",
            "cases": results,
        },
    )


if __name__ == "__main__":
    main()
