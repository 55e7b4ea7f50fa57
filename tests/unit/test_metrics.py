"""Metrics against scikit-learn on fixed inputs; thresholds, calibration, bootstrap."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from medlens.data.labels import LabelSpec
from medlens.evaluation import SplitScores, bootstrap_ci, choose_threshold, evaluate_scores
from medlens.evaluation.calibration import (
    bootstrap_youden,
    fit_temperature,
    kernel_youden,
    max_accuracy_threshold,
    youden_cut,
)
from medlens.metrics import (
    average_precision,
    binary_metrics,
    cohen_kappa,
    confusion_matrix,
    expected_calibration_error,
    multiclass_metrics,
    roc_auc,
)

RNG = np.random.default_rng(7)
Y = RNG.integers(0, 2, 300)
# rounded scores create ties, the case where hand-written AUCs usually go wrong
SCORE = np.round(np.clip(Y * 0.3 + RNG.normal(0.35, 0.25, 300), 0, 1), 2)


def test_auc_and_average_precision_match_sklearn() -> None:
    assert roc_auc(Y, SCORE) == pytest.approx(skm.roc_auc_score(Y, SCORE), abs=1e-12)
    assert average_precision(Y, SCORE) == pytest.approx(
        skm.average_precision_score(Y, SCORE), abs=1e-12
    )
    assert np.isnan(roc_auc(np.ones(5), np.arange(5)))


def test_threshold_metrics_match_sklearn() -> None:
    t = 0.5
    pred = (t <= SCORE).astype(int)
    m = binary_metrics(Y, SCORE, t)
    tn, fp, fn, _tp = skm.confusion_matrix(Y, pred).ravel()
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(Y, pred))
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(Y, pred))
    assert m["sensitivity"] == pytest.approx(skm.recall_score(Y, pred))
    assert m["specificity"] == pytest.approx(tn / (tn + fp))
    assert m["ppv"] == pytest.approx(skm.precision_score(Y, pred))
    assert m["npv"] == pytest.approx(tn / (tn + fn))
    assert m["f1"] == pytest.approx(skm.f1_score(Y, pred))
    assert m["kappa"] == pytest.approx(skm.cohen_kappa_score(Y, pred))


def test_multiclass_and_quadratic_kappa_match_sklearn() -> None:
    y = RNG.integers(0, 4, 200)
    logits = RNG.normal(size=(200, 4)) + np.eye(4)[y] * 1.5
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    pred = probs.argmax(axis=1)
    m = multiclass_metrics(y, probs, ordinal=True)
    assert m["auc"] == pytest.approx(skm.roc_auc_score(y, probs, multi_class="ovr"), abs=1e-9)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["f1"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert m["sensitivity"] == pytest.approx(skm.recall_score(y, pred, average="macro"))
    assert m["ppv"] == pytest.approx(skm.precision_score(y, pred, average="macro"))
    assert m["kappa"] == pytest.approx(skm.cohen_kappa_score(y, pred, weights="quadratic"))
    assert cohen_kappa(y, pred, 4) == pytest.approx(skm.cohen_kappa_score(y, pred))
    np.testing.assert_array_equal(confusion_matrix(y, pred, 4), skm.confusion_matrix(y, pred))


def test_youden_threshold_and_target_sensitivity() -> None:
    fpr, tpr, _ = skm.roc_curve(Y, SCORE)
    cut = youden_cut(Y, SCORE)
    j = np.mean(SCORE[Y == 1] >= cut) - np.mean(SCORE[Y == 0] >= cut)
    assert j == pytest.approx(np.max(tpr - fpr))  # the single cut reaches sklearn's best J
    assert cut not in set(SCORE.tolist())  # halfway between two scores
    # the default is the kernel-smoothed cut: near the single cut, reproducible, almost as good
    t = choose_threshold(Y, SCORE)
    assert t == choose_threshold(Y, SCORE) and abs(t - cut) < 0.1
    assert np.mean(SCORE[Y == 1] >= t) - np.mean(SCORE[Y == 0] >= t) > np.max(tpr - fpr) - 0.05
    t95 = choose_threshold(Y, SCORE, sensitivity=0.95)
    assert np.mean(SCORE[Y == 1] >= t95) >= 0.95


def test_smoothed_youden_cuts_are_steadier_than_one_cut() -> None:
    """Small validation splits from one population: bootstrap and kernel cuts vary less."""
    rng = np.random.default_rng(5)
    single, boot, kernel = [], [], []
    for _ in range(30):
        y = rng.integers(0, 2, 80)
        score = 1 / (1 + np.exp(-(rng.normal(size=80) + 1.5 * (2 * y - 1))))
        single.append(youden_cut(y, score))
        boot.append(bootstrap_youden(y, score, resamples=100))
        kernel.append(kernel_youden(y, score))
    assert np.std(boot) < np.std(single) and np.std(kernel) < np.std(single)


def test_kernel_youden_finds_the_binormal_optimum() -> None:
    """Equal-variance normal log-odds: the true Youden cut is halfway between the class means."""
    rng = np.random.default_rng(7)
    y = np.repeat([0, 1], [135, 389])  # PneumoniaMNIST's validation balance, well separated
    z = np.concatenate([rng.normal(-3, 1, 135), rng.normal(3, 1, 389)])
    cut = kernel_youden(y, 1 / (1 + np.exp(-z)))
    assert abs(np.log(cut / (1 - cut))) < 0.5
    assert choose_threshold(y, 1 / (1 + np.exp(-z))) == cut


def test_kernel_youden_handles_a_class_of_one_or_of_equal_scores() -> None:
    cut = kernel_youden(np.array([0, 1, 1, 1]), np.array([0.1, 0.8, 0.8, 0.8]))
    assert 0.1 < cut <= 0.8


def test_max_accuracy_threshold_is_the_best_cut_with_a_margin() -> None:
    t = max_accuracy_threshold(Y, SCORE)
    best = max(np.mean((c <= SCORE) == Y) for c in np.unique(SCORE))
    assert np.mean((t <= SCORE) == Y) == pytest.approx(best)
    assert t not in set(SCORE.tolist())  # halfway between two scores, not on one
    separable = max_accuracy_threshold(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.6, 0.9]))
    assert separable == pytest.approx(0.4)


def test_temperature_scaling_fixes_overconfidence() -> None:
    y = RNG.integers(0, 2, 2000)
    true_logit = (y * 2 - 1) * 1.0 + RNG.normal(0, 1.0, 2000)
    # x ~ N(+-1, 1): the calibrated log-odds are 2x, so 4x is overconfident by a factor of 2
    logits = np.stack([np.zeros(2000), true_logit * 4], axis=1)
    t = fit_temperature(logits, y, multilabel=False)
    assert 1.7 < t < 2.4
    p_raw = 1 / (1 + np.exp(-logits[:, 1]))
    p_cal = 1 / (1 + np.exp(-logits[:, 1] / t))
    assert expected_calibration_error(y, p_cal)[0] < expected_calibration_error(y, p_raw)[0] / 2


def test_bootstrap_interval_brackets_the_estimate_and_respects_patients() -> None:
    def fn(idx: np.ndarray) -> dict[str, float]:
        return {"auc": roc_auc(Y[idx], SCORE[idx])}

    ci = bootstrap_ci(fn, len(Y), resamples=300)["auc"]
    assert ci[0] < roc_auc(Y, SCORE) < ci[1]
    # ten images per patient: resampling patients gives a wider (honest) interval
    groups = [str(i // 10) for i in range(len(Y))]
    y10, s10 = np.repeat(Y[:30], 10), np.repeat(SCORE[:30], 10)

    def fn10(idx: np.ndarray) -> dict[str, float]:
        return {"auc": roc_auc(y10[idx], s10[idx])}

    naive = bootstrap_ci(fn10, 300, resamples=300)["auc"]
    by_patient = bootstrap_ci(fn10, 300, groups=groups, resamples=300)["auc"]
    assert by_patient[1] - by_patient[0] > 1.5 * (naive[1] - naive[0])
    # one patient: every resample is the same images, so no interval rather than a zero-width one
    assert bootstrap_ci(fn10, 300, groups=["P1"] * 300, resamples=50) == {}


def test_evaluate_scores_freezes_the_validation_threshold() -> None:
    labels = LabelSpec("binary", ["normal", "disease"], ["0", "1"])

    def split(name: str, n: int, shift: float) -> SplitScores:
        y = RNG.integers(0, 2, n)
        logit = (y * 2 - 1) * 1.5 + RNG.normal(shift, 1.0, n)
        logits = np.stack([np.zeros(n), logit], axis=1).astype(np.float32)
        return SplitScores(name, np.arange(n), y, logits, [str(i) for i in range(n)])

    val, test = split("val", 400, 0.0), split("test", 300, 0.8)
    metrics = evaluate_scores(val, test, labels, resamples=100)
    # the threshold is a function of validation alone
    again = evaluate_scores(val, split("test", 300, -2.0), labels, resamples=100)
    assert metrics["threshold"] == again["threshold"]
    for key in ("auc", "accuracy", "sensitivity", "specificity", "f1"):
        assert key in metrics["test"] and key in metrics["test"]["ci"]
    assert metrics["test"]["confusion_matrix"] and len(metrics["test"]["confusion_matrix"]) == 2
    other = metrics["other_operating_points"]["max_validation_accuracy"]
    assert (
        other["threshold"]
        == again["other_operating_points"]["max_validation_accuracy"]["threshold"]
    )
    assert 0 <= other["accuracy"] <= 1
