"""Clinical-study evaluation: metrics with bootstrap CIs, operating points, calibration, reports."""

from medlens.evaluation.bootstrap import bootstrap_ci
from medlens.evaluation.calibration import choose_threshold, fit_temperature
from medlens.evaluation.evaluate import (
    OperatingPoint,
    SplitScores,
    evaluate_scores,
    fit_operating_point,
)
from medlens.evaluation.report import Case, write_report

__all__ = [
    "Case",
    "OperatingPoint",
    "SplitScores",
    "bootstrap_ci",
    "choose_threshold",
    "evaluate_scores",
    "fit_operating_point",
    "fit_temperature",
    "write_report",
]
