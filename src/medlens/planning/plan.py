"""The training plan: every decision of the planner in one JSON file a user can edit or override."""

from __future__ import annotations

import dataclasses
import difflib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from medlens._fs import atomic_write_text
from medlens.data.labels import LabelSpec
from medlens.errors import ConfigError
from medlens.transforms.augment import BatchAugment
from medlens.transforms.base import Pipeline

PLAN_VERSION = 1


@dataclass
class Plan:
    """What to train and how. Fields mirror the CLI's ``--set key=value`` overrides."""

    labels: dict[str, Any]
    spatial_dims: int
    in_channels: int
    input_size: list[int]
    preprocessing: list[dict[str, Any]]
    model: str
    model_options: dict[str, Any]
    batch_size: int
    epochs: int
    optimizer: str = "adamw"
    lr: float = 2e-3
    weight_decay: float = 5e-4
    momentum: float = 0.9
    schedule: str = "cosine"
    warmup_epochs: float = 1.0
    loss: str = "ce"
    class_weights: list[float] | None = None
    focal_gamma: float = 2.0
    label_smoothing: float = 0.0
    #: mixup's Beta(alpha, alpha) parameter; 0 (the planner's choice) is off. On held-out
    #: AdrenalMNIST3D training volumes alpha 0.4 improved calibration but lowered AUC and accuracy
    #: (bench_protocol.py runs at commit bba3293); on PneumoniaMNIST sites held out of training
    #: it lowered accuracy 0.927 -> 0.906 (4 runs at 2ab6ac4; benchmarks/README.md)
    mixup: float = 0.0
    augmentation: dict[str, Any] = field(default_factory=dict)
    #: test-time shifts in voxels (0: off): validation, test and every later prediction average
    #: the logits of the image moved by -n, 0 and +n on each axis (medlens.models.tta)
    tta_shift: int = 0
    patience: int = 15
    min_epochs: int = 0
    ema_decay: float = 0.0
    max_members: int = 1
    folds: int = 0
    seed: int = 0
    budget_s: float = 600.0
    #: autocast: float16 on CUDA, bfloat16 on CPUs with native support (medlens.models.precision)
    mixed_precision: bool = True
    init_from: str | None = None
    freeze_backbone: bool = False
    fingerprint: dict[str, Any] = field(default_factory=dict)
    hardware: dict[str, Any] = field(default_factory=dict)
    estimates: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    version: int = PLAN_VERSION

    @property
    def label_spec(self) -> LabelSpec:
        return LabelSpec.from_dict(self.labels)

    def pipeline(self) -> Pipeline:
        return Pipeline.from_spec(self.preprocessing)

    def augment(self) -> BatchAugment:
        return BatchAugment(spatial_dims=self.spatial_dims, **self.augmentation)

    def validate(self) -> Plan:
        """Check values a typo or an override could break; returns self."""
        if self.schedule not in ("cosine", "onecycle", "constant"):
            raise ConfigError(f"schedule {self.schedule!r}: use cosine, onecycle or constant")
        if self.optimizer not in ("adamw", "sgd"):
            raise ConfigError(f"optimizer {self.optimizer!r}: use adamw or sgd")
        if self.loss not in ("ce", "focal", "bce"):
            raise ConfigError(f"loss {self.loss!r}: use ce, focal or bce")
        if self.batch_size < 1 or self.epochs < 1 or self.lr <= 0:
            raise ConfigError("batch_size, epochs and lr must be positive")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if not 0.0 <= self.mixup <= 10.0:
            raise ConfigError(f"mixup must be in [0, 10] (Beta's alpha; 0 = off), got {self.mixup}")
        if not 0 <= self.tta_shift <= 8:
            raise ConfigError(f"tta_shift must be 0 (off) to 8 voxels, got {self.tta_shift}")
        if self.min_epochs < 0 or self.patience < 1 or self.max_members < 1:
            raise ConfigError("min_epochs must be >= 0, patience and max_members >= 1")
        if self.folds == 1 or self.folds < 0:
            raise ConfigError(
                f"folds must be 0 (no cross-validation) or at least 2, got {self.folds}"
            )
        if len(self.input_size) != self.spatial_dims:
            raise ConfigError(
                f"input_size {self.input_size} does not have {self.spatial_dims} axes"
            )
        if self.class_weights is not None and len(self.class_weights) != len(
            self.labels["classes"]
        ):
            raise ConfigError("class_weights needs one weight per class")
        self.pipeline()
        self.augment()
        return self

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    def save(self, path: str | Path) -> Path:
        atomic_write_text(path, self.to_json() + "\n")
        return Path(path)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str | Path = "") -> Plan:
        if data.get("version") != PLAN_VERSION:
            raise ConfigError(
                f"{source}: plan version {data.get('version')!r}, this medlens reads {PLAN_VERSION}",
                fix="make a new plan with `medlens plan`",
            )
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"{source}: unknown plan field(s) {unknown}")
        try:
            return cls(**data).validate()
        except TypeError as err:
            raise ConfigError(f"{source}: incomplete plan ({err})") from err

    @classmethod
    def load(cls, path: str | Path) -> Plan:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise ConfigError(f"{path}: cannot read the plan ({err})") from err
        return cls.from_dict(data, source=path)

    def with_overrides(self, overrides: dict[str, Any]) -> Plan:
        """A copy with dotted keys replaced: ``{"lr": 1e-3, "augmentation.rotate_deg": 5}``."""
        data = json.loads(self.to_json())
        for key, value in overrides.items():
            target = data
            parts = key.split(".")
            for part in parts[:-1]:
                if not isinstance(target.get(part), dict):
                    raise ConfigError(f"plan field {part!r} (in {key!r}) is not a section")
                target = target[part]
            if target is data and parts[-1] not in data:
                close = difflib.get_close_matches(parts[-1], list(data), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ConfigError(f"unknown plan field {parts[-1]!r}{hint}")
            old = target.get(parts[-1])
            if not _same_kind(old, value):
                raise ConfigError(
                    f"plan field {key!r} is {type(old).__name__} ({old!r}); got {value!r}"
                )
            target[parts[-1]] = value
        return Plan.from_dict(data, source="overrides")


def _same_kind(old: Any, new: Any) -> bool:
    """Overrides keep a field's kind: numbers stay numbers, text stays text (None is open)."""
    if old is None or new is None:
        return True
    if isinstance(old, bool) or isinstance(new, bool):
        return isinstance(old, bool) and isinstance(new, bool)
    if isinstance(old, int | float):
        return isinstance(new, int | float) and (isinstance(old, float) or isinstance(new, int))
    return isinstance(new, type(old))


def _scalar(value: Any) -> Any:
    """YAML 1.1 reads ``1e-4`` as text; numbers written that way are numbers here."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    if isinstance(value, dict):
        return {k: _scalar(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_scalar(v) for v in value]
    return value


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["lr=1e-3", "model_options.widths=[16,32]"]`` -> typed values (YAML scalars)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} must look like key=value")
        try:
            out[key.strip()] = _scalar(yaml.safe_load(text))
        except yaml.YAMLError as err:
            raise ConfigError(f"override {item!r}: {err}") from err
    return out


def read_config(path: str | Path) -> dict[str, Any]:
    """A YAML (or JSON) mapping of plan overrides; nested sections become dotted keys."""
    path = Path(path)
    try:
        data = _scalar(yaml.safe_load(path.read_text()))
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"{path}: cannot read the config ({err})") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of plan fields")
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and key not in ("model_options", "labels"):
            out.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            out[key] = value
    return out
