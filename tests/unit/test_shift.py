"""Split shift: images of a split that come from elsewhere are told apart, class by class."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from medlens.data import load_manifest
from medlens.data.check import check_dataset
from medlens.data.shift import SplitShift, _hanley_mcneil, split_shifts, thumbnail
from medlens.data.synthetic import chest_dataset
from medlens.io import MedicalImage


def _medmnist_file(path: Path, shifted_class: int | None) -> Path:
    """Chest phantoms in MedMNIST's layout; the test images of ``shifted_class`` get a
    left-to-right exposure ramp, as from another site's equipment."""
    data = chest_dataset(300, size=28, seed=3)
    images = data.images.reshape(len(data.images), 28, 28).astype(np.float32)
    images = (images - images.min()) / (images.max() - images.min())
    labels = data.labels.reshape(-1, 1)
    parts = {"train": slice(0, 180), "val": slice(180, 240), "test": slice(240, 300)}
    arrays: dict[str, np.ndarray] = {}
    for split, rows in parts.items():
        x, y = images[rows].copy(), labels[rows]
        if split == "test" and shifted_class is not None:
            ramp = np.linspace(0.6, 1.4, 28, dtype=np.float32)
            x[y[:, 0] == shifted_class] *= ramp
        arrays[f"{split}_images"] = (np.clip(x, 0, 1) * 255).astype(np.uint8)
        arrays[f"{split}_labels"] = y
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return path


def test_a_test_class_from_elsewhere_is_flagged_and_the_others_are_not(tmp_path: Path) -> None:
    report = check_dataset(load_manifest(_medmnist_file(tmp_path / "toy.npz", shifted_class=0)))
    by_key = {(s.split, s.label): s for s in report.shifts}
    assert set(by_key) == {("val", "0"), ("val", "1"), ("test", "0"), ("test", "1")}
    assert by_key["test", "0"].flagged and by_key["test", "0"].auc > 0.8
    assert not any(s.flagged for key, s in by_key.items() if key != ("test", "0"))
    assert [w for w in report.warnings if "told apart" in w] == [by_key["test", "0"].describe()]
    assert report.ok  # a shift is worth knowing, not an error in the data


def test_splits_from_one_source_are_not_flagged(tmp_path: Path) -> None:
    report = check_dataset(load_manifest(_medmnist_file(tmp_path / "toy.npz", shifted_class=None)))
    assert len(report.shifts) == 4 and not any(s.flagged for s in report.shifts)
    assert all(abs(s.auc - 0.5) < 0.2 for s in report.shifts)


def test_classes_with_too_few_images_are_not_compared() -> None:
    rng = np.random.default_rng(0)

    def samples(n: int, patients: int) -> list[tuple[str, np.ndarray]]:
        return [(f"p{i % patients}", t) for i, t in enumerate(rng.normal(size=(n, 10)))]

    assert (
        split_shifts(
            {
                ("train", "a"): samples(30, 30),
                ("test", "a"): samples(19, 19),  # too few images
                ("test", "b"): samples(40, 40),  # no training images of the class
                ("train", "c"): samples(30, 30),
                ("test", "c"): samples(40, 1),  # one patient: nothing to cross-validate over
            }
        )
        == []
    )


def test_a_patients_other_images_do_not_count_as_a_shift() -> None:
    """20 patients a side from one population, 10 near-identical images each: a classifier
    cross-validated over images would recognise the patients; over patients it cannot."""
    rng = np.random.default_rng(1)

    def side(name: str) -> list[tuple[str, np.ndarray]]:
        looks = rng.normal(size=(20, 50))
        return [
            (f"{name}{p}", (looks[p] + 0.1 * rng.normal(size=50)).astype(np.float32))
            for p in range(20)
            for _ in range(10)
        ]

    (found,) = split_shifts({("train", "x"): side("a"), ("test", "x"): side("b")})
    assert (found.n, found.patients) == (200, 20) and not found.flagged
    assert abs(found.auc - 0.5) < 0.2
    assert "200 and 200 images of 20 and 20 patients" in found.describe()


def test_thumbnails_have_one_length_per_dimensionality_and_keep_colour() -> None:
    grey = thumbnail(MedicalImage(np.random.default_rng(0).random((1, 50, 70))))
    assert grey.shape == (24 * 24 + 3,) and not grey[-3:].any()
    assert abs(float(grey[:-3].mean())) < 1e-5 and abs(float(grey[:-3].std()) - 1) < 1e-4
    red = np.random.default_rng(1).random((3, 40, 40))
    red[0] += 1.0
    colour = thumbnail(MedicalImage(red))
    assert colour.shape == grey.shape and colour[-3] > 0 > colour[-2]
    assert thumbnail(MedicalImage(np.ones((1, 20, 20, 20)))).shape == (8**3 + 3,)


