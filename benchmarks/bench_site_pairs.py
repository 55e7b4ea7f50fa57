"""A candidate protocol against the current plan on the second-site hold-outs, run by run.

Reads the runs ``bench_protocol.py`` saved (no training, no test split) and pairs each run of
``--candidate`` with the current plan's run of the same hold-out and seed: ``single`` at a
commit whose plan equalised radiographs, or ``clahe`` (the same preprocessing before the plan
had it). Both are re-scored with today's default operating point (``choose_threshold`` on the
run's own validation probabilities, frozen for the held-out images), so a change of the cut
rule since a run does not favour either side. The baseline is the latest run trained in the
candidate's precision: a machine with native bfloat16 plans another network and trains more
ensemble members than a float32 one, so a pair across machines is flagged, never silently mixed.

    PYTHONPATH=src:. python benchmarks/bench_site_pairs.py --candidate texture
"""

from __future__ import annotations

import argparse
import json
import statistics
from typing import Any

from benchmarks.bench_operating_point import _plan_equalises, _probabilities, _score
from benchmarks.common import RESULTS
from medlens.evaluation.calibration import choose_threshold


def _is_baseline(run: dict[str, Any]) -> bool:
    return run["protocol"] == "clahe" or (
        run["protocol"] == "single" and _plan_equalises(run.get("commit") or "")
    )


def rescore(run: dict[str, Any]) -> dict[str, float]:
    yv, pv = _probabilities(run["scores"]["val"], run["temperature"])
    yh, ph = _probabilities(run["scores"]["held_out"], run["temperature"])
    _, accuracy = _score(yh, ph, choose_threshold(yv, pv))
    return {
        "auc": round(run["held_out"]["auc"], 4),
        "accuracy": round(accuracy, 4),
        "precision": run["training"].get("precision", "float32"),
    }


def _precision(run: dict[str, Any]) -> str:
    return str(run["training"].get("precision", "float32"))


def pairs(runs: list[dict[str, Any]], candidate: str) -> list[dict[str, Any]]:
    """(hold-out, seed) -> the candidate's latest run and the baseline's latest run."""
    found = []
    sites = [r for r in runs if r.get("holdout", "random") != "random"]
    for run in (r for r in sites if r["protocol"] == candidate):
        key = (run["holdout"], run["seed"])
        bases = [r for r in sites if (r["holdout"], r["seed"]) == key and _is_baseline(r)]
        alike = [r for r in bases if _precision(r) == _precision(run)]
        bases = alike or bases
        if bases:
            found.append(
                {
                    "holdout": key[0],
                    "seed": key[1],
                    "baseline": rescore(bases[-1]) | {"commit": bases[-1].get("commit")},
                    candidate: rescore(run) | {"commit": run.get("commit")},
                }
            )
    return found


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--candidate", required=True)
    parser.add_argument("--dataset", default="pneumoniamnist")
    args = parser.parse_args(argv)
    runs = json.loads((RESULTS / "training_protocol.json").read_text())["datasets"][args.dataset]
    found = pairs(runs["runs"], args.candidate)
    for p in found:
        b, c = p["baseline"], p[args.candidate]
        print(
            f"{p['holdout']:5} seed {p['seed']}: baseline {b['auc']:.4f} / {b['accuracy']:.3f}"
            f"  {args.candidate} {c['auc']:.4f} / {c['accuracy']:.3f}"
            + (
                ""
                if b["precision"] == c["precision"]
                else f"  (not comparable: {b['precision']} vs {c['precision']} training)"
            )
        )
    if found:
        for side in ("baseline", args.candidate):
            auc = statistics.mean(p[side]["auc"] for p in found)
            acc = statistics.mean(p[side]["accuracy"] for p in found)
            print(f"mean over {len(found)} {side}: AUC {auc:.4f}, accuracy {acc:.4f}")
        lower = sum(p[args.candidate]["accuracy"] < p["baseline"]["accuracy"] for p in found)
        print(f"{args.candidate} accuracy below the baseline's on {lower} of {len(found)} runs")


if __name__ == "__main__":
    main()
