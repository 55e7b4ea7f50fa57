"""When the budget early stopping leaves buys another ensemble member, and with what plan."""

from __future__ import annotations

from typing import Any

import pytest
from torch import nn

from medlens.planning import Plan
from medlens.training.members import SEED_STRIDE, member_plan, spent_seconds
from medlens.training.trainer import TrainResult


def _plan(**fields: Any) -> Plan:
    base: dict[str, Any] = {
        "labels": {"task": "binary", "classes": ["a", "b"], "columns": ["label"]},
        "spatial_dims": 2,
        "in_channels": 1,
        "input_size": [28, 28],
        "preprocessing": [],
        "model": "compactnet",
        "model_options": {},
        "batch_size": 16,
        "epochs": 40,
        "min_epochs": 20,
        "warmup_epochs": 2.0,
        "budget_s": 600.0,
        "max_members": 3,
        "seed": 7,
    }
    return Plan(**{**base, **fields}).validate()


def _result(epochs: int, epoch_s: float, stopped: str = "early_stopping") -> TrainResult:
    history = [{"epoch": e + 1, "seconds": epoch_s} for e in range(epochs)]
    return TrainResult(nn.Identity(), history, epochs // 2, 0.9, stopped, epochs * epoch_s)  # type: ignore[arg-type]


def test_unspent_budget_buys_a_member_with_a_compressed_schedule() -> None:
    plan = _plan()
    first = _result(30, 10.0)  # 300 s of 600 spent
    member = member_plan(plan, [first])
    assert member is not None
    assert member.epochs == 30 and member.min_epochs == 15
    assert member.seed == plan.seed + SEED_STRIDE
    assert member.warmup_epochs == 1.5  # shorter schedule, shorter warm-up
    assert member.model == plan.model and member.input_size == plan.input_size
    # the second extra member gets what the first two left, with its own seed
    second = member_plan(plan, [first, _result(20, 10.0)])
    assert second is not None and second.epochs == 10 and second.seed == plan.seed + 2 * SEED_STRIDE


def test_a_schedule_completed_early_leaves_budget_for_a_member() -> None:
    # the epoch cap, not early stopping, ended the first member at half the budget
    member = member_plan(_plan(), [_result(30, 10.0, "completed")])
    assert member is not None and member.epochs == 30


def test_time_kept_back_for_scoring_is_not_trained() -> None:
    first = _result(30, 10.0)  # 300 s of 600 spent
    member = member_plan(_plan(), [first], reserved_s=100.0)  # scoring this one and the next
    assert member is not None and member.epochs == 20
    assert member_plan(_plan(), [first], reserved_s=260.0) is None  # 40 s buys 4 epochs


def test_a_member_never_gets_more_epochs_than_the_plan() -> None:
    member = member_plan(_plan(epochs=12, min_epochs=6), [_result(8, 1.0)])
    assert member is not None and member.epochs == 12


@pytest.mark.parametrize(
    ("plan", "results", "why"),
    [
        (_plan(), [_result(30, 10.0, "deadline")], "the budget is spent"),
        (_plan(max_members=1), [_result(30, 10.0)], "ensembles switched off"),
        (_plan(max_members=2), [_result(30, 10.0), _result(5, 1.0)], "max_members reached"),
        (_plan(), [_result(45, 12.0)], "60 s left buys 5 of the 15 epochs needed"),
        (_plan(budget_s=12.0), [_result(9, 1.0)], "3 s left buys fewer than 5 epochs"),
    ],
)
def test_no_member_when(plan: Plan, results: list[TrainResult], why: str) -> None:
    assert member_plan(plan, results) is None, why


def test_spent_time_comes_from_the_histories() -> None:
    assert spent_seconds([_result(3, 2.0), _result(2, 1.5)]) == 9.0
