"""Training data: the preprocessed cache, encoded targets and split indices of one manifest."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from medlens.data.cache import CachedArrays, Progress, build_cache, cache_key
from medlens.data.labels import LabelSpec
from medlens.data.manifest import Manifest
from medlens.data.shift import SplitShift, shifts_of
from medlens.data.splits import assert_no_leakage
from medlens.data.typicality import MAX_IMAGES, Typicality, features
from medlens.errors import DataError
from medlens.io import MedicalImage
from medlens.transforms.base import Pipeline

_SPLIT_COLUMNS = ("split", "fold")

#: preprocessed images (N, C, *spatial) -> a model's pooled features (N, D)
Embed = Callable[[NDArray[np.float32]], NDArray[np.float64]]


@dataclass(frozen=True)
class PreparedData:
    """Rows, images (N, C, *spatial) and targets in the same order; splits from the manifest."""

    manifest: Manifest
    labels: LabelSpec
    cached: CachedArrays
    targets: NDArray[Any]
    data_hash: str

    def indices(self, split: str) -> NDArray[np.int64]:
        return np.asarray(
            [i for i, r in enumerate(self.manifest.rows) if r.get("split") == split], np.int64
        )

    def images(self, indices: NDArray[np.int64]) -> NDArray[np.float32]:
        return np.ascontiguousarray(self.cached.images[np.sort(indices)])

    def typicality(
        self,
        seed: int = 0,
        embed: Embed | None = None,
        val_embedding: NDArray[np.float64] | None = None,
    ) -> Typicality:
        """The training images' summaries for ``unlike_training``
        (:mod:`medlens.data.typicality`), scaled on validation; up to 2,000 images of each,
        drawn reproducibly. With ``embed`` (images -> the model's pooled features of one view)
        the model's view is summarised too, and ``val_embedding`` (those features over the
        test-time views, as predictions see them; rows in split order) sets its scale.

        One view of the training images frames the summary: over 2,000 PneumoniaMNIST images
        it flagged the same inputs as the 9-view mean at a ninth of the cost."""
        rng = np.random.default_rng(seed)

        def sample(split: str) -> NDArray[np.int64]:
            index = self.indices(split)
            return np.sort(rng.choice(len(index), min(len(index), MAX_IMAGES), replace=False))

        train, val = self.indices("train")[sample("train")], sample("val")
        images = self.images(train)
        val_images = self.images(self.indices("val")[val])
        if embed is None or val_embedding is None:
            return Typicality.fit(features(images), features(val_images))
        return Typicality.fit(
            features(images), features(val_images), embed(images), val_embedding[val]
        )

    def unlike_training(
        self, typicality: Typicality, split: str, embedding: NDArray[np.float64] | None = None
    ) -> float | None:
        """Share of ``split``'s images (up to 2,000) that ``typicality`` scores as unlike the
        training images, given the model's pooled features of them (rows in split order) for
        its second view; None for an empty split."""
        index = self.indices(split)[:MAX_IMAGES]
        if not len(index):
            return None
        rows = None if embedding is None else embedding[: len(index)]
        distances = typicality.distances(self.images(index), rows)
        return round(float((distances > typicality.threshold).mean()), 4)

    def shifts(self) -> list[SplitShift]:
        """Validation and test images told apart from training's, class by class
        (:mod:`medlens.data.shift`; classes by their display names); none without training rows."""
        labels = self.labels
        names = {} if labels.multilabel else dict(zip(labels.values, labels.classes, strict=True))
        keys = [
            (r.get("split", ""), names.get(key, key))
            for r in self.manifest.rows
            for key in [self.manifest.label_key(r)]
        ]
        patients = [r.get("patient_id") or r["path"] for r in self.manifest.rows]
        return shifts_of(keys, patients, lambda i: MedicalImage(np.asarray(self.cached.images[i])))


def _images_only(manifest: Manifest) -> Manifest:
    """The split is not part of the cached content: re-splitting or folding reuses the cache."""
    return Manifest(
        [{k: v for k, v in r.items() if k not in _SPLIT_COLUMNS} for r in manifest.rows],
        manifest.root,
    )


def is_prepared(manifest: Manifest, pipeline: Pipeline, cache_dir: str | Path) -> bool:
    """Whether :func:`prepare_data` would find every image of ``manifest`` already cached."""
    key = cache_key(_images_only(manifest), pipeline)
    return (Path(cache_dir) / key / "info.json").is_file()


def prepare_data(
    manifest: Manifest,
    labels: LabelSpec,
    pipeline: Pipeline,
    cache_dir: str | Path,
    *,
    in_channels: int | None = None,
    check_leakage: bool = True,
    progress: Progress | None = None,
) -> PreparedData:
    """Preprocess once into the cache (split-independent, so folds share it) and encode targets."""
    if check_leakage:
        assert_no_leakage(manifest)
    images_only = _images_only(manifest)
    cached = build_cache(images_only, pipeline, cache_dir, progress=progress)
    if in_channels is not None and cached.images.shape[1] != in_channels:
        raise DataError(
            f"preprocessed images have {cached.images.shape[1]} channel(s), the model expects {in_channels}",
            path=manifest.root,
            fix="add a 'channels' step to the preprocessing or re-plan for this data",
        )
    targets = labels.encode(manifest.rows, source=manifest.root)
    return PreparedData(manifest, labels, cached, targets, cache_key(images_only, pipeline))