@pytest.mark.parametrize("n", [30, 200])
def test_the_auc_interval_covers_the_spread_of_simulated_studies(n: int) -> None:
    """Binormal scores with a true AUC of 0.8: the interval's width matches the SD of the
    AUCs of 400 simulated studies of n cases a side (Hanley & McNeil's approximation)."""
    from scipy.stats import norm
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    shift = math.sqrt(2) * norm.ppf(0.8)
    y = np.r_[np.zeros(n), np.ones(n)]
    aucs = [
        roc_auc_score(y, np.r_[rng.normal(size=n), rng.normal(shift, size=n)]) for _ in range(400)
    ]
    low, high = _hanley_mcneil(0.8, n, n)
    assert (high - low) / (2 * 1.96) == pytest.approx(np.std(aucs), rel=0.15)
    assert _hanley_mcneil(0.99, 5, 5)[1] == 1.0  # clipped to the scale


def test_training_data_reports_the_shift_of_its_preprocessed_images(tmp_path: Path) -> None:
    from medlens.data.labels import infer_labels
    from medlens.training import prepare_data
    from medlens.transforms import Pipeline, Resize, ZScore

    # named as MedMNIST's file, so label 0 is shown by its class name
    manifest = load_manifest(_medmnist_file(tmp_path / "pneumoniamnist.npz", shifted_class=0))
    pipeline = Pipeline((ZScore(), Resize((20, 20))))
    data = prepare_data(manifest, infer_labels(manifest), pipeline, tmp_path / "cache")
    flagged = [(s.split, s.label) for s in data.shifts() if s.flagged]
    assert flagged == [("test", "normal")]


def test_the_report_shows_the_shift_table(tmp_path: Path) -> None:
    from medlens.evaluation.report import _shift

    shift = SplitShift("test", "train", "normal", 234, 1000, 234, 1000, 0.81, (0.78, 0.85))
    assert SplitShift.from_dict(shift.to_dict()) == shift
    page = _shift({"shift": [shift.to_dict()]})
    assert "<b>0.81</b>" in page and "234 (1000)" in page and "1 of 1" in page
    assert _shift({"shift": []}) == "" and "No split differs" in _shift(
        {
            "shift": [
                SplitShift("val", "train", "n", 135, 1000, 135, 1000, 0.5, (0.4, 0.6)).to_dict()
            ]
        }
    )


def _external(source: Path, out: Path, *, rows: slice, labels: bool = True) -> Path:
    """Test images of ``source`` as another site's data set (a MedMNIST file of one split)."""
    data = np.load(source)
    arrays = {"test_images": data["test_images"][rows]}
    labels_of = data["test_labels"][rows]
    arrays["test_labels"] = labels_of if labels else np.full_like(labels_of, 7)
    np.savez(out, **arrays)
    return out


def test_an_external_set_is_compared_with_the_training_images_it_is_checked_against(
    tmp_path: Path,
) -> None:
    source = _medmnist_file(tmp_path / "toy.npz", shifted_class=0)
    external = _external(source, tmp_path / "site2.npz", rows=slice(0, 60))
    report = check_dataset(load_manifest(external), against=load_manifest(source))
    outside = {s.label: s for s in report.shifts if s.reference == "reference"}
    assert set(outside) == {"0", "1"} and {s.split for s in outside.values()} == {"external"}
    assert outside["0"].flagged and not outside["1"].flagged
    assert outside["0"].n_reference == sum(
        1 for r in load_manifest(source) if r["split"] == "train" and r["label"] == "0"
    )  # compared with the training split only
    assert report.ok and not report.shared_with_reference


def test_other_class_names_are_compared_as_one_group_and_shared_images_are_problems(
    tmp_path: Path,
) -> None:
    source = _medmnist_file(tmp_path / "toy.npz", shifted_class=None)
    external = _external(source, tmp_path / "site2.npz", rows=slice(0, 60), labels=False)
    data = np.load(external)
    train_image = np.load(source)["train_images"][5]
    np.savez(
        external,
        test_images=np.concatenate([data["test_images"], train_image[None]]),
        test_labels=np.concatenate([data["test_labels"], data["test_labels"][:1]]),
    )
    report = check_dataset(load_manifest(external), against=load_manifest(source))
    outside = [s for s in report.shifts if s.reference == "reference"]
    assert [(s.label, s.n) for s in outside] == [("(all)", 61)] and not outside[0].flagged
    assert report.shared_with_reference == [("site2.npz#test/60", "toy.npz#train/5")]
    assert not report.ok and any("identical pixels" in d for _, d in report.problems())


def test_data_check_against_prints_the_comparison(
    tmp_path: Path, run_cli: Callable[..., Any]
) -> None:
    source = _medmnist_file(tmp_path / "toy.npz", shifted_class=0)
    external = _external(source, tmp_path / "site2.npz", rows=slice(0, 60))
    result = run_cli("data", "check", str(external), "--against", str(source))
    assert result.code == 0, result.err
    assert "external" in result.out and "warning: external images of class '0'" in " ".join(
        result.out.split()
    )
    refused = run_cli("data", "check", str(external), "--against", str(source), "--no-decode")
    assert refused.code == 2 and "--no-decode" in refused.err


def test_the_auc_matches_scikit_learn_with_ties() -> None:
    from sklearn.metrics import roc_auc_score

    from medlens.data.shift import _auc

    rng = np.random.default_rng(0)
    for _ in range(20):
        positive = rng.random(60) < 0.3
        scores = rng.integers(0, 6, 60).astype(np.float64)  # many ties
        assert _auc(positive, scores) == pytest.approx(roc_auc_score(positive, scores), abs=1e-12)
