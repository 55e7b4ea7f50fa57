"""Dataset validation: unreadable files, label problems, leakage, duplicate images, split shift."""

from __future__ import annotations

import contextlib
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from threadpoolctl import threadpool_limits

from medlens._parallel import timed_map
from medlens.data.builders import load_sample
from medlens.data.manifest import SPLITS, Manifest
from medlens.data.shift import SplitShift, Thumbnail, pick, split_shifts, thumbnail
from medlens.data.splits import LeakageReport, array_digest, check_leakage
from medlens.errors import MedlensError

Progress = Callable[[int, int], None]


@dataclass
class DataCheckReport:
    """Everything ``medlens data check`` reports. ``ok`` is False when a problem was found."""

    rows: int
    counts: dict[str, dict[str, int]]  # split -> label -> count
    shapes: dict[str, int]  # "CxHxW" -> count
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    label_problems: list[str] = field(default_factory=list)
    leakage: LeakageReport = field(default_factory=LeakageReport)
    shifts: list[SplitShift] = field(default_factory=list)  # val/test vs train, per class
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.unreadable or self.missing or self.label_problems or not self.leakage.ok)

    def problems(self) -> list[tuple[str, str]]:
        """(kind, message) rows for a table."""
        out = [("missing file", p) for p in self.missing[:20]]
        out += [("unreadable", f"{p}: {m}") for p, m in self.unreadable[:20]]
        out += [("labels", m) for m in self.label_problems]
        out += [("leakage", m) for m in self.leakage.problems()]
        return out


Inspected = tuple[str, str, Thumbnail | None]


def _inspect(manifest: Manifest, item: tuple[dict[str, str], bool]) -> Inspected | MedlensError:
    """(shape as "CxHxW", content digest, thumbnail if asked for) of one decoded sample, or
    why it cannot be read."""
    row, wants_thumbnail = item
    try:
        image = load_sample(manifest, row)
    except MedlensError as err:
        return err
    shape = "x".join(map(str, image.array.shape))
    return shape, array_digest(image.array), thumbnail(image) if wants_thumbnail else None


def check_dataset(
    manifest: Manifest, *, decode: bool = True, progress: Progress | None = None
) -> DataCheckReport:
    """Validate a manifest; with ``decode`` every image is decoded (unreadable files, duplicates)
    and the validation and test images of each class are compared with training's
    (:mod:`medlens.data.shift`).

    Example:
        >>> report = check_dataset(load_manifest("data/"))  # doctest: +SKIP
        >>> report.ok
        True
    """
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for row in manifest:
        counts[row.get("split") or "unsplit"][manifest.label_key(row)] += 1
    report = DataCheckReport(
        rows=len(manifest), counts={s: dict(c) for s, c in counts.items()}, shapes={}
    )
    report.missing = manifest.missing_files()
    _check_labels(manifest, report)
    digests: dict[int, str] = {}
    shapes: Counter[str] = Counter()
    missing = set(report.missing)
    readable = [row for row in manifest.rows if row["path"] not in missing]
    thumbnails: dict[tuple[str, str], list[Thumbnail]] = defaultdict(list)
    if decode:
        chosen = pick([(r.get("split", ""), manifest.label_key(r)) for r in readable])
        items = [(row, i in chosen) for i, row in enumerate(readable)]
        # one BLAS thread here as in the workers: the thumbnails do not depend on where they ran
        with (
            threadpool_limits(1),
            contextlib.closing(timed_map(_inspect, items, state=manifest)) as found_all,
        ):
            for i, (row, found) in enumerate(zip(readable, found_all, strict=True), 1):
                if isinstance(found, MedlensError):
                    report.unreadable.append((row["path"], str(found)))
                else:
                    shapes[found[0]] += 1
                    digests[id(row)] = found[1]
                    if found[2] is not None:
                        thumbnails[row["split"], manifest.label_key(row)].append(found[2])
                if progress is not None:
                    progress(i, len(readable))
    report.shapes = dict(shapes)
    report.shifts = split_shifts(thumbnails)
    report.warnings += [shift.describe() for shift in report.shifts if shift.flagged]
    if len(shapes) > 1:
        report.warnings.append(
            f"{len(shapes)} different image shapes: preprocessing must resize them"
        )
    has_hash = bool(digests)
    report.leakage = check_leakage(
        manifest, (lambda row: digests.get(id(row), f"unread-{id(row)}")) if has_hash else None
    )
    return report


def _check_labels(manifest: Manifest, report: DataCheckReport) -> None:
    if not manifest.label_columns:
        report.label_problems.append("no 'label' column: nothing to train on")
        return
    empty = [r["path"] for r in manifest if any(not r.get(c) for c in manifest.label_columns)]
    if empty:
        report.label_problems.append(f"{len(empty)} row(s) without a label, e.g. {empty[0]}")
    for column in manifest.label_columns:
        classes = manifest.classes(column)
        if len(classes) < 2:
            report.label_problems.append(
                f"column {column!r} has a single class {classes}: nothing to learn"
            )
            continue
        if len(manifest.label_columns) > 1:
            continue
        for split in SPLITS:
            present = {r.get(column) for r in manifest if r.get("split") == split}
            absent = [c for c in classes if c not in present]
            if present and absent:
                report.warnings.append(f"split {split!r} has no example of class(es) {absent}")
