"""Self-configuring, budget-aware planning: fingerprints -> Plan -> plan.json."""

from medlens.planning.fingerprint import (
    DatasetFingerprint,
    HardwareFingerprint,
    fingerprint_dataset,
    hardware_fingerprint,
)
from medlens.planning.plan import Plan, parse_overrides, read_config
from medlens.planning.planner import make_plan

__all__ = [
    "DatasetFingerprint",
    "HardwareFingerprint",
    "Plan",
    "fingerprint_dataset",
    "hardware_fingerprint",
    "make_plan",
    "parse_overrides",
    "read_config",
]
