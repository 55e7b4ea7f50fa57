"""The manifest: a CSV with one row per image or series.

Columns: ``path`` (relative to the CSV's folder; extra inputs in ``path_<name>`` columns),
``label`` (or several ``label_<name>`` columns for multi-label), ``patient_id`` (required),
optional ``study_id``, ``series_uid`` (for folders holding several series) and ``split``
(``train``/``val``/``test``). A path may be ``file.npz#train/12`` for one MedMNIST sample.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from medlens._fs import atomic_write_text
from medlens.errors import ManifestError
from medlens.io import split_selector

SPLITS = ("train", "val", "test")
REQUIRED = ("path", "patient_id")


@dataclass
class Manifest:
    """Rows of a manifest and the folder their relative paths start from.

    Example:
        >>> m = Manifest([{"path": "a.png", "label": "normal", "patient_id": "P1"}], Path("."))
        >>> m.label_columns, m.classes()
        (['label'], ['normal'])
    """

    rows: list[dict[str, str]]
    root: Path = field(default_factory=Path)

    def __post_init__(self) -> None:
        if not self.rows:
            raise ManifestError("manifest has no rows", path=self.root, fix="check the data source")
        columns = set(self.rows[0])
        missing = [c for c in REQUIRED if c not in columns]
        if missing:
            raise ManifestError(
                f"manifest lacks column(s) {missing}; found {sorted(columns)}",
                path=self.root,
                fix="add them (patient_id may repeat the file name if patients are unknown)",
            )
        for i, row in enumerate(self.rows):
            if not row.get("path") or not row.get("patient_id"):
                raise ManifestError(f"row {i + 2} has an empty path or patient_id", path=self.root)
            split = row.get("split", "")
            if split and split not in SPLITS:
                raise ManifestError(
                    f"row {i + 2} has split {split!r}; use one of {SPLITS}", path=self.root
                )

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[dict[str, str]]:
        return iter(self.rows)

    @property
    def columns(self) -> list[str]:
        return list(self.rows[0])

    @property
    def path_columns(self) -> list[str]:
        return [c for c in self.columns if c == "path" or c.startswith("path_")]

    @property
    def label_columns(self) -> list[str]:
        return [c for c in self.columns if c == "label" or c.startswith("label_")]

    def classes(self, column: str = "label") -> list[str]:
        """Sorted distinct values of a label column (numbers sort numerically)."""
        values = {row.get(column, "") for row in self.rows} - {""}
        return sorted(values, key=lambda v: (0, float(v), v) if _is_number(v) else (1, 0.0, v))

    def label_key(self, row: dict[str, str]) -> str:
        """A row's labels as one string ("a|b" for several label columns; "(none)")."""
        return "|".join(row.get(c, "") for c in self.label_columns) or "(none)"

    def resolve(self, row: dict[str, str], column: str = "path") -> Path:
        """Absolute path (selector kept) of a row's input."""
        base, selector = split_selector(row[column])
        full = base if base.is_absolute() else self.root / base
        return Path(f"{full}#{selector}") if selector else full

    def split(self, name: str) -> Manifest:
        """Rows of one split."""
        rows = [r for r in self.rows if r.get("split") == name]
        if not rows:
            raise ManifestError(
                f"manifest has no rows in split {name!r}",
                path=self.root,
                fix="run `medlens data split`",
            )
        return Manifest(rows, self.root)

    def missing_files(self) -> list[str]:
        """Inputs that do not exist on disk."""
        missing = []
        for row in self.rows:
            for column in self.path_columns:
                if row.get(column) and not split_selector(self.resolve(row, column))[0].exists():
                    missing.append(row[column])
        return missing

    def to_csv(self) -> str:
        columns: list[str] = []
        for row in self.rows:
            columns += [c for c in row if c not in columns]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        return buf.getvalue()

    def write(self, path: str | Path) -> Path:
        """Write the CSV atomically; paths are made relative to the CSV's folder when possible."""
        path = Path(path)
        rows = []
        for row in self.rows:
            rebased = dict(row)
            for column in self.path_columns:
                if row.get(column):
                    rebased[column] = _relative(self.resolve(row, column), path.parent.resolve())
            rows.append(rebased)
        atomic_write_text(path, Manifest(rows, path.parent).to_csv())
        return path

    @classmethod
    def read(cls, path: str | Path) -> Manifest:
        """Read and validate a manifest CSV."""
        path = Path(path)
        try:
            with path.open(newline="", encoding="utf-8") as fh:
                reader = csv.DictReader(fh)
                rows = [
                    {k.strip(): (v or "").strip() for k, v in row.items() if k} for row in reader
                ]
        except (OSError, UnicodeDecodeError, csv.Error) as err:
            raise ManifestError(f"cannot read manifest CSV ({err})", path=path) from err
        try:
            return cls(rows, path.parent)
        except ManifestError as err:
            raise ManifestError(str(err).removeprefix(f"{path.parent}: "), path=path) from None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _relative(target: Path, base: Path) -> str:
    text = str(target)
    path, selector = split_selector(text)
    rel = os.path.relpath(path.resolve(), base)
    return f"{rel}#{selector}" if selector else rel
