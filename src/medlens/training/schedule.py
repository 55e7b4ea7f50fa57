"""Learning-rate schedules as per-step multipliers (LambdaLR): warm-up then cosine or one-cycle."""

from __future__ import annotations

import math
from collections.abc import Callable

from medlens.errors import ConfigError


def lr_multiplier(name: str, total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """Multiplier of the base learning rate at optimizer step ``step``.

    ``cosine``: linear warm-up, then cosine decay to 1 % of the base rate.
    ``onecycle``: linear rise over the first 30 %, cosine fall to 0.1 % (Smith's one-cycle).
    ``constant``: warm-up, then the base rate.
    """
    total = max(1, total_steps)
    warm = min(max(0, warmup_steps), total - 1)

    def cosine(step: int) -> float:
        if step < warm:
            return (step + 1) / (warm + 1)
        progress = min(1.0, (step - warm) / max(1, total - warm))
        return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * progress))

    def onecycle(step: int) -> float:
        peak = max(1, int(0.3 * total))
        if step < peak:
            return 0.04 + 0.96 * step / peak
        progress = min(1.0, (step - peak) / max(1, total - peak))
        return 0.001 + 0.999 * 0.5 * (1 + math.cos(math.pi * progress))

    def constant(step: int) -> float:
        return (step + 1) / (warm + 1) if step < warm else 1.0

    schedules = {"cosine": cosine, "onecycle": onecycle, "constant": constant}
    if name not in schedules:
        raise ConfigError(f"unknown schedule {name!r}; use {sorted(schedules)}")
    return schedules[name]
