from __future__ import annotations

import csv
import multiprocessing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
import torch

from medlens.data import (
    Manifest,
    assert_no_leakage,
    build_cache,
    cache_key,
    check_leakage,
    kfold,
    load_manifest,
    load_sample,
    manifest_from_dicom_tree,
    patient_split,
)
from medlens.data.builders import default_patient_ids
from medlens.data.check import check_dataset
from medlens.data.fake_dicom import SeriesSpec, write_dicom_series
from medlens.data.synthetic import chest_dataset, chest_phantom, ct_phantom, write_chest_folder
from medlens.errors import ConfigError, LeakageError, ManifestError
from medlens.transforms import Pipeline, Resize, ZScore


@pytest.fixture(scope="module")
def chest_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_chest_folder(tmp_path_factory.mktemp("chest"), 60, size=32, seed=0)


def test_phantoms_are_deterministic_and_labelled() -> None:
    a, b = chest_phantom(3, 7, size=48), chest_phantom(3, 7, size=48)
    np.testing.assert_array_equal(a.image, b.image)
    pos = chest_phantom(0, 1, size=48, nodule=True)
    assert pos.label == 1 and pos.mask.sum() > 0 and len(pos.boxes) >= 1
    y0, x0, y1, x1 = pos.boxes[0].astype(int)
    assert pos.mask[0, y0:y1, x0:x1].sum() > 0
    ct = ct_phantom(0, 2, size=24, lesion=True)
    assert ct.image.dtype == np.int16 and (ct.mask == 5).any() and ct.label == 1
    data = chest_dataset(10, size=32)
    assert data.patient_ids[0] == data.patient_ids[1]  # follow-up images share a patient


def test_folder_builder_and_patient_split(chest_folder: Path) -> None:
    manifest = load_manifest(chest_folder)
    assert manifest.classes() == ["nodule", "normal"]
    split = patient_split(manifest, val=0.2, test=0.2, seed=0)
    report = check_leakage(split)
    assert report.ok
    owners: dict[str, set[str]] = {}
    for row in split:
        owners.setdefault(row["patient_id"], set()).add(row["split"])
    assert all(len(s) == 1 for s in owners.values())
    for name in ("train", "val", "test"):
        assert {r["label"] for r in split if r["split"] == name} == {"nodule", "normal"}


def test_split_layout_folder(tmp_path: Path) -> None:
    for split in ("train", "test"):
        write_chest_folder(tmp_path / split, 6, size=16, seed=1 if split == "test" else 0)
    manifest = load_manifest(tmp_path)
    assert {r["split"] for r in manifest} == {"train", "test"}


def test_a_class_folder_of_medlens_npz_images_keeps_their_channels(tmp_path: Path) -> None:
    from medlens.data.builders import load_sample
    from medlens.io import MedicalImage, write_image

    rng = np.random.default_rng(0)
    for label in ("tumour", "no_tumour"):
        (tmp_path / label).mkdir()
        for i in range(3):  # two channels (say FLAIR and T1c) of float, negative values
            image = MedicalImage(
                rng.normal(size=(2, 12, 12)).astype(np.float32), spacing=(0.9, 0.9)
            )
            write_image(image, tmp_path / label / f"pat{i}_z{i:03d}.npz")
    manifest = load_manifest(tmp_path)
    assert len(manifest) == 6 and {r["patient_id"] for r in manifest} == {"pat0", "pat1", "pat2"}
    sample = load_sample(manifest, manifest.rows[0])
    assert sample.array.shape == (2, 12, 12) and sample.array.min() < 0
    assert sample.spacing[:2] == pytest.approx((0.9, 0.9))


def _pngs(root: Path, names: dict[str, list[str]]) -> None:
    from PIL import Image

    for folder, files in names.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for name in files:
            Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / folder / name)


