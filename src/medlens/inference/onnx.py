"""ONNX export with a parity check against torch."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from medlens._fs import atomic_path
from medlens.errors import ArtifactError
from medlens.inference.unroll import freeze_shapes, unroll_conv3d
from medlens.models.base import MedlensModel
from medlens.models.forward import LogitsAndEmbedding, combined

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExportReport:
    path: Path
    max_abs_diff: float
    batch_sizes: tuple[int, ...]


def export_onnx(
    members: Sequence[MedlensModel],
    input_shape: tuple[int, ...],
    path: str | Path,
    *,
    opset: int = 17,
    check_batches: tuple[int, ...] = (1, 4),
    tolerance: float = 1e-3,
    unroll_3d: bool = True,
    embedding: bool = False,
) -> ExportReport:
    """Export (mean logits of) ``members`` for inputs (N, *input_shape) with a dynamic batch axis,
    then run ONNX Runtime and torch on random inputs and report the largest difference.

    ``unroll_3d`` writes 3D convolutions as 2D ones (:mod:`medlens.inference.unroll`); the
    parity check compares against the original members either way. ``embedding`` adds a second
    output, the members' pooled features (:class:`~medlens.models.forward.LogitsAndEmbedding`)."""
    import onnxruntime as ort

    reference = (LogitsAndEmbedding(members) if embedding else combined(members)).eval()
    outputs = ["logits", "embedding"] if embedding else ["logits"]
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
            output_names=outputs,
            dynamic_axes={"image": {0: "batch"}} | {name: {0: "batch"} for name in outputs},
            opset_version=opset,
            dynamo=False,
        )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = 0.0
    generator = torch.Generator().manual_seed(0)
    for batch in check_batches:
        x = torch.randn(batch, *input_shape, generator=generator)
        with torch.no_grad():
            found = reference(x)
        expected = found if isinstance(found, tuple) else (found,)
        got = session.run(None, {"image": x.numpy()})
        for k, (want, have) in enumerate(zip(expected, got, strict=True)):
            # the embedding relative to its size (pooled features run to tens), logits absolute
            scale = max(1.0, float(want.abs().max())) if k else 1.0
            worst = max(worst, float(np.max(np.abs(want.numpy() - have))) / scale)
    if worst > tolerance:
        raise ArtifactError(
            f"ONNX Runtime and torch disagree by {worst:.3g} (tolerance {tolerance})", path=path
        )
    return ExportReport(path, worst, check_batches)
