"""Which Youden estimator to ship, decided on held-out training volumes, never on a test split.

Reads the validation and held-out logits that ``bench_protocol.py`` saved with each run (the
official test split is not among them) and compares ways to pick Youden's cut on a 98-volume
validation split:

- ``single``: the cut that maximises J on the split;
- ``bootstrap``: the mean of the best cuts of 200 stratified bootstrap resamples (the default
  until the site hold-outs of 2026-11-23);
- ``binormal``: each class's log-odds fitted by a normal (mean, SD) and the cut maximising J
  under that model (Fluss, Faraggi & Reiser 2005, "normal method");
- ``robust_binormal``: the same with median and IQR / 1.349;
- ``logistic``: a logistic fit of the label on the log-odds, cut where it equals the prevalence;
- ``kernel``: each class's log-odds by a Gaussian kernel (Fluss et al. 2005, "kernel method"; the
  default since);
- ``plateau``: the centre, in log-odds, of the cuts whose J is within one binomial standard error
  of the best (the "one-SE" idea): a saturated split leaves a wide band of equally good cuts, and
  its centre keeps the largest margin on both sides for a site whose scores move;
- ``max_accuracy``: the validation-accuracy-maximising cut (reported beside, not a Youden rule).

Two readings per run: the cut from the run's own validation split scored on its 297 held-out
volumes (``actual``), and ``resampled``: validation-sized stratified draws from the pooled
validation + held-out scores, each cut scored on the rest (the spread a new split would see).
A simulation adds what four runs cannot show: heavy-tailed scores (Student t, 2 degrees of
freedom; 140 negatives, 60 positives shifted by 2), where a fitted normal's SD is dominated by
the tails; each rule's cut is scored on 200,000 fresh draws. Means are kept apart for random
hold-outs and for second-site hold-outs (``bench_protocol.py --holdout pcK+/-``), where the
held-out images are another population than validation and the cut must travel.

Last, and after any decision, each rule is applied to the official runs of
``bench_classification.py`` that saved their logits (cut on the run's validation split, scored
on its test split): reported, so a rule's effect on the published figures is in the record, never
used to choose one.

    PYTHONPATH=src:. python benchmarks/bench_operating_point.py [--draws 200]
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import minimize
from scipy.stats import norm

from benchmarks.common import RESULTS, write_result
from medlens.evaluation.calibration import (
    _cuts,
    bootstrap_youden,
    kernel_youden,
    max_accuracy_threshold,
    youden_cut,
)

NAME = "operating_point"
ROOT = Path(__file__).resolve().parents[1]
PLANNER = "src/medlens/planning/planner.py"
Rule = Callable[[NDArray[Any], NDArray[np.float64]], float]


def _binormal(y: NDArray[Any], p: NDArray[np.float64], robust: bool) -> float:
    p = np.clip(p, 1e-12, 1 - 1e-12)
    z = np.log(p / (1 - p))

    def fit(v: NDArray[np.float64]) -> tuple[float, float]:
        if robust:
            q75, q25 = np.percentile(v, [75, 25])
            return float(np.median(v)), float((q75 - q25) / 1.349)
        return float(v.mean()), float(v.std(ddof=1))

    (m1, s1), (m0, s0) = fit(z[y == 1]), fit(z[y == 0])
    grid = np.linspace(z.min(), z.max(), 4001)
    j = norm.cdf(grid, m0, s0) - norm.cdf(grid, m1, s1)
    return float(1 / (1 + np.exp(-grid[np.argmax(j)])))


def _logistic(y: NDArray[Any], p: NDArray[np.float64]) -> float:
    """Youden's cut from a logistic fit of the label on the log-odds: J is highest where the
    classes' likelihood ratio is 1, i.e. where the fitted P(y=1 | z) equals the prevalence."""
    p = np.clip(p, 1e-12, 1 - 1e-12)
    z, t = np.log(p / (1 - p)), np.asarray(y, dtype=np.float64)

    def nll(ab: NDArray[np.float64]) -> float:
        u = ab[0] * z + ab[1]
        return float(np.mean(np.logaddexp(0, u) - t * u) + 1e-4 * ab[0] ** 2)

    a, b = minimize(nll, np.array([1.0, 0.0]), method="Nelder-Mead").x
    prior = np.log(t.mean() / (1 - t.mean()))
    if a <= 0:
        return bootstrap_youden(y, p)
    return float(1 / (1 + np.exp(-(prior - b) / a)))


