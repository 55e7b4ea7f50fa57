"""3D convolutions rewritten as 2D ones before ONNX export, for ONNX Runtime's fast 2D kernels.

ONNX Runtime's CPU Conv for 3D inputs is im2col + GEMM (99 % of a 3D CompactNet's time in its
profile), while its 2D Conv has blocked NCHWc kernels. A Conv3d with a ``kd``-deep kernel is a
Conv2d over the ``kd`` depth slices each output slice reads, stacked as channels: every output
depth slice becomes one image of a 2D batch. Batch norm is folded into the convolutions first
(ONNX Runtime fuses Conv + BatchNormalization itself, but not across the rewritten graph).

Keeping activations in an (N, D, C, H, W) layout between layers, so that no transposes surround
each convolution, was measured and dropped: ONNX Runtime's transpose optimizer already moves
them, and the time goes to the convolutions (57 %), the depth slicing (25 %) and its own NCHWc
reorders (14 %) either way (CompactNet 3D, batch 32).
"""

from __future__ import annotations

import copy
import logging
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

log = logging.getLogger(__name__)


class DepthUnrolledConv3d(nn.Module):
    """The function of ``conv`` (groups 1, dilation 1, zero padding) via one Conv2d.

    :func:`freeze_shapes` fixes its input's (C, D, H, W), so that an exported graph reshapes by
    constants and only the batch axis is dynamic: a traced ``x.shape`` becomes a chain of Shape,
    Gather, Unsqueeze and Concat nodes that ONNX Runtime runs on every call (CompactNet 3D: 550
    nodes after its optimisation instead of 149; batch 1 ~8 % slower).
    """

    shape: tuple[int, ...] | None = None

    def __init__(self, conv: nn.Conv3d):
        super().__init__()
        out_ch, in_ch, kd, kh, kw = conv.weight.shape
        self.depth = (kd, int(conv.stride[0]), int(conv.padding[0]))
        self.stride = (int(conv.stride[1]), int(conv.stride[2]))
        self.padding = (int(conv.padding[1]), int(conv.padding[2]))
        # (O, C, kd, kh, kw) -> (O, kd * C, kh, kw): input channel j * C + c is slice j, channel c
        weight = conv.weight.detach().permute(0, 2, 1, 3, 4).reshape(out_ch, kd * in_ch, kh, kw)
        self.weight = nn.Parameter(weight.contiguous(), requires_grad=False)
        bias = conv.bias.detach().clone() if conv.bias is not None else None
        self.bias = nn.Parameter(bias, requires_grad=False) if bias is not None else None

    def forward(self, x: Tensor) -> Tensor:
        kd, sd, pd = self.depth
        (sh, sw), (ph, pw) = self.stride, self.padding
        n, c, d, h, w = (-1, *self.shape) if self.shape is not None else x.shape
        if pd:  # F.pad on the depth axis exports as Transpose + Pad chains; slice * 0 is 2 nodes
            zeros = x[:, :, :pd] * 0.0
            x = torch.cat([zeros, x, zeros], dim=2)
        out_d = (d + 2 * pd - kd) // sd + 1
        span = sd * (out_d - 1) + 1
        stacked = torch.cat([x[:, :, j : j + span : sd] for j in range(kd)], dim=1)
        flat = stacked.transpose(1, 2).reshape(-1 if n == -1 else n * out_d, kd * c, h, w)
        y = F.conv2d(flat, self.weight, self.bias, stride=self.stride, padding=self.padding)
        out_ch, kh, kw = self.weight.shape[0], self.weight.shape[2], self.weight.shape[3]
        y = y.reshape(n, out_d, out_ch, (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1)
        return y.transpose(1, 2)


def freeze_shapes(model: nn.Module, example: Tensor) -> None:
    """Fix each unrolled layer's input shape from one pass of ``example`` (only the batch may
    change afterwards); a layer called with two different shapes stays dynamic."""
    seen: dict[DepthUnrolledConv3d, set[tuple[int, ...]]] = {}

    def record(layer: nn.Module, args: tuple[Any, ...]) -> None:
        if isinstance(layer, DepthUnrolledConv3d):
            seen.setdefault(layer, set()).add(tuple(int(s) for s in args[0].shape[1:]))

    hooks = [
        m.register_forward_pre_hook(record)
        for m in model.modules()
        if isinstance(m, DepthUnrolledConv3d)
    ]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for hook in hooks:
            hook.remove()
    for layer, shapes in seen.items():
        layer.shape = next(iter(shapes)) if len(shapes) == 1 else None


def _unrollable(conv: nn.Conv3d) -> bool:
    return (
        conv.groups == 1
        and tuple(conv.dilation) == (1, 1, 1)
        and conv.padding_mode == "zeros"
        and not isinstance(conv.padding, str)
    )


def _fold_batch_norm(model: nn.Module) -> nn.Module:
    """An eval-mode copy with each Conv -> BatchNorm pair folded (torch.fx); a plain copy when
    the model cannot be traced."""
    with warnings.catch_warnings():  # it imports torch.utils.mkldnn, which uses deprecated jit
        warnings.simplefilter("ignore", DeprecationWarning)
        from torch.fx.experimental.optimization import fuse

    try:
        return fuse(model.eval())
    except Exception as err:  # fx cannot trace data-dependent control flow
        log.debug("batch norm not folded: %s", err)
        return copy.deepcopy(model).eval()


def unroll_conv3d(model: nn.Module) -> tuple[nn.Module, int]:
    """An eval-mode copy of ``model`` computing the same function with 2D convolutions, and how
    many Conv3d layers it rewrote (0: the copy is the model, unchanged)."""
    if not any(isinstance(m, nn.Conv3d) for m in model.modules()):
        return model, 0
    out = _fold_batch_norm(model)
    rewritten = 0
    for name, module in list(out.named_modules()):
        if isinstance(module, nn.Conv3d) and _unrollable(module):
            parent, _, attr = name.rpartition(".")
            setattr(out.get_submodule(parent), attr, DepthUnrolledConv3d(module))
            rewritten += 1
    return out, rewritten
