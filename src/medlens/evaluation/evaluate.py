"""Evaluation like a clinical study: operating point and calibration fitted on validation, frozen
and applied to test, with patient-level bootstrap confidence intervals."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from medlens.data.labels import LabelSpec
from medlens.errors import ConfigError
from medlens.evaluation.bootstrap import bootstrap_ci
from medlens.evaluation.calibration import (
    choose_threshold,
    fit_temperature,
    max_accuracy_threshold,
    youden_cut,
)
from medlens.metrics import (
    binary_metrics,
    confusion_matrix,
    expected_calibration_error,
    multiclass_metrics,
    multilabel_metrics,
    pr_curve,
    roc_curve,
)
from medlens.models.forward import to_probabilities

log = logging.getLogger(__name__)

HEADLINE = ("auc", "accuracy", "sensitivity", "specificity", "f1")


@dataclass(frozen=True)
class SplitScores:
    """Model outputs on one split: rows (manifest order), targets, logits, patient ids, and the
    model's pooled features where they were computed with the logits (``unlike_training``)."""

    split: str
    indices: NDArray[np.int64]
    targets: NDArray[Any]
    logits: NDArray[np.float32]
    groups: list[str]
    embedding: NDArray[np.float64] | None = None


@dataclass(frozen=True)
class OperatingPoint:
    temperature: float
    threshold: float | list[float] | None
    method: str


def fit_operating_point(
    val: SplitScores, labels: LabelSpec, *, sensitivity: float | None = None
) -> OperatingPoint:
    """Temperature and decision threshold(s), from validation only."""
    temperature = fit_temperature(val.logits, val.targets, multilabel=labels.multilabel)
    method = f"sensitivity>={sensitivity}" if sensitivity else "youden"
    probs = to_probabilities(val.logits, multilabel=labels.multilabel, temperature=temperature)
    if labels.task == "binary":
        return OperatingPoint(
            temperature, choose_threshold(val.targets, probs[:, 1], sensitivity=sensitivity), method
        )
    if labels.multilabel:
        thresholds = [
            choose_threshold(val.targets[:, k], probs[:, k], sensitivity=sensitivity)
            if 0 < val.targets[:, k].sum() < len(val.targets)
            else 0.5
            for k in range(labels.num_outputs)
        ]
        return OperatingPoint(temperature, thresholds, method)
    return OperatingPoint(temperature, None, "argmax")


def split_metrics(
    y: NDArray[Any], probs: NDArray[np.float64], labels: LabelSpec, op: OperatingPoint
) -> dict[str, Any]:
    if labels.task == "binary":
        return binary_metrics(y, probs[:, 1], float(op.threshold))  # type: ignore[arg-type]
    if labels.multilabel:
        return multilabel_metrics(y, probs, np.asarray(op.threshold))
    return multiclass_metrics(y, probs, ordinal=labels.task == "ordinal")


def _decisions(probs: NDArray[np.float64], labels: LabelSpec, op: OperatingPoint) -> NDArray[Any]:
    if labels.task == "binary":
        return (probs[:, 1] >= float(op.threshold)).astype(np.int64)  # type: ignore[arg-type,no-any-return]
    if labels.multilabel:
        return (probs >= np.asarray(op.threshold, dtype=np.float64)).astype(np.int64)
    decided: NDArray[Any] = probs.argmax(axis=1)
    return decided


def calibration_figures(
    y: NDArray[Any], probs: NDArray[np.float64], labels: LabelSpec
) -> tuple[float, list[dict[str, float]]]:
    if labels.task == "binary":
        return expected_calibration_error(y, probs[:, 1])
    if labels.multilabel:
        return expected_calibration_error(y.ravel(), probs.ravel())
    return expected_calibration_error(probs.argmax(axis=1) == y, probs.max(axis=1))