def _plateau(y: NDArray[Any], p: NDArray[np.float64]) -> float:
    """The log-odds midpoint of every cut within one standard error of the best Youden J."""
    y = np.asarray(y)
    cuts, tp, fp, n_pos, n_neg = _cuts(y, np.clip(p, 1e-12, 1 - 1e-12))
    tpr, fpr = tp / n_pos, fp / n_neg
    j = tpr - fpr
    best = int(np.argmax(j))
    se = np.sqrt(tpr[best] * (1 - tpr[best]) / n_pos + fpr[best] * (1 - fpr[best]) / n_neg)
    near = np.clip(cuts[j >= j[best] - se - 1e-12], 1e-12, 1 - 1e-12)
    z = np.log(near / (1 - near))
    return float(1 / (1 + np.exp(-(z.min() + z.max()) / 2)))


RULES: dict[str, Rule] = {
    "single": youden_cut,
    "bootstrap": bootstrap_youden,
    "binormal": lambda y, p: _binormal(y, p, robust=False),
    "robust_binormal": lambda y, p: _binormal(y, p, robust=True),
    "logistic": _logistic,
    "kernel": kernel_youden,
    "plateau": _plateau,
    "max_accuracy": max_accuracy_threshold,
}


def _probabilities(scores: dict[str, Any], temperature: float) -> tuple[NDArray[Any], ...]:
    logits = np.asarray(scores["logits"], dtype=np.float64)
    margin = (logits[:, 1] - logits[:, 0]) / temperature
    p = np.clip(1 / (1 + np.exp(-margin)), 1e-9, 1 - 1e-9)
    return np.asarray(scores["targets"]), p


def _score(y: NDArray[Any], p: NDArray[np.float64], cut: float) -> tuple[float, float]:
    """Youden's J and accuracy of ``p >= cut``."""
    positive = p >= cut
    j = positive[y == 1].mean() + (~positive[y == 0]).mean() - 1
    return float(j), float((positive == (y == 1)).mean())


def _group(run: dict[str, Any]) -> str:
    """``random`` hold-outs are one population with validation; a site hold-out (``pcK+/-``)
    is another, read apart for plans with and without the equalisation of radiographs, and for
    each candidate protocol tried there (``texture``)."""
    if run.get("holdout", "random") == "random":
        return "random"
    if run["protocol"] not in ("single", "clahe", "noequalise"):
        return f"site, {run['protocol']}"
    equalised = run["protocol"] == "clahe" or (
        run["protocol"] == "single" and _plan_equalises(run.get("commit") or "")
    )
    return "site, equalised" if equalised else "site, not equalised"


@functools.cache
def _plan_equalises(commit: str) -> bool:
    """Whether the default plan at ``commit`` equalised radiographs (the run records its
    commit, not its preprocessing)."""
    found = subprocess.run(
        ["git", "grep", "-q", "def equalise_for", commit.rstrip("+"), "--", PLANNER],
        cwd=ROOT,
        check=False,
    )
    return found.returncode == 0


def _mean(per_run: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        name: {
            reading: {
                key: round(statistics.mean(r["rules"][name][reading][key] for r in per_run), 4)
                for key in ("j", "accuracy")
            }
            for reading in ("actual", "resampled")
        }
        | {
            f"actual_j_at_least_{base}": sum(
                r["rules"][name]["actual"]["j"] >= r["rules"][base]["actual"]["j"] for r in per_run
            )
            for base in ("bootstrap", "kernel")
        }
        for name in RULES
    }


