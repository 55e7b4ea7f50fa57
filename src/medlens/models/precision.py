"""Mixed precision for training: float16 on CUDA, bfloat16 on CPUs that compute it natively.

A CPU with AVX512-BF16 or AMX runs oneDNN's bfloat16 convolutions about twice as fast as
float32 ones: a CompactNet training step took 36 vs 62 ms (3D, 28^3, batch 16) and 50 vs
92 ms (2D, 28^2, batch 64) on this project's 2-core AMD EPYC. Weights, optimiser state and
the loss stay float32 (autocast); evaluation and exported models stay float32. CPUs without
native bfloat16 would emulate it slower than float32, so they train in float32.
"""

from __future__ import annotations

import contextlib
import functools

import torch


@functools.cache
def native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (oneDNN's own check)."""
    try:
        return bool(
            torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
        )
    except (AttributeError, RuntimeError):
        return False


def autocast_dtype(device: str, enabled: bool = True) -> torch.dtype | None:
    """The reduced precision a training step on ``device`` uses, or None for float32."""
    if not enabled:
        return None
    if device.startswith("cuda"):
        return torch.float16
    return torch.bfloat16 if device == "cpu" and native_bf16() else None


def precision_name(dtype: torch.dtype | None) -> str:
    """``bfloat16``, ``float16`` or ``float32`` (None) for metrics and logs."""
    return "float32" if dtype is None else str(dtype).removeprefix("torch.")


def autocast(device: str, dtype: torch.dtype | None) -> contextlib.AbstractContextManager[None]:
    """``torch.autocast`` for ``dtype`` on ``device``'s type; a no-op for None (float32)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.split(":")[0], dtype=dtype)
