"""Metrics (numpy, bootstrap-friendly)."""

from medlens.metrics.classification import (
    average_precision,
    binary_metrics,
    cohen_kappa,
    confusion_matrix,
    expected_calibration_error,
    multiclass_metrics,
    multilabel_metrics,
    pr_curve,
    roc_auc,
    roc_curve,
)

__all__ = [
    "average_precision",
    "binary_metrics",
    "cohen_kappa",
    "confusion_matrix",
    "expected_calibration_error",
    "multiclass_metrics",
    "multilabel_metrics",
    "pr_curve",
    "roc_auc",
    "roc_curve",
]
