"""bfloat16 inference on CPUs that compute it natively, checked on the user's own images.

OpenVINO's CPU plugin runs the float32 ONNX graph in bfloat16 when asked to (see
:mod:`medlens.inference.providers`), so there is no second model file. What is written beside
the artifact is the check: the bfloat16 predictions against the float32 ones on images like
those it will see (``bf16.json``, with the digest of the weights it was made from). `medlens
serve|predict --precision bf16` require it, as INT8 requires its own.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from medlens._fs import atomic_write_text
from medlens.errors import ConfigError
from medlens.inference.agreement import compare, current_report, probabilities
from medlens.inference.artifact import Artifact
from medlens.inference.onnx import export_onnx
from medlens.inference.providers import openvino_runtime, runtime_for

REPORT_FILE = "bf16.json"


@dataclass(frozen=True)
class Bf16Report:
    """How far the bfloat16 run's predictions are from the float32 run's on the same provider."""

    artifact_digest: str
    check_images: int
    max_probability_change: float
    mean_probability_change: float
    decision_agreement: float
    auc_fp32: float | None
    auc_bf16: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_bf16(
    artifact: Artifact, check: NDArray[np.float32], *, check_targets: NDArray[Any] | None = None
) -> Bf16Report:
    """Run ``check`` (preprocessed images, N x C x ...) through OpenVINO in float32 and in
    bfloat16, compare, and write the report into the artifact folder."""
    from medlens.inference.engine import artifact_digest

    if len(check) == 0:
        raise ConfigError("the bf16 check needs images to check on")
    reduced = runtime_for(artifact.spatial_dims, precision="bf16")  # refuses unsuitable CPUs
    full = openvino_runtime()
    shape = (artifact.in_channels, *map(int, artifact.meta["input_size"]))
    with tempfile.TemporaryDirectory(prefix="medlens-bf16-") as tmp:
        path = export_onnx(artifact.members, shape, Path(tmp) / "fp32.onnx", unroll_3d=False).path
        reference = probabilities(artifact, full.session(str(path)), check)
        candidate = probabilities(artifact, reduced.session(str(path)), check)
    agreement = compare(artifact, reference, candidate, check_targets)
    report = Bf16Report(
        artifact_digest(artifact),
        len(check),
        agreement.max_probability_change,
        agreement.mean_probability_change,
        agreement.decision_agreement,
        agreement.auc_fp32,
        agreement.auc_reduced,
    )
    atomic_write_text(artifact.folder / REPORT_FILE, json.dumps(report.to_dict(), indent=2) + "\n")
    return report


def require_bf16_check(artifact: Artifact) -> dict[str, Any]:
    """The artifact's bf16 check, refused when missing or made from other weights."""
    fix = f"run `medlens export {artifact.folder} --bf16 --calibration DATA`"
    return current_report(artifact, artifact.folder / REPORT_FILE, "bf16", fix)
