"""Patient-level stratified splits, k-fold assignment and the leakage check."""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from medlens.data.manifest import SPLITS, Manifest
from medlens.errors import ConfigError, LeakageError


def _patient_strata(manifest: Manifest) -> dict[str, str]:
    """Stratum of each patient: its most frequent label combination."""
    per_patient: dict[str, Counter[str]] = defaultdict(Counter)
    columns = manifest.label_columns
    for row in manifest:
        per_patient[row["patient_id"]]["|".join(row.get(c, "") for c in columns)] += 1
    return {pid: counts.most_common(1)[0][0] for pid, counts in per_patient.items()}


def patient_split(
    manifest: Manifest, *, val: float = 0.15, test: float = 0.15, seed: int = 0
) -> Manifest:
    """Assign ``split`` so that every patient is in exactly one split, stratified by label.

    Example:
        >>> m2 = patient_split(manifest, val=0.1, test=0.2, seed=1)  # doctest: +SKIP
        >>> check_leakage(m2).ok
        True
    """
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise ConfigError(f"fractions val={val}, test={test} must be in [0, 1) with val + test < 1")
    strata = _patient_strata(manifest)
    by_stratum: dict[str, list[str]] = defaultdict(list)
    for pid, stratum in sorted(strata.items()):
        by_stratum[stratum].append(pid)
    rng = np.random.default_rng(seed)
    assignment: dict[str, str] = {}
    for stratum in sorted(by_stratum):
        patients = by_stratum[stratum]
        rng.shuffle(patients)
        n = len(patients)
        n_test = round(n * test)
        n_val = round(n * val)
        if n >= 3:  # every split gets each class when the class has enough patients
            n_test, n_val = max(n_test, 1 if test else 0), max(n_val, 1 if val else 0)
        for i, pid in enumerate(patients):
            assignment[pid] = "test" if i < n_test else "val" if i < n_test + n_val else "train"
    rows = [{**row, "split": assignment[row["patient_id"]]} for row in manifest]
    return Manifest(rows, manifest.root)


def kfold(manifest: Manifest, k: int = 5, *, seed: int = 0) -> Manifest:
    """Add a ``fold`` column (0..k-1): patient-grouped, label-stratified folds of the non-test rows."""
    from sklearn.model_selection import StratifiedGroupKFold

    if k < 2:
        raise ConfigError(f"k-fold needs k >= 2, got {k}")
    pool = [i for i, row in enumerate(manifest.rows) if row.get("split") != "test"]
    strata = _patient_strata(manifest)
    groups = [manifest.rows[i]["patient_id"] for i in pool]
    if len(set(groups)) < k:
        raise ConfigError(f"only {len(set(groups))} patients for {k} folds; lower k")
    y = [strata[g] for g in groups]
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    rows = [dict(r) for r in manifest.rows]
    for fold, (_, held) in enumerate(splitter.split(np.zeros(len(pool)), y, groups)):
        for j in held:
            rows[pool[j]]["fold"] = str(fold)
    for row in rows:
        row.setdefault("fold", "")
    return Manifest(rows, manifest.root)


@dataclass
class LeakageReport:
    """What crosses split boundaries: shared patients/studies and identical images."""

    shared_patients: dict[str, list[str]] = field(default_factory=dict)
    shared_studies: dict[str, list[str]] = field(default_factory=dict)
    duplicates: list[tuple[str, str, str, str]] = field(
        default_factory=list
    )  # (split, path, split, path)

    @property
    def ok(self) -> bool:
        return not (self.shared_patients or self.shared_studies or self.duplicates)

    def problems(self) -> list[str]:
        out = []
        for pair, ids in self.shared_patients.items():
            out.append(
                f"{len(ids)} patient(s) in both {pair}: {', '.join(ids[:5])}{' ...' if len(ids) > 5 else ''}"
            )
        for pair, ids in self.shared_studies.items():
            out.append(
                f"{len(ids)} study(ies) in both {pair}: {', '.join(ids[:5])}{' ...' if len(ids) > 5 else ''}"
            )
        for s1, p1, s2, p2 in self.duplicates[:10]:
            out.append(f"identical pixels: {p1} ({s1}) == {p2} ({s2})")
        if len(self.duplicates) > 10:
            out.append(f"... and {len(self.duplicates) - 10} more identical pairs across splits")
        return out


def _shared(manifest: Manifest, column: str) -> dict[str, list[str]]:
    owners: dict[str, set[str]] = defaultdict(set)
    for row in manifest:
        if row.get(column) and row.get("split"):
            owners[row[column]].add(row["split"])
    shared: dict[str, list[str]] = {}
    for a_index, a in enumerate(SPLITS):
        for b in SPLITS[a_index + 1 :]:
            ids = sorted(k for k, v in owners.items() if a in v and b in v)
            if ids:
                shared[f"{a}/{b}"] = ids
    return shared


def check_leakage(
    manifest: Manifest, pixel_hash: Callable[[dict[str, str]], str] | None = None
) -> LeakageReport:
    """Find patients/studies shared between splits and, with ``pixel_hash``, identical images.

    ``pixel_hash(row)`` returns a digest of the decoded pixels (see :func:`array_digest`).
    """
    report = LeakageReport(_shared(manifest, "patient_id"), _shared(manifest, "study_id"))
    if pixel_hash is not None:
        seen: dict[str, tuple[str, str]] = {}
        for row in manifest:
            split = row.get("split", "")
            digest = pixel_hash(row)
            if digest in seen and seen[digest][0] != split and split:
                first_split, first_path = seen[digest]
                report.duplicates.append((first_split, first_path, split, row["path"]))
            else:
                seen.setdefault(digest, (split, row["path"]))
    return report


def assert_no_leakage(manifest: Manifest) -> None:
    """Refuse a manifest whose splits share a patient or a study."""
    report = check_leakage(manifest)
    if not report.ok:
        raise LeakageError(
            "splits leak: " + "; ".join(report.problems()),
            path=manifest.root,
            fix="re-split by patient with `medlens data split`",
        )


def array_digest(array: np.ndarray) -> str:
    """Content hash of a decoded array (shape and dtype included)."""
    h = hashlib.sha1(usedforsecurity=False)
    h.update(str((array.shape, array.dtype.str)).encode())
    h.update(np.ascontiguousarray(array).tobytes())
    return h.hexdigest()
