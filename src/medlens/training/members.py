"""Ensemble members trained in the budget a run leaves unspent.

A plan sizes its epochs to the time budget, but two things end runs early: early stopping (on
small data often with a third of the budget left; AdrenalMNIST3D: 272-418 s of 600 s) and the
plan's epoch cap, which faster steps reach first (bfloat16 PneumoniaMNIST completed its 32
epochs in 282 s of 600). That time buys another member on the same split with its own seed and
a schedule compressed to fit; the artifact averages the members' logits, and the operating
point is chosen on the ensemble's validation scores like any other.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from medlens.planning.plan import Plan
from medlens.training.trainer import TrainResult

MIN_MEMBER_EPOCHS = 5
SEED_STRIDE = 1000  # member k trains with seed + k * SEED_STRIDE


def spent_seconds(results: Sequence[TrainResult]) -> float:
    """Training seconds recorded in the members' histories (a resumed run counts them too)."""
    return float(sum(row["seconds"] for r in results for row in r.history))


def member_plan(plan: Plan, results: Sequence[TrainResult], reserved_s: float = 0.0) -> Plan | None:
    """The plan of the next member, or None when ``plan.max_members`` are trained, the first
    member ran into the deadline, or the unspent budget less ``reserved_s`` (scoring the members:
    27 test-time views of every validation and test volume take tens of seconds) affords too
    few epochs.

    Too few is under a third of the epochs the first member ran: a much shorter schedule gives a
    member weak enough to pull the average down.
    """
    if not results or len(results) >= plan.max_members:
        return None
    first = results[0]
    if first.stopped == "deadline" or not first.history:
        return None
    epoch_s = statistics.median(float(row["seconds"]) for row in first.history)
    left = plan.budget_s - spent_seconds(results) - reserved_s
    epochs = min(plan.epochs, int(left / max(epoch_s, 1e-6)))
    if epochs < max(MIN_MEMBER_EPOCHS, math.ceil(len(first.history) / 3)):
        return None
    return plan.with_overrides(
        {
            "seed": plan.seed + SEED_STRIDE * len(results),
            "epochs": epochs,
            "min_epochs": epochs // 2,
            "warmup_epochs": min(plan.warmup_epochs, max(0.5, epochs / 20)),
        }
    )
