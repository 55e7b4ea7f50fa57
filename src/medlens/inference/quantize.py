"""INT8 models for CPU serving: ONNX Runtime static quantization calibrated on the user's own
images, with the change in predictions measured on other images before anyone relies on it.

The INT8 model lives beside the artifact (``model.int8.onnx`` + ``quantization.json``) and records
the digest of the weights it was made from, so a retrained artifact cannot silently keep a stale
INT8 copy.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from medlens._fs import atomic_path, atomic_write_text
from medlens.errors import ArtifactError, ConfigError
from medlens.inference.agreement import CHECK_BATCH, compare, current_report, probabilities
from medlens.inference.artifact import Artifact
from medlens.inference.onnx import export_onnx
from medlens.inference.providers import Runtime, runtime_for

if TYPE_CHECKING:
    from medlens.training.data import PreparedData

log = logging.getLogger(__name__)

INT8_FILE = "model.int8.onnx"
REPORT_FILE = "quantization.json"


@dataclass(frozen=True)
class QuantizationReport:
    """How far the INT8 model's predictions are from the FP32 model's on held-out images."""

    path: Path
    artifact_digest: str
    calibration_images: int
    check_images: int
    max_probability_change: float
    mean_probability_change: float
    decision_agreement: float
    auc_fp32: float | None
    auc_int8: float | None
    #: the ONNX Runtime provider both models were compared on (the one that serves them here)
    provider: str = "cpu"

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["path"] = self.path.name
        return out


def calibration_split(
    data: PreparedData, max_images: int = 256, seed: int = 0
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Rows to calibrate on (validation, else training rows) and other rows to check on (test,
    else the rest), each at most ``max_images``, drawn at random but reproducibly."""
    rng = np.random.default_rng(seed)
    val, train, test = (data.indices(s) for s in ("val", "train", "test"))
    calibrate, check = (val if len(val) else train), test
    rest = rng.permutation(np.setdiff1d(np.arange(len(data.manifest.rows)), calibrate))
    if not len(calibrate):  # no splits at all: half and half
        calibrate, check = rest[: len(rest) // 2], rest[len(rest) // 2 :]
    elif not len(check):
        check = rest
    if not len(calibrate) or not len(check):
        raise ConfigError("calibrating and checking need at least two images")
    pick = [rng.permutation(rows)[:max_images] for rows in (calibrate, check)]
    return np.sort(pick[0]).astype(np.int64), np.sort(pick[1]).astype(np.int64)


def quantize_artifact(
    artifact: Artifact,
    calibration: NDArray[np.float32],
    check: NDArray[np.float32],
    *,
    check_targets: NDArray[Any] | None = None,
    runtime: Runtime | None = None,
) -> QuantizationReport:
    """Write ``model.int8.onnx`` into the artifact folder: weights per channel in int8,
    activations in uint8 with ranges from ``calibration`` (preprocessed images, N x C x ...),
    then compare its calibrated probabilities and decisions with the FP32 model's on ``check``.

    The graph quantized is the one ``runtime`` (by default this machine's, see
    :mod:`medlens.inference.providers`) runs: 3D convolutions unrolled to 2D or plain Conv3d.
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from medlens.inference.engine import artifact_digest

    if len(calibration) == 0 or len(check) == 0:
        raise ConfigError("INT8 calibration needs images to calibrate on and others to check")

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self._batches = iter(
                np.ascontiguousarray(calibration[i : i + CHECK_BATCH])
                for i in range(0, len(calibration), CHECK_BATCH)
            )

        def get_next(self) -> dict[str, NDArray[np.float32]] | None:
            batch = next(self._batches, None)
            return None if batch is None else {"image": batch}

    runtime = runtime or runtime_for(artifact.spatial_dims)
    shape = (artifact.in_channels, *map(int, artifact.meta["input_size"]))
    path = artifact.folder / INT8_FILE
    with tempfile.TemporaryDirectory(prefix="medlens-int8-") as tmp:
        fp32 = export_onnx(
            artifact.members,
            shape,
            Path(tmp) / "fp32.onnx",
            unroll_3d=runtime.unroll_3d,
            embedding=artifact.embeds,
        ).path
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32), str(prepared))  # shape inference + graph clean-up
        root = logging.getLogger()
        level = root.level
        # the quantizer logs a root-logger warning for every integer tensor it leaves alone
        root.setLevel(logging.ERROR)
        try:
            with atomic_path(path) as target:
                quantize_static(
                    str(prepared),
                    str(target),
                    Reader(),
                    quant_format=QuantFormat.QDQ,
                    per_channel=True,
                    # 7-bit weights: x86 CPUs without VNNI multiply uint8 x int8 pairs into
                    # saturating int16 sums; with full-range weights a PneumoniaMNIST CompactNet
                    # lost 0.05 AUC (70 % decision agreement), with 7 bits none (measured)
                    reduce_range=True,
                    activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8,
                )
        finally:
            root.setLevel(level)
        reference = probabilities(artifact, runtime.session(str(fp32)), check)
    quantized = probabilities(artifact, runtime.session(str(path)), check)
    agreement = compare(artifact, reference, quantized, check_targets)
    report = QuantizationReport(
        path,
        artifact_digest(artifact),
        len(calibration),
        len(check),
        agreement.max_probability_change,
        agreement.mean_probability_change,
        agreement.decision_agreement,
        agreement.auc_fp32,
        agreement.auc_reduced,
        runtime.name,
    )
    atomic_write_text(artifact.folder / REPORT_FILE, json.dumps(report.to_dict(), indent=2) + "\n")
    return report


def int8_model(artifact: Artifact) -> Path:
    """The artifact's INT8 model, checked to be made from its current weights."""
    path = artifact.folder / INT8_FILE
    fix = f"run `medlens export {artifact.folder} --int8 --calibration DATA`"
    if not path.is_file():
        raise ArtifactError("the model has no INT8 version", path=artifact.folder, fix=fix)
    current_report(artifact, artifact.folder / REPORT_FILE, "INT8", fix)
    return path
