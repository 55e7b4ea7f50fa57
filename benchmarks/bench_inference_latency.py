"""Inference latency per image: torch eager vs ONNX Runtime (fp32, bf16 on OpenVINO where the
CPU computes it natively, and the INT8 model that `medlens export --int8` makes), batch 1 and
32, same model. Torch eager under bfloat16 autocast is timed beside it (``torch_bf16``) so the
bf16 figures can be read against torch's own reduced precision, not only its float32.

The models have random weights (latency does not depend on them); the INT8 calibration uses
random inputs here. The quality cost of INT8 and bf16 is measured on real data, not here
(README).

Each row also gives the arithmetic rate (GFLOP/s: the model's convolution and dense FLOPs per
image over its time) against this machine's float32 matrix-multiply rate measured in the same
run (4096^2, the faster of numpy's BLAS and torch): a float32 runtime cannot run convolutions
much faster than that, so where torch eager already reaches a large share of it, 2x over torch
needs lower precision.
``onnxruntime`` / ``onnxruntime_int8`` are what `medlens serve|predict` run on this machine
(``provider``: for float32, OpenVINO's for 3D models where installed and for 2D models the
faster of it and the CPU provider, timed when the model loads, see
:mod:`medlens.inference.autotune`); the other variants are the alternatives: the CPU provider
(``cpu``; for 3D with the convolutions unrolled to 2D, ``cpu_conv3d`` with plain Conv3d) and
OpenVINO's provider for 2D models (``openvino``).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.common import commit, summary, timed, write_result
from medlens.data.labels import LabelSpec
from medlens.inference import Artifact, load_artifact, save_artifact
from medlens.inference.engine import Engine
from medlens.inference.onnx import export_onnx
from medlens.inference.providers import (
    OPENVINO,
    Runtime,
    available,
    bf16_available,
    openvino_runtime,
    runtime_for,
)
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


def _flops_per_image(model: torch.nn.Module, shape: tuple[int, ...]) -> int:
    """Multiply-adds x 2 of every convolution and dense layer for one input of ``shape``."""
    total = 0

    def count(module: torch.nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, torch.nn.Linear):
            total += 2 * module.in_features * output.numel()
        else:
            assert isinstance(module, torch.nn.Conv2d | torch.nn.Conv3d)
            fan_in = module.in_channels // module.groups * int(np.prod(module.kernel_size))
            total += 2 * fan_in * output.numel()

    layers = (torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.Linear)
    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, layers)]
    with torch.inference_mode():
        model(torch.zeros(1, *shape))
    for hook in hooks:
        hook.remove()
    return total


def _matmul_gflops(n: int = 4096) -> dict[str, float]:
    """This machine's float32 matrix-multiply rate (n^2, median of 5) through numpy's BLAS and
    torch's: the best of them is the reference a float32 convolution cannot beat by much."""
    a, b = np.random.default_rng(0).random((2, n, n), dtype=np.float32)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    rates = {}
    for library, multiply in (("numpy", lambda: a @ b), ("torch", lambda: ta @ tb)):
        seconds = summary(timed(multiply, 5, warmup=2))["median_s"]
        rates[library] = round(2 * n**3 / seconds / 1e9, 1)
    return rates