def compare(run: dict[str, Any], draws: int, seed: int) -> dict[str, Any]:
    yv, pv = _probabilities(run["scores"]["val"], run["temperature"])
    yh, ph = _probabilities(run["scores"]["held_out"], run["temperature"])
    out: dict[str, Any] = {
        "protocol": run["protocol"],
        "holdout": run.get("holdout", "random"),
        "group": _group(run),
        "seed": run["seed"],
        "commit": run.get("commit"),
        "rules": {},
    }
    y, p = np.concatenate([yv, yh]), np.concatenate([pv, ph])
    groups = [np.flatnonzero(y == k) for k in (0, 1)]
    sizes = [int((yv == k).sum()) for k in (0, 1)]
    rng = np.random.default_rng(seed)
    draws_idx = [
        np.concatenate(
            [rng.choice(g, n, replace=False) for g, n in zip(groups, sizes, strict=True)]
        )
        for _ in range(draws)
    ]
    for name, rule in RULES.items():
        j, acc = _score(yh, ph, rule(yv, pv))
        found = []
        for val in draws_idx:
            rest = np.ones(len(y), bool)
            rest[val] = False
            found.append(_score(y[rest], p[rest], rule(y[val], p[val])))
        js, accs = [f[0] for f in found], [f[1] for f in found]
        out["rules"][name] = {
            "actual": {"j": round(j, 4), "accuracy": round(acc, 4)},
            "resampled": {
                "j": round(statistics.mean(js), 4),
                "accuracy": round(statistics.mean(accs), 4),
                "accuracy_sd": round(statistics.stdev(accs), 4),
            },
        }
    return out


def official(path: Path) -> dict[str, Any]:
    """Each rule's test J and accuracy on the official runs that saved their logits."""
    if not path.exists():
        return {}
    found: dict[str, Any] = {}
    for dataset, entry in json.loads(path.read_text())["datasets"].items():
        rows = []
        for run in (r for r in entry["runs"] if "scores" in r):
            yv, pv = _probabilities(run["scores"]["val"], run["temperature"])
            yt, pt = _probabilities(run["scores"]["test"], run["temperature"])
            scored = {name: _score(yt, pt, rule(yv, pv)) for name, rule in RULES.items()}
            rows.append(
                {"seed": run["seed"], "commit": run.get("commit")}
                | {
                    name: {"j": round(j, 4), "accuracy": round(a, 4)}
                    for name, (j, a) in scored.items()
                }
            )
        if rows:
            found[dataset] = rows
    return found


def heavy_tails(repeats: int, seed: int = 1) -> dict[str, float]:
    """Mean true J of each Youden rule's cut on heavy-tailed scores (see the module doc)."""
    rng = np.random.default_rng(seed)
    big0, big1 = rng.standard_t(2, 200_000), rng.standard_t(2, 200_000) + 2

    def true_j(cut: float) -> float:
        return float((big0 < cut).mean() - (big1 < cut).mean())

    found: dict[str, list[float]] = {k: [] for k in ("single", "bootstrap", "binormal", "logistic")}
    for _ in range(repeats):
        y = np.repeat([0, 1], [140, 60])
        z = np.concatenate([rng.standard_t(2, 140), rng.standard_t(2, 60) + 2])
        p = 1 / (1 + np.exp(-z))
        for name in found:
            cut = float(np.clip(RULES[name](y, p), 1e-12, 1 - 1e-12))
            found[name].append(true_j(float(np.log(cut / (1 - cut)))))
    best = max(true_j(c) for c in np.linspace(-4, 6, 501))
    return {"optimum": round(best, 4)} | {k: round(statistics.mean(v), 4) for k, v in found.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--draws", type=int, default=200)
    args = parser.parse_args(argv)
    runs = json.loads((RESULTS / "training_protocol.json").read_text())["datasets"]
    results: dict[str, Any] = {}
    for dataset, entry in runs.items():
        saved = [r for r in entry["runs"] if "scores" in r and not r["training"]["folds"]]
        per_run = [compare(r, args.draws, seed=i) for i, r in enumerate(saved)]
        groups = sorted({r["group"] for r in per_run})
        mean = {g: _mean([r for r in per_run if r["group"] == g]) for g in groups}
        results[dataset] = {"runs": per_run, "mean": mean}
    write_result(
        NAME,
        {
            "description": "Youden estimators on the validation + held-out logits saved by "
            f"bench_protocol.py (no test split); resampled: {args.draws} validation-sized "
            "stratified draws from the pooled scores, each cut scored on the rest",
            "datasets": results,
            "simulation_heavy_tails_true_j": heavy_tails(100),
            "official_test_reported_only": official(RESULTS / "classification_quality.json"),
        },
    )


if __name__ == "__main__":
    main()
