"""Mixed precision for training: float16 on CUDA, bfloat16 on CPUs that compute it natively.

A CPU with AVX512-BF16 or AMX runs oneDNN's bfloat16 convolutions about twice as fast as
float32 ones: a CompactNet training step took 36 vs 62 ms (3D, 28^3, batch 16) and 50 vs
92 ms (2D, 28^2, batch 64) on this project's 2-core AMD EPYC. Weights, optimiser state and
the loss stay float32 (autocast); evaluation and exported models stay float32. CPUs without
native bfloat16 would emulate it slower than float32, so they train in float32.

With torch 2.13 on that CPU, the bfloat16 backward pass of a convolution whose input is smaller
than its kernel on some axis returns garbage gradients (relative errors up to 1e38, then NaN):
a 3x3x3 convolution on the 2^3 maps of the last stage of a 28^3 CompactNet turned the loss NaN
within 5 epochs. Such convolutions run in float32 (:func:`guard_small_convolutions`); in a sweep
of 2D/3D convolutions (sizes 1-5, kernels 1/3/5, strides 1/2, 1-192 channels) every wrong
gradient came from one of them.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn


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


@contextlib.contextmanager
def guard_small_convolutions(model: nn.Module, dtype: torch.dtype | None) -> Iterator[None]:
    """Inside the block, ``model``'s convolutions run in float32 under autocast where their
    input is smaller than their kernel on some axis (see the module note); others are untouched.

    The guard is an instance ``forward`` removed on exit, so weights, copies made outside the
    block and exported graphs never see it."""
    if dtype is not torch.bfloat16:
        yield
        return
    guarded = [m for m in model.modules() if isinstance(m, nn.modules.conv._ConvNd)]
    for module in guarded:
        module.forward = functools.partial(_guarded_forward, module, type(module).forward)
    try:
        yield
    finally:
        for module in guarded:
            del module.forward


def _guarded_forward(
    module: nn.modules.conv._ConvNd, forward: Callable[..., Tensor], x: Tensor
) -> Tensor:
    kernel = module.kernel_size
    if torch.is_autocast_enabled(x.device.type) and any(
        size < k for size, k in zip(x.shape[2:], kernel, strict=False)
    ):
        with torch.autocast(x.device.type, enabled=False):
            return forward(module, x.float())
    return forward(module, x)