def _artifact(model: torch.nn.Module, shape: tuple[int, ...], folder: Path) -> Artifact:
    return load_artifact(
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


def _int8(model: torch.nn.Module, shape: tuple[int, ...], folder: Path, runtime: Runtime) -> Any:
    """The INT8 model `medlens export --int8` would make for ``runtime``, calibrated on random
    inputs, as a session of that runtime."""
    artifact = _artifact(model, shape, folder)
    rng = np.random.default_rng(1)
    calibration = rng.normal(size=(32, *shape)).astype(np.float32)
    quantize_artifact(artifact, calibration, calibration[:8], runtime=runtime)
    return runtime.session(str(folder / INT8_FILE))


def _sessions(
    model: torch.nn.Module, dims: int, shape: tuple[int, ...], folder: Path
) -> tuple[str, dict[str, Any]]:
    """ONNX Runtime sessions by variant name; the served runtimes' are ``onnxruntime(_int8)``:
    float32 on the provider the engine chooses for the model (timed for 2D models), INT8 on
    the default one."""
    served = Engine(_artifact(model, shape, folder / "fp32"), cache_dir=folder / "cache").runtime
    default = runtime_for(dims)
    cpu = Runtime(("CPUExecutionProvider",))
    runtimes = {"onnxruntime": served}
    if dims == 3:
        runtimes["cpu"] = cpu
        runtimes["cpu_conv3d"] = Runtime(("CPUExecutionProvider",), unroll_3d=False)
    elif OPENVINO in available():
        runtimes["cpu"] = cpu
        runtimes["openvino"] = runtime_for(dims, openvino=True)
    if bf16_available():
        runtimes["onnxruntime_bf16"] = openvino_runtime(bf16=True)
    sessions = {}
    for name, runtime in runtimes.items():
        path = export_onnx([model], shape, folder / f"{name}.onnx", unroll_3d=runtime.unroll_3d)
        sessions[name] = runtime.session(str(path.path))
    sessions["onnxruntime_int8"] = _int8(model, shape, folder / "int8", default)
    if default.name != "cpu":
        sessions["cpu_int8"] = _int8(model, shape, folder / "cpu-int8", cpu)
    return served.name, sessions


def main() -> None:
    results: dict[str, Any] = {}
    matmuls = _matmul_gflops()
    matmul = max(matmuls.values())
    gflop_per_image: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for case, (name, dims, shape, options) in CASES.items():
            model = create_model(name, dims, shape[0], 2, **options).eval()
            folder = Path(tmp) / case
            folder.mkdir()
            provider, sessions = _sessions(model, dims, shape, folder)
            gflop = gflop_per_image[case] = _flops_per_image(model, shape) / 1e9
            for batch in (1, 32):
                x = np.random.default_rng(0).normal(size=(batch, *shape)).astype(np.float32)
                xt = torch.from_numpy(x)
                repeats = 30 if batch == 1 else 5

                def eager() -> None:
                    with torch.inference_mode():
                        model(xt)

                def per_image_ms(run: Callable[[], object]) -> float:
                    return summary(timed(run, repeats, warmup=2))["median_s"] / batch * 1000

                def eager_bf16() -> None:
                    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
                        model(xt)

                eager_ms = per_image_ms(eager)
                row: dict[str, Any] = {
                    "torch_eager_ms_per_image": round(eager_ms, 3),
                    "provider": provider,
                }
                if bf16_available():
                    row["torch_bf16_ms_per_image"] = round(per_image_ms(eager_bf16), 3)
                for variant, session in sessions.items():
                    ms = per_image_ms(lambda s=session: s.run(None, {"image": x}))
                    served = variant.startswith("onnxruntime")
                    key = (
                        variant.replace("onnxruntime", "speedup")
                        if served
                        else f"speedup_{variant}"
                    )
                    row[f"{variant}_ms_per_image"] = round(ms, 3)
                    row[key] = round(eager_ms / ms, 2)
                    if variant == "onnxruntime_bf16":
                        row["speedup_bf16_vs_torch_bf16"] = round(
                            row["torch_bf16_ms_per_image"] / ms, 2
                        )
                for who in ("torch_eager", "onnxruntime"):
                    rate = gflop / (row[f"{who}_ms_per_image"] / 1000)
                    row[f"{who}_gflops"] = round(rate, 1)
                    row[f"{who}_pct_of_matmul"] = round(100 * rate / matmul, 1)
                results[f"{case}/batch{batch}"] = row
    write_result(
        "inference_latency",
        {
            "description": "median per-image latency on CPU: torch eager fp32 (and bf16 "
            "autocast, torch_bf16), ONNX Runtime fp32, bf16 (OpenVINO, `--precision bf16`) and "
            "INT8 (static, per-channel, QDQ) as medlens serves them on this machine "
            "(onnxruntime*; provider: fp32's, timed at load for 2D models) and the alternatives "
            "(cpu: CPU provider, 3D convolutions unrolled to 2D; cpu_conv3d: plain Conv3d; "
            "openvino: OpenVINO provider); speedups "
            "are vs torch eager fp32; *_gflops: convolution + dense FLOPs per second, "
            "*_pct_of_matmul: that as a share of the faster fp32_matmul_gflops (4096^2, numpy "
            "and torch, same run)",
            "commit": commit(),
            "fp32_matmul_gflops": matmuls,
            "gflop_per_image": gflop_per_image,
            "cases": results,
        },
    )


if __name__ == "__main__":
    main()
