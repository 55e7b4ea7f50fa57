"""What the labels of a manifest mean: the task, the class names, and their encoding as targets."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from medlens.data.manifest import Manifest
from medlens.data.medmnist import medmnist_info
from medlens.errors import DataError

TASKS = ("binary", "multiclass", "multilabel", "ordinal")
_MEDMNIST_TASKS = {
    "binary-class": "binary",
    "multi-class": "multiclass",
    "multi-label, binary-class": "multilabel",
    "ordinal-regression": "ordinal",
}


@dataclass(frozen=True)
class LabelSpec:
    """``task``; ``classes`` (display names); ``values``: the raw label text of each class, or for
    multi-label the label column of each class.

    Single-label targets are class indices (N,); multi-label targets are 0/1 floats (N, K).
    """

    task: str
    classes: list[str]
    values: list[str]

    @property
    def num_outputs(self) -> int:
        return len(self.classes)

    @property
    def multilabel(self) -> bool:
        return self.task == "multilabel"

    def encode(self, labels: Sequence[dict[str, str]], *, source: str | Path = "") -> NDArray[Any]:
        """Targets for label rows (as stored in a manifest or cache)."""
        if self.multilabel:
            out = np.zeros((len(labels), len(self.values)), np.float32)
            for i, row in enumerate(labels):
                for k, column in enumerate(self.values):
                    value = row.get(column, "")
                    if value not in ("0", "1"):
                        raise DataError(
                            f"multi-label column {column!r} holds {value!r} in row {i + 2}; expected 0 or 1",
                            path=source,
                        )
                    out[i, k] = float(value)
            return out
        index = {v: k for k, v in enumerate(self.values)}
        targets = np.empty(len(labels), np.int64)
        for i, row in enumerate(labels):
            value = row.get("label", "")
            if value not in index:
                raise DataError(
                    f"row {i + 2} has label {value!r}, which is not one of the classes {self.values}",
                    path=source,
                    fix="fix the label or train on data that contains this class",
                )
            targets[i] = index[value]
        return targets

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LabelSpec:
        return cls(str(data["task"]), list(data["classes"]), list(data["values"]))


def _medmnist_entry(manifest: Manifest) -> dict[str, Any] | None:
    first = manifest.rows[0]["path"]
    if "#" not in first:
        return None
    stem = re.sub(r"_\d+$", "", Path(first.split("#")[0]).stem)
    entry: dict[str, Any] | None = medmnist_info().get(stem)
    return entry


def infer_labels(manifest: Manifest, *, task: str | None = None) -> LabelSpec:
    """Decide the task and classes from a manifest (and the MedMNIST table, when it is one).

    ``label`` gives a binary or multi-class task (``task="ordinal"`` marks ordered classes);
    ``label_<name>`` columns of 0/1 give a multi-label task.
    """
    if task is not None and task not in TASKS:
        raise DataError(f"unknown task {task!r}; use one of {TASKS}")
    columns = manifest.label_columns
    if not columns:
        raise DataError(
            "the data has no label column",
            path=manifest.root,
            fix="add a 'label' column (or 'label_<name>' columns for multi-label data)",
        )
    medmnist = _medmnist_entry(manifest)
    if columns != ["label"]:
        names = [c.removeprefix("label_") for c in columns]
        if medmnist is not None:
            names = [medmnist["label"].get(n, n) for n in names]
        spec = LabelSpec("multilabel", names, columns)
        counts = spec.encode(manifest.rows, source=manifest.root).sum(axis=0)
        empty = [n for n, c in zip(names, counts, strict=True) if c == 0]
        if empty:
            raise DataError(f"no positive example of {empty}", path=manifest.root)
        return spec
    values = manifest.classes("label")
    if len(values) < 2:
        raise DataError(
            f"only one class present ({values}); a classifier needs at least two",
            path=manifest.root,
            fix="check the labels or the folder layout (one sub-folder per class)",
        )
    names = values
    if medmnist is not None:
        names = [medmnist["label"].get(v, v) for v in values]
        task = task or _MEDMNIST_TASKS.get(medmnist["task"])
    task = task or ("binary" if len(values) == 2 else "multiclass")
    if task == "binary" and len(values) != 2:
        raise DataError(f"task 'binary' needs 2 classes, found {len(values)}: {values}")
    return LabelSpec(task, names, values)


def check_split_classes(manifest: Manifest, labels: LabelSpec) -> None:
    """Every class must appear in train and validation, or AUC and thresholds are undefined."""
    if labels.multilabel:
        return
    for split in ("train", "val"):
        rows = [r for r in manifest.rows if r.get("split") == split]
        present = Counter(r.get("label", "") for r in rows)
        missing = [c for v, c in zip(labels.values, labels.classes, strict=True) if not present[v]]
        if missing:
            raise DataError(
                f"class(es) {missing} have no example in the {split!r} split",
                path=manifest.root,
                fix="re-split by patient with `medlens data split` (stratified), or add data",
            )