def test_patient_ids_from_file_names(tmp_path: Path) -> None:
    # Kermany-style names: the prefix before "_" is the patient, a name without "_" is its own
    ids, why_not = default_patient_ids(
        ["a/person1_virus_1.png", "a/person1_virus_2.png", "b/IM-0001.png", "b/person2_x.png"],
        {"a", "b"},
    )
    assert ids == ["person1", "person1", "b/IM-0001.png", "person2"] and why_not is None
    # prefixes that cannot be patients: a class name, a split name, one shared by most files
    for paths in (
        ["normal/normal_1.png", "sick/sick_1.png"],
        ["test/a/test_1.png", "test/b/test_2.png"],
        [f"{c}/IMG_{i:04d}.png" for c in "ab" for i in range(20)],
    ):
        ids, why_not = default_patient_ids(paths, {"normal", "sick", "a", "b"})
        assert ids == paths and why_not
    # numbering that restarts in every folder is not one patient in every split
    folders = [f"{split}/{c}" for split in ("train", "test") for c in ("normal", "sick")]
    _pngs(tmp_path, {folder: [f"{i:04d}.png" for i in range(3)] for folder in folders})
    manifest = load_manifest(tmp_path)
    assert len({r["patient_id"] for r in manifest}) == 12 and check_leakage(manifest).ok


