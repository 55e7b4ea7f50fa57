"""Plans: fingerprint-driven choices, JSON/YAML round trips, overrides, budget awareness."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from medlens.data import Manifest, load_manifest
from medlens.data.labels import LabelSpec, check_split_classes, infer_labels
from medlens.data.synthetic import write_chest_folder
from medlens.errors import ConfigError, DataError
from medlens.planning import HardwareFingerprint, Plan, make_plan, parse_overrides, read_config
from medlens.planning.fingerprint import DatasetFingerprint
from medlens.training.run import ensure_splits

CPU = HardwareFingerprint(cpu_cores=2, torch_threads=2, gpu=None, gpu_memory_gb=None)


def fingerprint(
    counts: dict[str, int],
    shapes: tuple[list[int], list[int]] = ([8, 8], [8, 8]),
    spacing_ratio: float = 1.0,
) -> DatasetFingerprint:
    """A fingerprint with the given class counts, smallest / largest shapes and spacing spread."""
    low, high = shapes
    return DatasetFingerprint(
        {},
        len(low),
        low,
        low,
        high,
        [1],
        [1.0] * len(low),
        {},
        "OT",
        "binary",
        counts,
        1,
        spacing_ratio,
    )


@pytest.fixture(scope="module")
def chest(tmp_path_factory: pytest.TempPathFactory) -> Manifest:
    folder = write_chest_folder(tmp_path_factory.mktemp("chest") / "data", 60, size=24)
    return ensure_splits(load_manifest(folder))[0]


@pytest.fixture(scope="module")
def plan(chest: Manifest) -> Plan:
    return make_plan(chest, infer_labels(chest), budget_s=60, hardware=CPU)


def test_plan_follows_the_fingerprint(plan: Plan) -> None:
    assert plan.spatial_dims == 2 and plan.in_channels == 1
    assert plan.input_size == [24, 24]
    assert plan.model == "compactnet" and plan.model_options["stem_stride"] == 1
    assert plan.labels["classes"] == ["nodule", "normal"]
    assert plan.fingerprint["counts"]["train"] > 0 and plan.hardware["gpu"] is None
    # the phantoms' follow-up images share a patient: fewer patients than images per split
    patients, counts = plan.fingerprint["patients"], plan.fingerprint["counts"]
    assert patients.keys() == counts.keys() and sum(patients.values()) < sum(counts.values())
    assert plan.estimates["epoch_s"] > 0 and 1 <= plan.epochs <= 200


def test_plan_round_trips_through_json(plan: Plan, tmp_path: Path) -> None:
    plan.save(tmp_path / "plan.json")
    assert Plan.load(tmp_path / "plan.json") == plan


def test_overrides_are_typed_and_checked(plan: Plan, tmp_path: Path) -> None:
    changed = plan.with_overrides(
        parse_overrides(["lr=1e-4", "augmentation.rotate_deg=0", "epochs=3"])
    )
    assert changed.lr == 1e-4 and changed.epochs == 3 and changed.augmentation["rotate_deg"] == 0
    with pytest.raises(ConfigError, match="did you mean 'epochs'"):
        plan.with_overrides({"epoch": 3})
    with pytest.raises(ConfigError, match="schedule"):
        plan.with_overrides({"schedule": "linear"})
    config = tmp_path / "c.yaml"
    config.write_text("lr: 0.01\naugmentation:\n  scale: 0.2\nmodel_options:\n  widths: [8, 16]\n")
    from_yaml = plan.with_overrides(read_config(config))
    assert from_yaml.lr == 0.01 and from_yaml.augmentation["scale"] == 0.2
    assert from_yaml.model_options == {"widths": [8, 16]}


def test_a_smaller_budget_never_plans_more_work(chest: Manifest) -> None:
    labels = infer_labels(chest)
    big = make_plan(chest, labels, budget_s=600, hardware=CPU)
    small = make_plan(chest, labels, budget_s=2, hardware=CPU)
    cost = lambda p: p.estimates["epoch_s"] * p.epochs  # noqa: E731
    assert cost(small) <= cost(big)
    assert small.epochs <= big.epochs


def test_a_network_near_the_epoch_target_is_kept_despite_timing_noise(
    chest: Manifest, monkeypatch: pytest.MonkeyPatch
) -> None:
    from medlens.planning import planner

    def step_s(candidate: planner.Candidate, **_: object) -> float:  # larger networks cost more
        return 0.01 * candidate.options["widths"][0] / 8

    monkeypatch.setattr(planner, "measure_step", step_s)
    labels = infer_labels(chest)
    largest = list(planner.WIDTHS[0])
    epoch_s = next(
        iter(
            make_plan(chest, labels, budget_s=1, hardware=CPU)
            .estimates["measured_epoch_s"]
            .values()
        )
    )
    target = planner.MIN_EPOCHS  # the epoch cap of a 60-image set is far above it

    def plan_affording(epochs: float) -> Plan:
        budget = epochs * epoch_s / planner.USABLE_BUDGET
        return make_plan(chest, labels, budget_s=budget * 1.001, hardware=CPU)

    near = plan_affording(0.85 * target)  # 15 % short: within the noise of a shared machine
    assert near.model_options["widths"] == largest and near.epochs == int(0.85 * target)
    short = plan_affording(0.7 * target)
    assert short.model_options["widths"] != largest
    assert short.epochs >= planner.EPOCH_TOLERANCE * target


def test_a_cross_validation_plan_shares_the_budget_among_its_folds(
    chest: Manifest, monkeypatch: pytest.MonkeyPatch
) -> None:
    from medlens.planning import planner

    monkeypatch.setattr(
        planner, "measure_step", lambda candidate, **_: 0.01 * candidate.options["widths"][0] / 8
    )
    labels = infer_labels(chest)
    budget = 40.0
    single = make_plan(chest, labels, budget_s=budget, hardware=CPU)
    cv = make_plan(chest, labels, budget_s=budget, hardware=CPU, folds=5)
    assert (single.folds, cv.folds) == (0, 5)
    # all five fold models fit the usable budget, each planned for its fifth of it
    usable = budget * planner.USABLE_BUDGET
    assert single.estimates["train_s"] <= usable and cv.estimates["train_s"] <= usable
    assert cv.estimates["train_s"] > usable / 2
    assert cv.epochs * cv.estimates["epoch_s"] <= usable / 5
    with pytest.raises(ConfigError, match="folds"):
        make_plan(chest, labels, budget_s=budget, hardware=CPU, folds=1)


def test_step_timing_includes_the_batch_augmentation(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    from medlens.planning import planner
    from medlens.transforms.augment import BatchAugment

    original = BatchAugment.__call__

    def slow(self: BatchAugment, *args: object, **kwargs: object) -> object:
        time.sleep(0.05)  # a lower bound on the step, whatever the machine's speed
        return original(self, *args, **kwargs)

    monkeypatch.setattr(BatchAugment, "__call__", slow)
    step = planner.measure_step(
        planner.Candidate("compactnet", {"widths": [4, 8], "stem_stride": 1}),
        spatial_dims=2,
        in_channels=1,
        num_outputs=2,
        size=[16, 16],
        batch_size=4,
        device="cpu",
        augmentation=planner.augmentation_for(fingerprint({"a": 1})),
    )
    assert step >= 0.05


def test_mixup_is_an_option_the_plan_leaves_off(plan: Plan) -> None:
    assert plan.mixup == 0
    assert plan.with_overrides({"mixup": 0.4}).mixup == 0.4  # `--set mixup=0.4`
    with pytest.raises(ConfigError, match="mixup"):
        plan.with_overrides({"mixup": -0.2})


def test_small_inputs_get_test_time_shifts(plan: Plan) -> None:
    from medlens.planning.planner import tta_shift_for

    assert plan.tta_shift == 1  # 24 px: one voxel is 4 % of the field of view
    assert tta_shift_for([28, 28, 28]) == 1 and tta_shift_for([128, 128]) == 0
    assert plan.with_overrides({"tta_shift": 0}).tta_shift == 0  # `--set tta_shift=0`
    with pytest.raises(ConfigError, match="tta_shift"):
        plan.with_overrides({"tta_shift": -1})


def test_imbalance_gets_class_weights() -> None:
    from medlens.planning.planner import loss_for

    labels = LabelSpec("binary", ["a", "b"], ["a", "b"])
    assert loss_for(fingerprint({"a": 50, "b": 50}), labels) == ("ce", None)
    name, weights = loss_for(fingerprint({"a": 90, "b": 10}), labels)
    assert name == "ce" and weights is not None and weights[1] > weights[0]
    assert loss_for(fingerprint({"a": 990, "b": 10}), labels)[0] == "focal"


def test_volumes_on_one_grid_keep_their_size() -> None:
    """A zoom would blur a size that is a measurement; images at varying scales keep it."""
    from medlens.planning.planner import augmentation_for

    counts = {"a": 5, "b": 5}
    assert augmentation_for(fingerprint(counts, ([28] * 3, [28] * 3)))["scale"] == 0
    assert augmentation_for(fingerprint(counts, ([20, 28, 28], [40, 64, 64])))["scale"] > 0
    assert augmentation_for(fingerprint(counts, ([28] * 3, [28] * 3), 1.6))["scale"] > 0
    assert augmentation_for(fingerprint(counts, ([28, 28], [28, 28])))["scale"] > 0


def test_grey_radiographs_are_equalised_other_images_keep_their_values() -> None:
    from medlens.planning.planner import preprocessing_for

    def steps(modality: str = "DX", channels: list[int] | None = None, dims: int = 2) -> list[str]:
        fp = fingerprint({"a": 5, "b": 5}, ([28] * dims, [28] * dims))
        fp = replace(fp, modality=modality, channels=channels or [1])
        return [step["name"] for step in preprocessing_for(fp, [28] * dims)]

    assert steps() == steps("CR") == steps("MG") == ["resize", "clahe", "percentile_clip", "zscore"]
    unchanged = ["percentile_clip", "zscore", "resize"]
    assert steps("OT") == steps("CT") == steps("MR") == steps(dims=3) == unchanged
    assert steps(channels=[3]) == unchanged
    assert steps(channels=[1, 3]) == ["channels", *unchanged]


def test_medmnist_files_say_their_modality(tmp_path: Path) -> None:
    from medlens.io import read_image

    images = np.zeros((2, 8, 8), np.uint8)
    for name, modality in (
        ("pneumoniamnist_64.npz", "DX"),
        ("organamnist.npz", "CT"),
        ("mine.npz", "OT"),
    ):
        np.savez(tmp_path / name, train_images=images, train_labels=np.zeros((2, 1)))
        assert read_image(f"{tmp_path / name}#train/1").meta.modality == modality


def test_label_problems_are_reported(tmp_path: Path) -> None:
    rows = [{"path": f"{i}.png", "label": "x", "patient_id": str(i)} for i in range(4)]
    with pytest.raises(DataError, match="only one class"):
        infer_labels(Manifest(rows, tmp_path))
    rows = [
        {"path": f"{i}.png", "label": "ab"[i % 2], "patient_id": str(i), "split": s}
        for i, s in enumerate(["train"] * 4 + ["val", "val", "test", "test"])
    ]
    rows[5]["label"] = "a"  # no 'b' left in validation
    manifest = Manifest(rows, tmp_path)
    with pytest.raises(DataError, match="no example in the 'val' split"):
        check_split_classes(manifest, infer_labels(manifest))
    multi = [{"path": "a.png", "label_x": "2", "label_y": "0", "patient_id": "1"}]
    with pytest.raises(DataError, match="expected 0 or 1"):
        infer_labels(Manifest(multi, tmp_path))


def test_multilabel_targets() -> None:
    spec = LabelSpec("multilabel", ["x", "y"], ["label_x", "label_y"])
    targets = spec.encode([{"label_x": "1", "label_y": "0"}, {"label_x": "0", "label_y": "1"}])
    np.testing.assert_array_equal(targets, [[1, 0], [0, 1]])


def test_the_fingerprint_sees_volumes_on_different_grids(tmp_path: Path) -> None:
    from medlens.io import MedicalImage, write_image
    from medlens.planning.fingerprint import fingerprint_dataset

    def volumes(folder: Path, spacings: list[float]) -> Manifest:
        rng = np.random.default_rng(0)
        for i, z in enumerate(spacings):
            label = "ab"[i % 2]
            (folder / label).mkdir(parents=True, exist_ok=True)
            array = rng.random((1, 6, 8, 8)).astype(np.float32)
            write_image(MedicalImage(array, spacing=(z, 1.0, 1.0)), folder / label / f"{i}.nii.gz")
        return load_manifest(folder)

    same = volumes(tmp_path / "same", [2.0] * 4)
    assert fingerprint_dataset(same, infer_labels(same)).one_grid
    mixed = volumes(tmp_path / "mixed", [2.0, 2.0, 5.0, 5.0])
    found = fingerprint_dataset(mixed, infer_labels(mixed))
    assert not found.one_grid and found.spacing_ratio == pytest.approx(2.5)
