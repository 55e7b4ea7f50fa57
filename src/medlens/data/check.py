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
from medlens.data.shift import Sample, SplitShift, Thumbnail, pick, split_shifts, thumbnail
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
    #: (path here, path in the reference data) of pixel-identical images (check_dataset's against)
    shared_with_reference: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (
            self.unreadable
            or self.missing
            or self.label_problems
            or self.shared_with_reference
            or not self.leakage.ok
        )

    def problems(self) -> list[tuple[str, str]]:
        """(kind, message) rows for a table."""
        out = [("missing file", p) for p in self.missing[:20]]
        out += [("unreadable", f"{p}: {m}") for p, m in self.unreadable[:20]]
        out += [("labels", m) for m in self.label_problems]
        out += [("leakage", m) for m in self.leakage.problems()]
        out += [
            ("in the reference", f"identical pixels: {mine} == {theirs} (reference)")
            for mine, theirs in self.shared_with_reference[:10]
        ]
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


@dataclass
class _Decoded:
    shapes: Counter[str] = field(default_factory=Counter)
    digests: dict[int, str] = field(default_factory=dict)  # id(row) -> content digest
    thumbnails: dict[int, Thumbnail] = field(default_factory=dict)  # row index -> thumbnail
    unreadable: list[tuple[str, str]] = field(default_factory=list)


def _decode(
    manifest: Manifest,
    rows: list[dict[str, str]],
    chosen: set[int],
    progress: Callable[[int], None],
) -> _Decoded:
    """Decode ``rows`` (in worker processes when that pays), thumbnails of the ``chosen``."""
    found = _Decoded()
    items = [(row, i in chosen) for i, row in enumerate(rows)]
    # one BLAS thread here as in the workers: the thumbnails do not depend on where they ran
    with (
        threadpool_limits(1),
        contextlib.closing(timed_map(_inspect, items, state=manifest)) as inspected,
    ):
        for i, (row, result) in enumerate(zip(rows, inspected, strict=True)):
            if isinstance(result, MedlensError):
                found.unreadable.append((row["path"], str(result)))
            else:
                found.shapes[result[0]] += 1
                found.digests[id(row)] = result[1]
                if result[2] is not None:
                    found.thumbnails[i] = result[2]
            progress(i + 1)
    return found


def check_dataset(
    manifest: Manifest,
    *,
    decode: bool = True,
    progress: Progress | None = None,
    against: Manifest | None = None,
) -> DataCheckReport:
    """Validate a manifest; with ``decode`` every image is decoded (unreadable files, duplicates)
    and the validation and test images of each class are compared with training's
    (:mod:`medlens.data.shift`).

    ``against`` (decoded too) is the data a model was trained on - its training split, or all of
    it without one - and ``manifest`` an external test set: every image of it is compared with
    those, class by class (all classes as one where the two share none), and an image
    pixel-identical to one of them is a problem.

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
    missing = set(report.missing)
    readable = [row for row in manifest.rows if row["path"] not in missing]
    reference = _training_rows(against) if against is not None else []
    total = len(readable) + len(reference)
    done = progress or (lambda _done, _total: None)
    decoded = _Decoded()
    if decode:
        keys = [(r.get("split", ""), manifest.label_key(r)) for r in readable]
        inside = pick(keys)
        outside, ref_keys = _external_keys(manifest, readable, against, reference)
        decoded = _decode(manifest, readable, inside | pick(outside), lambda i: done(i, total))
        report.unreadable = decoded.unreadable
        report.shifts = split_shifts(_samples(readable, keys, decoded, inside))
        if against is not None:
            theirs = _decode(
                against, reference, pick(ref_keys), lambda i: done(len(readable) + i, total)
            )
            report.unreadable += [(f"reference {p}", m) for p, m in theirs.unreadable]
            samples = _samples(readable, outside, decoded, pick(outside))
            samples.update(_samples(reference, ref_keys, theirs, pick(ref_keys)))
            report.shifts += split_shifts(samples, reference="reference")
            report.shared_with_reference = _shared(readable, decoded, reference, theirs)
    report.shapes = dict(decoded.shapes)
    report.warnings += [shift.describe() for shift in report.shifts if shift.flagged]
    if len(report.shapes) > 1:
        report.warnings.append(
            f"{len(report.shapes)} different image shapes: preprocessing must resize them"
        )
    digests = decoded.digests
    report.leakage = check_leakage(
        manifest, (lambda row: digests.get(id(row), f"unread-{id(row)}")) if digests else None
    )
    return report


def _training_rows(manifest: Manifest) -> list[dict[str, str]]:
    """The rows a model trained on: the training split, or every row without one."""
    train = [r for r in manifest.rows if r.get("split") == "train"]
    missing = set(manifest.missing_files())
    return [r for r in (train or manifest.rows) if r["path"] not in missing]


def _external_keys(
    manifest: Manifest,
    readable: list[dict[str, str]],
    against: Manifest | None,
    reference: list[dict[str, str]],
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Keys of the external rows and of the reference's training rows: by class where the two
    share class names, else all in one group (unlabelled data); none without ``against``."""
    if against is None:
        return [], []
    outside = [("external", manifest.label_key(r)) for r in readable]
    ref_keys = [("reference", against.label_key(r)) for r in reference]
    if not {k[1] for k in ref_keys} & {k[1] for k in outside}:
        outside = [("external", "(all)") for _ in outside]
        ref_keys = [("reference", "(all)") for _ in ref_keys]
    return outside, ref_keys


def _shared(
    readable: list[dict[str, str]],
    decoded: _Decoded,
    reference: list[dict[str, str]],
    theirs: _Decoded,
) -> list[tuple[str, str]]:
    """(path, reference path) of the images pixel-identical to one of the reference's."""
    by_digest = {theirs.digests[id(r)]: r["path"] for r in reference if id(r) in theirs.digests}
    return [
        (row["path"], by_digest[decoded.digests[id(row)]])
        for row in readable
        if decoded.digests.get(id(row)) in by_digest
    ]


def _samples(
    rows: list[dict[str, str]], keys: list[tuple[str, str]], decoded: _Decoded, chosen: set[int]
) -> dict[tuple[str, str], list[Sample]]:
    """(patient, thumbnail) of the ``chosen`` rows that were read, by their key."""
    samples: dict[tuple[str, str], list[Sample]] = defaultdict(list)
    for i in sorted(chosen & decoded.thumbnails.keys()):
        samples[keys[i]].append(
            (rows[i].get("patient_id") or rows[i]["path"], decoded.thumbnails[i])
        )
    return samples


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