def test_class_folders_spelt_in_other_cases_are_one_class(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _pngs(tmp_path, {"train/NORMAL": ["1.png", "2.png"], "train/sick": ["3.png", "6.png"]})
    _pngs(tmp_path, {"test/normal": ["4.png"], "test/Sick": ["5.png"]})
    manifest = load_manifest(tmp_path)
    assert manifest.classes() == ["NORMAL", "sick"]  # as most images' folders spell them
    assert "differ only in letter case" in caplog.text


def test_patient_regex_overrides_and_applies_to_folders_only(tmp_path: Path) -> None:
    _pngs(
        tmp_path / "data", {"normal": ["scan-P1-a.png", "scan-P1-b.png"], "sick": ["scan-P2-a.png"]}
    )
    manifest = load_manifest(tmp_path / "data", patient_regex=r"-(P\d+)-")
    assert sorted(r["patient_id"] for r in manifest) == ["P1", "P1", "P2"]
    manifest.write(tmp_path / "m.csv")
    with pytest.raises(ConfigError, match=r"m\.csv.*class folder"):
        load_manifest(tmp_path / "m.csv", patient_regex=r"(P\d+)")


def test_a_dicom_series_in_a_class_folder_is_one_sample(tmp_path: Path) -> None:
    volume = np.random.default_rng(0).normal(0, 100, (5, 8, 8)).astype(np.float32)
    for i, label in enumerate(["clean", "clean", "lesion"]):
        spec = SeriesSpec(patient_id=f"PAT{i}")
        write_dicom_series(volume, tmp_path / label / f"case{i}" / "ct", spec)
    # two radiographs of one patient in one series are two images, not a 2-slice volume
    write_dicom_series(volume[:2], tmp_path / "lesion" / "xr", SeriesSpec(modality="DX"))
    # radiographs sharing a series UID but pseudonymised file by file keep their own patients
    write_dicom_series(volume[:3], tmp_path / "clean" / "xr", SeriesSpec(modality="CR"))
    for i, path in enumerate(sorted((tmp_path / "clean" / "xr").iterdir())):
        ds = pydicom.dcmread(path)
        ds.PatientID = f"PSEUDO{i}"
        ds.save_as(path)
    _pngs(tmp_path, {"lesion": ["snapshot.png"]})
    # a truncated DICOM is a row that the check reports, not a file silently left out
    truncated = next((tmp_path / "clean" / "case0" / "ct").iterdir()).read_bytes()[:300]
    (tmp_path / "clean" / "cut.dcm").write_bytes(truncated)
    manifest = load_manifest(tmp_path)
    assert any("cut.dcm" in p for _, p in check_dataset(manifest).problems())
    series = sorted((r["path"], r["patient_id"]) for r in manifest if r.get("series_uid"))
    assert series == [
        ("clean/case0/ct", "PAT0"),
        ("clean/case1/ct", "PAT1"),
        ("lesion/case2/ct", "PAT2"),
    ]
    others = sorted(r["path"] for r in manifest if not r.get("series_uid"))
    assert others[0] == "clean/cut.dcm" and others[-3] == "lesion/snapshot.png"
    assert len(others) == 7
    views = sorted(r["patient_id"] for r in manifest if r["path"].startswith("clean/xr/"))
    assert views == ["PSEUDO0", "PSEUDO1", "PSEUDO2"]
    assert load_sample(manifest, manifest.rows[0]).spatial_shape == (5, 8, 8)


def test_kfold_groups_patients(chest_folder: Path) -> None:
    manifest = kfold(patient_split(load_manifest(chest_folder), seed=1), 3, seed=0)
    folds: dict[str, set[str]] = {}
    for row in manifest:
        if row["split"] != "test":
            folds.setdefault(row["patient_id"], set()).add(row["fold"])
    assert all(len(f) == 1 for f in folds.values())
    assert {f for s in folds.values() for f in s} == {"0", "1", "2"}


def test_leakage_is_refused_and_duplicates_found(chest_folder: Path) -> None:
    manifest = patient_split(load_manifest(chest_folder), seed=0)
    rows = [dict(r) for r in manifest]
    test_patient = next(r["patient_id"] for r in rows if r["split"] == "test")
    rows[next(i for i, r in enumerate(rows) if r["split"] == "train")]["patient_id"] = test_patient
    leaky = Manifest(rows, manifest.root)
    with pytest.raises(LeakageError, match="train/test"):
        assert_no_leakage(leaky)
    dup_rows = [dict(r) for r in manifest]
    train_row = next(r for r in dup_rows if r["split"] == "train")
    test_row = next(r for r in dup_rows if r["split"] == "test")
    test_row["path"] = train_row["path"]
    report = check_dataset(Manifest(dup_rows, manifest.root))
    assert not report.ok and report.leakage.duplicates


def test_manifest_validation_and_round_trip(tmp_path: Path, chest_folder: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("path,label\na.png,1\n")
    with pytest.raises(ManifestError, match=r"bad\.csv.*patient_id"):
        Manifest.read(bad)
    manifest = patient_split(load_manifest(chest_folder))
    out = manifest.write(tmp_path / "sub" / "m.csv")
    again = Manifest.read(out)
    assert [again.resolve(r).resolve() for r in again] == [
        manifest.resolve(r).resolve() for r in manifest
    ]
    assert not again.missing_files()
    rows = [dict(r) for r in again]
    rows[0]["path"] = "missing.png"
    report = check_dataset(Manifest(rows, again.root))
    assert report.missing == ["missing.png"] and not report.ok


def test_single_class_is_a_label_problem(tmp_path: Path) -> None:
    write_chest_folder(tmp_path, 4, size=16)
    rows = [{**r, "label": "normal"} for r in load_manifest(tmp_path)]
    report = check_dataset(Manifest(rows, tmp_path), decode=False)
    assert any("single class" in p for p in report.label_problems)


def test_dicom_tree_builder(tmp_path: Path, run_cli: Callable[..., Any]) -> None:
    vol = ct_phantom(0, 0, size=12).image[0]
    for i in range(3):
        write_dicom_series(vol, tmp_path / f"pt{i}" / "ct", SeriesSpec(patient_id=f"PAT{i}"))
    labels = tmp_path / "labels.csv"
    with labels.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["PatientID", "label"])
        writer.writerows([["PAT0", "1"], ["PAT1", "0"], ["PAT2", "1"]])
    manifest = manifest_from_dicom_tree(tmp_path, labels, key="PatientID")
    assert sorted((r["patient_id"], r["label"]) for r in manifest) == [
        ("PAT0", "1"),
        ("PAT1", "0"),
        ("PAT2", "1"),
    ]
    assert all(r["series_uid"] and r["study_id"] for r in manifest)
    assert check_dataset(manifest).shapes == {"1x12x12x12": 3}
    # a patient's two radiographs in one series: two rows, not a 2-slice volume
    write_dicom_series(
        vol[:2], tmp_path / "pt3" / "xr", SeriesSpec(patient_id="PAT3", modality="DX")
    )
    with labels.open("a", newline="") as fh:
        csv.writer(fh).writerow(["PAT3", "0"])
    out = tmp_path / "out" / "manifest.csv"
    result = run_cli("data", "manifest", str(tmp_path), "--labels", str(labels), "--out", str(out))
    assert result.code == 0 and "5 rows, 4 patients" in " ".join(result.out.split())
    written = Manifest.read(out)
    assert sum(1 for r in written if r["patient_id"] == "PAT3") == 2
    assert check_dataset(written).shapes == {"1x12x12x12": 3, "1x12x12": 2}


def test_medmnist_builder(tmp_path: Path) -> None:
    path = tmp_path / "toy.npz"
    imgs = np.random.default_rng(0).integers(0, 255, (4, 28, 28)).astype(np.uint8)
    np.savez(
        path,
        train_images=imgs,
        train_labels=np.array([[0], [1], [0], [1]]),
        test_images=imgs[:2],
        test_labels=np.array([[0], [1]]),
    )
    manifest = load_manifest(path)
    assert len(manifest) == 6 and {r["split"] for r in manifest} == {"train", "test"}
    report = check_dataset(manifest)
    assert len(report.leakage.duplicates) == 2  # test images are copies of train images


def test_cache_builds_once_and_reuses(
    tmp_path: Path, chest_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = patient_split(load_manifest(chest_folder))
    pipe = Pipeline((ZScore(), Resize((16, 16))))
    cached = build_cache(manifest, pipe, tmp_path)
    assert cached.images.shape == (60, 1, 16, 16) and isinstance(cached.images, np.memmap)
    import medlens.data.cache as cache_module

    def fail(*_: object) -> None:
        raise AssertionError("decoded again")

    monkeypatch.setattr(cache_module, "load_sample", fail)
    again = build_cache(manifest, pipe, tmp_path)
    np.testing.assert_array_equal(again.images, cached.images)
    assert cache_key(manifest, Pipeline((ZScore(), Resize((8, 8))))) != cache_key(manifest, pipe)
    batches = list(
        cached.batches(cached.indices("train"), 8, generator=torch.Generator().manual_seed(0))
    )
    assert sum(len(i) for i, _ in batches) == len(cached.indices("train"))
    assert batches[0][1].shape[1:] == (1, 16, 16)


def _build(args: tuple[str, str]) -> str:
    folder, cache = args
    manifest = load_manifest(folder)
    return str(build_cache(manifest, Pipeline((Resize((20, 20)),)), cache).folder)


def test_cache_is_safe_with_two_concurrent_builders(tmp_path: Path, chest_folder: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        folders = pool.map(_build, [(str(chest_folder), str(tmp_path))] * 2)
    assert folders[0] == folders[1]
    entries = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert len(entries) == 1 and (entries[0] / "info.json").exists()


def test_a_killed_build_leaves_no_folder_behind_after_the_next(
    tmp_path: Path, chest_folder: Path
) -> None:
    manifest = load_manifest(chest_folder)
    pipe = Pipeline((Resize((12, 12)),))
    key = cache_key(manifest, pipe)
    stale = tmp_path / f".{key}.killed"  # what a build killed with -9 leaves
    (stale / "images.npy").parent.mkdir(parents=True)
    (stale / "images.npy").write_bytes(b"\0" * 1000)
    other = tmp_path / ".0123456789abcdef01234567.other"  # another key's build: not ours to touch
    other.mkdir()
    build_cache(manifest, pipe, tmp_path)
    assert not stale.exists() and other.exists() and (tmp_path / key / "info.json").exists()


def test_shape_mismatch_in_cache_names_the_fix(tmp_path: Path) -> None:
    write_chest_folder(tmp_path / "a" / "x", 2, size=16)
    write_chest_folder(tmp_path / "b" / "x", 2, size=24)
    rows = [{**r, "path": f"a/x/{r['path']}"} for r in load_manifest(tmp_path / "a" / "x")]
    rows += [{**r, "path": f"b/x/{r['path']}"} for r in load_manifest(tmp_path / "b" / "x")]
    from medlens.errors import DataError

    with pytest.raises(DataError, match="Resize or CropOrPad"):
        build_cache(Manifest(rows, tmp_path), Pipeline(()), tmp_path / "cache")
    assert not [p for p in (tmp_path / "cache").iterdir() if p.is_dir()]