def evaluate_scores(
    val: SplitScores | None,
    test: SplitScores,
    labels: LabelSpec,
    *,
    operating_point: OperatingPoint | None = None,
    sensitivity: float | None = None,
    resamples: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """The content of ``metrics.json``: val and test metrics, test CIs, calibration, curves.

    The operating point (temperature, threshold) is fitted on ``val`` unless one is given
    (an artifact's frozen one); ``test`` never influences it.
    """
    if operating_point is None:
        if val is None:
            raise ConfigError("no validation scores to choose the operating point on")
        operating_point = fit_operating_point(val, labels, sensitivity=sensitivity)
    op = operating_point
    multilabel = labels.multilabel
    probs = to_probabilities(test.logits, multilabel=multilabel, temperature=op.temperature)
    raw = to_probabilities(test.logits, multilabel=multilabel)
    y = test.targets

    def scalar(idx: NDArray[np.int64]) -> dict[str, Any]:
        m = split_metrics(y[idx], probs[idx], labels, op)
        return {k: v for k, v in m.items() if k != "per_class"}

    test_metrics = split_metrics(y, probs, labels, op)
    test_metrics["ci"] = bootstrap_ci(
        scalar, len(y), groups=test.groups, resamples=resamples, seed=seed
    )
    if not test_metrics["ci"] and len(y):
        log.warning(
            "no confidence intervals: the %s split has one patient, and resampling patients "
            "needs several (are the patient ids right? see --patient-regex)",
            test.split,
        )
    ece, bins = calibration_figures(y, probs, labels)
    test_metrics["ece"] = ece
    test_metrics["ece_uncalibrated"] = calibration_figures(y, raw, labels)[0]
    test_metrics["n"] = len(y)
    if labels.task == "binary":  # the published MedMNIST protocol: raw probability, 0.5
        test_metrics["accuracy_at_0.5"] = float(np.mean((raw[:, 1] >= 0.5) == y))
    if not multilabel:
        k = labels.num_outputs
        test_metrics["confusion_matrix"] = confusion_matrix(
            y, _decisions(probs, labels, op), k
        ).tolist()
    curves: dict[str, Any] = {"reliability": bins}
    score_columns = [1] if labels.task == "binary" else range(labels.num_outputs)
    for k in score_columns:
        yk = y[:, k] if multilabel else (y == k)
        fpr, tpr, _ = roc_curve(yk, probs[:, k])
        recall, precision = pr_curve(yk, probs[:, k])
        curves[labels.classes[k]] = {
            "fpr": fpr.round(5).tolist(),
            "tpr": tpr.round(5).tolist(),
            "recall": recall.round(5).tolist(),
            "precision": precision.round(5).tolist(),
        }
    result: dict[str, Any] = {
        "task": labels.task,
        "classes": labels.classes,
        "temperature": round(op.temperature, 5),
        "threshold": op.threshold,
        "threshold_method": op.method,
        "test": test_metrics,
        "curves": curves,
    }
    if val is not None:
        val_probs = to_probabilities(val.logits, multilabel=multilabel, temperature=op.temperature)
        val_metrics = split_metrics(val.targets, val_probs, labels, op)
        result["val"] = {k: v for k, v in val_metrics.items() if k != "per_class"}
        result["val"]["n"] = len(val.targets)
        if labels.task == "binary":
            val_p = val_probs[:, 1]
            result["other_operating_points"] = {
                # comparable with published accuracies (argmax of an accuracy-trained model)
                "max_validation_accuracy": _point_on_test(
                    max_accuracy_threshold(val.targets, val_p), probs, y
                ),
                # the single best Youden cut, which the kernel-smoothed cut replaces
                "youden_single_cut": _point_on_test(youden_cut(val.targets, val_p), probs, y),
            }
    return result


def _point_on_test(threshold: float, probs: NDArray[np.float64], y: NDArray[Any]) -> dict[str, Any]:
    """Test figures at another threshold chosen on validation: reported beside, never instead
    of, the stored operating point."""
    m = binary_metrics(y, probs[:, 1], threshold)
    return {"threshold": threshold} | {
        k: m[k] for k in ("accuracy", "sensitivity", "specificity", "f1") if k in m
    }


def decisions_for(test: SplitScores, labels: LabelSpec, metrics: dict[str, Any]) -> NDArray[Any]:
    """Decisions on ``test`` at the operating point stored in ``metrics``."""
    op = OperatingPoint(metrics["temperature"], metrics["threshold"], metrics["threshold_method"])
    probs = to_probabilities(test.logits, multilabel=labels.multilabel, temperature=op.temperature)
    return _decisions(probs, labels, op)
