"""How far a reduced-precision model's predictions are from the float32 model's, on the user's
own images, and whether a saved check still describes the artifact's current weights.

INT8 (:mod:`medlens.inference.quantize`) and bfloat16 (:mod:`medlens.inference.bf16`) models
are served only after such a check; a retrained artifact invalidates it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from medlens.errors import ArtifactError
from medlens.inference.artifact import Artifact
from medlens.metrics import roc_auc

#: images per ONNX Runtime call while calibrating or checking (the models have a dynamic batch axis)
CHECK_BATCH = 16


@dataclass(frozen=True)
class Agreement:
    max_probability_change: float
    mean_probability_change: float
    decision_agreement: float
    #: ROC-AUC of the float32 and of the reduced model, for binary tasks with both classes
    auc_fp32: float | None
    auc_reduced: float | None


def probabilities(artifact: Artifact, session: Any, images: NDArray[np.float32]) -> Any:
    """Calibrated class probabilities of ``session`` over the artifact's test-time views."""
    logits = artifact.tta.run(
        lambda views: session.run(None, {"image": views})[0], images, max_views=CHECK_BATCH
    )
    return artifact.probabilities(logits)


def compare(
    artifact: Artifact,
    reference: NDArray[np.float64],
    reduced: NDArray[np.float64],
    targets: NDArray[Any] | None = None,
) -> Agreement:
    """Probability changes and decision agreement at the artifact's operating point."""
    change = np.abs(reduced - reference)
    agree = np.mean(np.asarray(artifact.decide(reduced)) == np.asarray(artifact.decide(reference)))
    auc_fp32 = auc_reduced = None
    binary = artifact.labels.task == "binary"
    if targets is not None and binary and len(np.unique(targets)) == 2:
        auc_fp32 = round(roc_auc(targets, reference[:, 1]), 5)
        auc_reduced = round(roc_auc(targets, reduced[:, 1]), 5)
    return Agreement(
        round(float(change.max()), 5),
        round(float(change.mean()), 6),
        round(float(agree), 5),
        auc_fp32,
        auc_reduced,
    )


def current_report(artifact: Artifact, report: Path, what: str, fix: str) -> dict[str, Any]:
    """The saved check ``report`` of the artifact's ``what`` model, refused when missing,
    unreadable or made from other weights than the artifact's."""
    from medlens.inference.engine import artifact_digest

    if not report.is_file():
        raise ArtifactError(
            f"the model has no checked {what} version", path=artifact.folder, fix=fix
        )
    try:
        saved: dict[str, Any] = json.loads(report.read_text())
        made_from = saved["artifact_digest"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ArtifactError(f"unreadable {report.name} ({err})", path=report, fix=fix) from None
    if made_from != artifact_digest(artifact):
        raise ArtifactError(
            f"the {what} check was made from other weights than the artifact's",
            path=report,
            fix=fix,
        )
    return saved
