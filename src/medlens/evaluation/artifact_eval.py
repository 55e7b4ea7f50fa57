"""Evaluate a saved model on a dataset with its frozen operating point (or one refitted on val)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medlens.data.cache import Progress
from medlens.data.manifest import Manifest
from medlens.data.shift import pick
from medlens.errors import ConfigError
from medlens.evaluation.evaluate import OperatingPoint, SplitScores, evaluate_scores
from medlens.inference.artifact import Artifact
from medlens.models.tta import TTA
from medlens.training.data import PreparedData, is_prepared, prepare_data


def artifact_scores(
    artifact: Artifact,
    data: PreparedData,
    split: str,
    *,
    device: str = "cpu",
    tta: TTA | None = None,
) -> SplitScores:
    idx = np.sort(data.indices(split))
    if len(idx) == 0:
        raise ConfigError(f"the data has no rows in split {split!r}")
    images = data.images(idx)
    logits, embedding = artifact.outputs(images, device=device, tta=tta)
    if embedding is not None and tta is not None and tta != artifact.tta:
        # the features over the views the summary was scaled with, as predictions see them
        embedding = artifact.embeddings(images, device=device)
    groups = [data.manifest.rows[i]["patient_id"] for i in idx]
    return SplitScores(split, idx, data.targets[idx], logits, groups, embedding)


def _training_sample(trained_on: Manifest, data: Manifest) -> list[dict[str, str]]:
    """Up to :data:`~medlens.data.shift.MAX_PER_SIDE` training images of each class, as rows of
    ``data`` (absolute paths, split "train") - none unless ``data`` is external: shares no
    image file with the training split."""
    train = [r for r in trained_on.rows if r.get("split") == "train"]
    theirs = {str(trained_on.resolve(r)) for r in train}
    if not train or any(str(data.resolve(r)) in theirs for r in data.rows):
        return []
    columns = data.columns
    chosen = sorted(pick([("train", trained_on.label_key(r)) for r in train]))
    sample = []
    for row in (train[i] for i in chosen):
        new = {c: row.get(c, "") for c in columns} | {"split": "train"}
        new |= {c: str(trained_on.resolve(row, c)) for c in trained_on.path_columns if row.get(c)}
        sample.append(new)
    return sample


def evaluate_artifact(
    artifact: Artifact,
    manifest: Manifest,
    *,
    split: str,
    cache_dir: str | Path,
    sensitivity: float | None = None,
    tta: TTA | None = None,
    resamples: int = 1000,
    device: str = "cpu",
    progress: Progress | None = None,
    trained_on: Manifest | None = None,
) -> tuple[dict[str, Any], PreparedData, SplitScores]:
    """Metrics of ``artifact`` on ``split``; rows without a split count as ``split``.

    The stored temperature and threshold are used unchanged, unless ``sensitivity`` asks for a
    new operating point, which is then chosen on the data's validation split. ``tta`` replaces
    the test-time views the artifact was fitted with (None: those). ``progress(done, total)``
    follows the decoding of images not yet in the cache. ``trained_on`` (the manifest training
    wrote beside the model) makes an external data set's ``metrics["shift"]``: its images
    against a sample of the training images (:mod:`medlens.data.shift`).
    """
    rows = [r if r.get("split") else {**r, "split": split} for r in manifest.rows]
    if not any(r["split"] == split for r in rows):
        raise ConfigError(f"the data has no rows in split {split!r}")
    whole = Manifest(rows, manifest.root)
    # only the split and validation (its metrics, or the refitted operating point) are scored:
    # the training rows are decoded only when the cache training built holds them already
    if not is_prepared(whole, artifact.pipeline, cache_dir):
        rows = [r for r in rows if r["split"] in (split, "val")]
    if trained_on is not None:
        rows += _training_sample(trained_on, whole)
    manifest = Manifest(rows, whole.root)
    data = prepare_data(
        manifest,
        artifact.labels,
        artifact.pipeline,
        cache_dir,
        in_channels=artifact.in_channels,
        check_leakage=False,
        progress=progress,
    )
    test = artifact_scores(artifact, data, split, device=device, tta=tta)
    stored = artifact.meta["operating_point"]
    op = (
        None
        if sensitivity is not None
        else OperatingPoint(
            float(stored["temperature"]),
            stored["threshold"],
            f"{stored.get('method', 'stored')} (frozen)",
        )
    )
    val = None
    if sensitivity is not None or (split != "val" and len(data.indices("val"))):
        if len(data.indices("val")) == 0:
            raise ConfigError(
                "--sensitivity needs a validation split in the data to choose the threshold on"
            )
        val = artifact_scores(artifact, data, "val", device=device, tta=tta)
    metrics = evaluate_scores(
        val, test, artifact.labels, operating_point=op, sensitivity=sensitivity, resamples=resamples
    )
    metrics["shift"] = [shift.to_dict() for shift in data.shifts()]  # with training rows only
    if artifact.typicality is not None:
        shares = {split: data.unlike_training(artifact.typicality, split, test.embedding)}
        metrics["typicality"] = {
            "threshold": artifact.typicality.threshold,
            "features": artifact.typicality.embedding is not None,
            "unlike_training": shares,
        }
    return metrics, data, test
