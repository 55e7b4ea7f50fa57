"""ONNX export with a parity check against torch."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from medlens._fs import atomic_path
from medlens.errors import ArtifactError
from medlens.inference.unroll import freeze_shapes, unroll_conv3d
from medlens.models.forward import combined

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExportReport:
    path: Path
    max_abs_diff: float
    batch_sizes: tuple[int, ...]


def export_onnx(
    members: Sequence[nn.Module],
    input_shape: tuple[int, ...],
    path: str | Path,
    *,
    opset: int = 17,
    check_batches: tuple[int, ...] = (1, 4),
    tolerance: float = 1e-3,
    unroll_3d: bool = True,
) -> ExportReport:
    """Export (mean logits of) ``members`` for inputs (N, *input_shape) with a dynamic batch axis,
    then run ONNX Runtime and torch on random inputs and report the largest logit difference.

    ``unroll_3d`` writes 3D convolutions as 2D ones (:mod:`medlens.inference.unroll`); the
    parity check compares against the original members either way."""
    import onnxruntime as ort

    reference = combined(members).eval()
    model, rewritten = unroll_conv3d(reference) if unroll_3d else (reference, 0)
    if rewritten:
        log.info("exporting %d Conv3d layers as depth-unrolled Conv2d", rewritten)
    path = Path(path)
    example = torch.randn(2, *input_shape)
    if rewritten:
        freeze_shapes(model, example)  # constant reshapes: only the batch axis stays dynamic
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example,),
            str(tmp),
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=opset,
            dynamo=False,
        )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = 0.0
    generator = torch.Generator().manual_seed(0)
    for batch in check_batches:
        x = torch.randn(batch, *input_shape, generator=generator)
        with torch.no_grad():
            expected = reference(x).numpy()
        got = session.run(None, {"image": x.numpy()})[0]
        worst = max(worst, float(np.max(np.abs(expected - got))))
    if worst > tolerance:
        raise ArtifactError(
            f"ONNX Runtime and torch disagree by {worst:.3g} (tolerance {tolerance})", path=path
        )
    return ExportReport(path, worst, check_batches)
