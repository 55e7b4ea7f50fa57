"""Build manifests from what users bring: class folders, DICOM trees with a labels CSV, MedMNIST."""

from __future__ import annotations

import csv
import logging
import re
from collections import Counter
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from medlens.data.manifest import SPLITS, Manifest
from medlens.errors import ConfigError, DataError, ManifestError
from medlens.io import MedicalImage, is_medmnist, read_image, read_medmnist, split_selector
from medlens.io.dicom_series import is_volume, scan_series, series_folder
from medlens.io.npz import medmnist_image

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {
    ".png",
    ".jpg",
    ".jpeg",
    ".bmp",
    ".tif",
    ".tiff",
    ".gif",
    ".dcm",
    ".nii",
    ".gz",
    ".nrrd",
    ".mha",
    ".mhd",
    ".npz",  # medlens image files (write_image's geometry-keeping format)
}
_SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}
DICOM_KEYS = {
    "PatientID": "patient_id",
    "StudyInstanceUID": "study_id",
    "SeriesInstanceUID": "series_uid",
}


def _images_in(folder: Path) -> list[Path]:
    return [
        p
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    ]


def manifest_from_folder(root: str | Path, *, patient_regex: str | None = None) -> Manifest:
    """One row per sample in ``root/<class>/...`` (an image file, or a DICOM series of several
    slices); ``root/<split>/<class>/...`` also sets the split.

    Args:
        root: the folder.
        patient_regex: regular expression whose first group (or whole match) in the file name
            (a series: its folder's name) is the patient id, e.g. ``r"(person\\d+)"``; by
            default see :func:`default_patient_ids`.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError("not a folder", path=root)
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not subdirs:
        raise DataError(
            "folder has no class sub-folders",
            path=root,
            fix="arrange images as ROOT/<class>/<image>",
        )
    pattern = re.compile(patient_regex) if patient_regex else None
    split_layout = all(p.name.lower() in _SPLIT_ALIASES for p in subdirs)
    rows: list[dict[str, str]] = []
    tags: list[str | None] = []  # PatientID of DICOM samples
    for top in subdirs:
        class_dirs = (
            [(p, _SPLIT_ALIASES[top.name.lower()]) for p in sorted(top.iterdir()) if p.is_dir()]
            if split_layout
            else [(top, "")]
        )
        for class_dir, split in class_dirs:
            for row, tag in _samples_in(class_dir, root):
                row["label"] = class_dir.name
                if split:
                    row["split"] = split
                rows.append(row)
                tags.append(tag)
    if not rows:
        raise DataError("no image files found in the class sub-folders", path=root)
    _unify_label_case(rows, root)
    if pattern is not None:
        ids = [_patient_id(Path(r["path"]).name, pattern) for r in rows]
    else:
        paths, names = [r["path"] for r in rows], {r["label"] for r in rows}
        ids, why_not = default_patient_ids(paths, names, tags)
        if why_not:
            log.warning(
                "%s: the data give no patient ids (%s), so each image counts as its own "
                "patient; if several images share one, give --patient-regex (e.g. '^([^_]+)_') "
                "so that splits and confidence intervals keep them together",
                root,
                why_not,
            )
    for row, patient in zip(rows, ids, strict=True):
        row["patient_id"] = patient
    return Manifest(rows, root)


def _unify_label_case(rows: list[dict[str, str]], root: Path) -> None:
    """Class folders spelt with other letter cases in different places (``train/NORMAL``,
    ``test/normal``) are one class, named as most of its images' folders are (a tie: the
    spelling that sorts first)."""
    spellings: dict[str, Counter[str]] = {}
    for row in rows:
        spellings.setdefault(row["label"].lower(), Counter())[row["label"]] += 1
    canonical = {}
    for counts in spellings.values():
        if len(counts) > 1:
            name = min(counts, key=lambda spelling: (-counts[spelling], spelling))
            log.warning(
                "%s: class folders %s differ only in letter case; all are read as %r",
                root,
                sorted(counts),
                name,
            )
            canonical.update({spelling: name for spelling in counts})
    for row in rows:
        row["label"] = canonical.get(row["label"], row["label"])


def _samples_in(folder: Path, root: Path) -> list[tuple[dict[str, str], str | None]]:
    """The samples in one class folder, each with the PatientID of its DICOM header (None for
    other files): a DICOM series of several slices is one sample (its folder and series UID),
    not one 2D sample per slice; a radiograph or any other image file is one."""
    samples: list[tuple[dict[str, str], str | None]] = []
    dicom: set[Path] = set()
    for info in scan_series(folder).values():
        dicom.update(info.files)
        if is_volume(info):
            row = {"path": str(series_folder(info).relative_to(root)), "series_uid": info.uid}
            samples.append(({**row, "study_id": info.study_uid or ""}, info.patient_id))
        else:
            # each view is read on its own, with its own PatientID (a series should have one,
            # but UIDs kept through per-file pseudonymisation give one series several)
            samples += [
                ({"path": str(f.relative_to(root))}, patient)
                for f, patient in zip(info.files, info.patients, strict=True)
            ]
    for image in _images_in(folder):
        # a .dcm outside every image series stays a row: `data check` says what is wrong with it
        if image not in dicom:
            samples.append(({"path": str(image.relative_to(root))}, None))
    return samples


#: the most of a dataset's samples (of at least MIN_IMAGES) that one id may hold and still be
#: read as a patient: "IMG_0001.png"-style names hold them all
MAX_PATIENT_SHARE, MIN_IMAGES = 0.25, 20


def default_patient_ids(
    paths: list[str], names: set[str], tags: list[str | None] | None = None
) -> tuple[list[str], str | None]:
    """Patient ids of the samples of class folders when no regex is given, and why the data
    were not read as giving them (None when they were).

    A sample's patient is its DICOM PatientID (``tags``) where it has one, else its file name
    up to the first ``_`` (``person12_virus_3.jpeg`` -> ``person12``, as in the Kermany chest
    X-ray set), else the sample itself. Ids that cannot be patients turn that reading off for
    every sample (each is its own patient): one that names a class or a split in ``names``
    (``normal_001.png``, ``test_17.png``), or one shared by over a quarter of the samples
    (``IMG_0001.png``, a PatientID blanked to one value). Samples are named by their path, so
    ``0001.png`` in two folders are two patients, not one leak."""
    tags = tags or [None] * len(paths)
    found = [tag or _prefix(Path(p).name) for p, tag in zip(paths, tags, strict=True)]
    counts = Counter(p for p in found if p)
    reserved = {n.lower() for n in names} | set(_SPLIT_ALIASES)
    why_not = None
    if named := sorted(p for p in counts if p.lower() in reserved):
        why_not = f"the id {named[0]!r} is a class or split name"
    elif counts and len(paths) >= MIN_IMAGES:
        top, n_top = counts.most_common(1)[0]
        if n_top > MAX_PATIENT_SHARE * len(paths):
            why_not = f"{n_top} of {len(paths)} samples would be patient {top!r}"
    if why_not or not counts:
        return list(paths), why_not
    return [patient or path for patient, path in zip(found, paths, strict=True)], None


def _prefix(name: str) -> str | None:
    head, sep, _ = name.split(".")[0].partition("_")
    return head if sep and head else None


def _patient_id(name: str, pattern: re.Pattern[str]) -> str:
    match = pattern.search(name)
    if match is None:
        raise ManifestError(f"patient regex {pattern.pattern!r} does not match file name {name!r}")
    return match.group(1) if match.groups() else match.group(0)


def manifest_from_dicom_tree(
    root: str | Path, labels_csv: str | Path, *, key: str = "PatientID"
) -> Manifest:
    """One row per series under ``root`` (per file for projection radiographs), labelled by
    joining ``labels_csv`` on ``key``.

    ``labels_csv`` has a column named ``key`` (``PatientID``, ``StudyInstanceUID`` or
    ``SeriesInstanceUID``) and one ``label`` or several ``label_*`` columns.
    """
    root, labels_csv = Path(root), Path(labels_csv)
    if key not in DICOM_KEYS:
        raise ManifestError(f"key must be one of {sorted(DICOM_KEYS)}, got {key!r}")
    with labels_csv.open(newline="", encoding="utf-8") as fh:
        table = list(csv.DictReader(fh))
    if not table or key not in table[0]:
        raise ManifestError(f"labels CSV needs a {key!r} column", path=labels_csv)
    label_cols = [c for c in table[0] if c == "label" or c.startswith("label_")]
    if not label_cols:
        raise ManifestError(
            "labels CSV needs a 'label' column (or 'label_*' columns)", path=labels_csv
        )
    labels = {row[key].strip(): {c: row[c].strip() for c in label_cols} for row in table}
    rows, unlabelled = [], 0
    for info in scan_series(root).values():
        ids = {
            "PatientID": info.patient_id,
            "StudyInstanceUID": info.study_uid,
            "SeriesInstanceUID": info.uid,
        }
        found = labels.get(ids[key] or "")
        if found is None:
            unlabelled += 1
            continue
        common = {
            **found,
            "patient_id": info.patient_id or info.uid,
            "study_id": info.study_uid or "",
            "series_uid": info.uid,
        }
        if is_volume(info):
            folder = series_folder(info)
            rows.append(
                {"path": str(folder.relative_to(root)) if folder != root else ".", **common}
            )
        else:  # radiographs: an image per file
            rows += [
                {**common, "path": str(f.relative_to(root)), "series_uid": ""} for f in info.files
            ]
    if not rows:
        raise ManifestError(
            f"no series matched a {key} in the labels CSV ({unlabelled} unlabelled)", path=root
        )
    return Manifest(rows, root)


def manifest_from_medmnist(path: str | Path) -> Manifest:
    """One row per sample (``file.npz#split/i``) with the official split; labels ``label`` or ``label_k``.

    MedMNIST has no patient ids; its official splits are patient-level by construction, so each
    sample gets its own id and the official split is kept.
    """
    path = Path(path)
    rows = []
    for split, data in read_medmnist(path).items():
        multi = data.labels.shape[1] > 1
        for i, label in enumerate(data.labels):
            row = {"path": f"{path.name}#{split}/{i}"}
            if multi:
                row.update({f"label_{k}": str(int(v)) for k, v in enumerate(label)})
            else:
                row["label"] = str(int(label[0]))
            row.update({"patient_id": f"{split}-{i}", "split": split})
            rows.append(row)
    return Manifest(rows, path.parent)


def load_manifest(source: str | Path, *, patient_regex: str | None = None) -> Manifest:
    """A manifest from a CSV, a class folder or a MedMNIST ``.npz`` (decided by what it is)."""
    path = Path(source)
    if path.is_dir():
        return manifest_from_folder(path, patient_regex=patient_regex)
    if patient_regex is not None:
        raise ConfigError(
            "--patient-regex reads patient ids from the file names of a class folder",
            path=path,
            fix="a manifest CSV has its own patient_id column; MedMNIST has no patient ids",
        )
    if not path.exists():
        raise DataError("file or folder not found", path=path)
    if path.suffix.lower() == ".npz" or is_medmnist(path):
        if not is_medmnist(path):
            raise DataError(
                "this .npz is not a MedMNIST dataset (no train_images/..._labels)", path=path
            )
        return manifest_from_medmnist(path)
    if path.suffix.lower() == ".csv":
        return Manifest.read(path)
    raise DataError(
        "expected a manifest .csv, a folder of class sub-folders or a MedMNIST .npz", path=path
    )


@lru_cache(maxsize=4)
def _medmnist_split(path: str, split: str) -> Any:
    arrays = read_medmnist(path)
    if split not in arrays:
        raise DataError(f"no split {split!r}", path=path)
    return arrays[split].images


def load_sample(manifest: Manifest, row: dict[str, str]) -> MedicalImage:
    """Decode a row's input(s); several ``path*`` columns become channels of one image."""
    images = []
    for column in manifest.path_columns:
        if not row.get(column):
            continue
        target = manifest.resolve(row, column)
        base, selector = split_selector(target)
        if selector is not None and base.suffix.lower() == ".npz":
            split, _, index = selector.partition("/")
            images.append(
                medmnist_image(_medmnist_split(str(base), split)[int(index)], str(target))
            )
        else:
            images.append(read_image(target, series_uid=row.get("series_uid") or None))
    if len(images) == 1:
        return images[0]
    shapes = {img.spatial_shape for img in images}
    if len(shapes) != 1:
        raise DataError(
            f"inputs of one row have different shapes {sorted(shapes)}", path=row.get("path")
        )
    return images[0].with_array(np.concatenate([img.array for img in images]))


__all__ = [
    "SPLITS",
    "load_manifest",
    "load_sample",
    "manifest_from_dicom_tree",
    "manifest_from_folder",
    "manifest_from_medmnist",
]
