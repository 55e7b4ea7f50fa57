"""Model artifacts: a folder of safetensors weights and JSON that rebuilds everything else.

    model/
      model.json          architecture, labels, preprocessing, operating point, metrics, versions
      weights.safetensors  (or member0.safetensors ... for an ensemble)
      plan.json           the training plan
      typicality.safetensors  the training images' summary behind ``unlike_training``

Loading never unpickles; a newer format version or a mismatched weight file is refused with a fix.
"""

from __future__ import annotations

import datetime as dt
import json
import platform
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

import medlens
from medlens._fs import atomic_write_text
from medlens.data.labels import LabelSpec
from medlens.data.typicality import FILE as TYPICALITY_FILE
from medlens.data.typicality import QUANTILE as TYPICALITY_QUANTILE
from medlens.data.typicality import Typicality
from medlens.errors import ArtifactError, ConfigError, DataError
from medlens.io import MedicalImage
from medlens.models import MedlensModel, list_models, model_from_spec
from medlens.models.forward import batched_logits, batched_outputs, to_probabilities
from medlens.models.tta import TTA
from medlens.serialization import load_weights, save_weights
from medlens.transforms import Channels
from medlens.transforms.base import Pipeline

FORMAT = "medlens-model"
FORMAT_VERSION = 1


def library_versions() -> dict[str, str]:
    import monai

    return {
        "medlens": medlens.__version__,
        "torch": torch.__version__,
        "monai": monai.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def save_artifact(
    folder: str | Path,
    members: list[MedlensModel],
    *,
    labels: LabelSpec,
    preprocessing: list[dict[str, Any]],
    plan: dict[str, Any],
    operating_point: dict[str, Any],
    metrics: dict[str, Any],
    data_hash: str,
    name: str | None = None,
    typicality: Typicality | None = None,
) -> Path:
    """Write an artifact; ``members`` > 1 makes an ensemble whose probabilities are averaged.
    ``typicality`` (the training images' summary) lets predictions say ``unlike_training``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files = (
        ["weights.safetensors"]
        if len(members) == 1
        else [f"member{i}.safetensors" for i in range(len(members))]
    )
    for model, file in zip(members, files, strict=True):
        save_weights(folder / file, model.state_dict(), {"format": FORMAT})
    atomic_write_text(folder / "plan.json", json.dumps(plan, indent=2) + "\n")
    if typicality is not None:
        typicality.save(folder / TYPICALITY_FILE)
    first = members[0]
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "name": name or first.name,
        "version": dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S"),
        "architecture": first.spec(),
        "target_layer": first.target_layer,
        "members": files,
        "labels": labels.to_dict(),
        "preprocessing": preprocessing,
        "input_size": plan.get("input_size"),
        "operating_point": operating_point,
        "metrics": metrics,
        "data_hash": data_hash,
        "versions": library_versions(),
    }
    if typicality is not None:
        meta["typicality"] = {
            "file": TYPICALITY_FILE,
            "threshold": round(typicality.threshold, 4),
            "quantile": TYPICALITY_QUANTILE,
            "embedding": typicality.embedding is not None,
        }
    atomic_write_text(folder / "model.json", json.dumps(meta, indent=2) + "\n")
    return folder


@dataclass
class Artifact:
    """A loaded artifact: models in eval mode, preprocessing, labels and operating point.

    The torch models are built on first use of :attr:`members`: serving or predicting from a
    cached ONNX export of these exact weights never needs them (a ResNet's import of MONAI
    alone took 1.7 s), and whatever does need them (export, torch, maps) builds them first,
    refusing weights that do not fit then."""

    folder: Path
    meta: dict[str, Any]
    labels: LabelSpec
    pipeline: Pipeline
    _members: list[MedlensModel] | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)
    _typicality: Typicality | None = field(default=None, repr=False)

    @property
    def members(self) -> list[MedlensModel]:
        with self._lock:  # the service's threads may ask at once
            if self._members is None:
                self._members = _load_members(self.folder, self.meta)
            return self._members

    @property
    def typicality(self) -> Typicality | None:
        """The training images' summary, if training stored one (artifacts before it did not)."""
        entry = self.meta.get("typicality")
        if entry is None:
            return None
        with self._lock:
            if self._typicality is None:
                self._typicality = Typicality.load(self.folder / str(entry["file"]))
            return self._typicality

    @property
    def embeds(self) -> bool:
        """Whether ``unlike_training`` also measures the members' pooled features, so the
        engines must return them beside the logits."""
        return bool((self.meta.get("typicality") or {}).get("embedding"))

    def outputs(
        self, batch: NDArray[np.float32], *, device: str = "cpu", tta: TTA | None = None
    ) -> tuple[NDArray[np.float32], NDArray[np.float64] | None]:
        """:meth:`logits` and, if the artifact :attr:`embeds`, the members' pooled features over
        the same views (None otherwise), from one forward pass."""
        if not self.embeds:
            return self.logits(batch, device=device, tta=tta), None
        tta = self.tta if tta is None else tta
        return batched_outputs(self.members, batch, device=device, tta=tta)

    def embeddings(
        self, batch: NDArray[np.float32], *, device: str = "cpu"
    ) -> NDArray[np.float64] | None:
        """The pooled features of :meth:`outputs`."""
        return self.outputs(batch, device=device)[1]

    @property
    def spatial_dims(self) -> int:
        return int(self.meta["architecture"]["spatial_dims"])

    @property
    def in_channels(self) -> int:
        return int(self.meta["architecture"]["in_channels"])

    @property
    def temperature(self) -> float:
        return float(self.meta["operating_point"].get("temperature", 1.0))

    @property
    def threshold(self) -> float | list[float] | None:
        threshold: float | list[float] | None = self.meta["operating_point"].get("threshold")
        return threshold

    def to(self, device: str) -> Artifact:
        for m in self.members:
            m.to(device)
        return self

    def preprocess(self, image: MedicalImage, *, source: str = "") -> NDArray[np.float32]:
        """The artifact's own preprocessing; grey/colour mismatches are converted automatically."""
        return self.prepared(image, source=source).array.astype(np.float32, copy=False)

    def prepared(self, image: MedicalImage, *, source: str = "") -> MedicalImage:
        """:meth:`preprocess` keeping the geometry: the voxels a model (and its maps) sees."""
        if image.spatial_dims != self.spatial_dims:
            raise DataError(
                f"a {image.spatial_dims}D image was given to a {self.spatial_dims}D model",
                path=source,
                fix=f"give a {self.spatial_dims}D input (a single image or a series, as trained)",
            )
        if image.channels != self.in_channels:
            image = Channels(self.in_channels)(image)
        return self.pipeline(image)

    @property
    def tta(self) -> TTA:
        """The test-time views the operating point was fitted with."""
        return TTA.from_meta(self.meta["operating_point"])

    def logits(
        self, batch: NDArray[np.float32], *, device: str = "cpu", tta: TTA | None = None
    ) -> NDArray[np.float32]:
        """Mean logits of the members for a preprocessed batch (N, C, *spatial), over the
        artifact's own test-time views unless ``tta`` says otherwise."""
        tta = self.tta if tta is None else tta
        outs = [batched_logits(m, batch, device=device, tta=tta) for m in self.members]
        mean: NDArray[np.float32] = np.mean(outs, axis=0).astype(np.float32)
        return mean

    def probabilities(self, logits: NDArray[np.float32]) -> NDArray[np.float64]:
        """Calibrated probabilities (the artifact's temperature)."""
        return to_probabilities(
            logits, multilabel=self.labels.multilabel, temperature=self.temperature
        )

    def decide(self, probs: NDArray[np.float64]) -> list[str]:
        """Decisions at the stored operating point, as class names (``;``-joined for multi-label)."""
        if self.labels.task == "binary":
            threshold = float(self.threshold)  # type: ignore[arg-type]
            return [self.labels.classes[int(p[1] >= threshold)] for p in probs]
        if self.labels.multilabel:
            t = np.asarray(self.threshold)
            return [
                ";".join(c for c, hit in zip(self.labels.classes, p >= t, strict=True) if hit)
                for p in probs
            ]
        return [self.labels.classes[int(i)] for i in probs.argmax(axis=1)]


def load_artifact(folder: str | Path) -> Artifact:
    """Load ``folder`` (or the ``model/`` folder inside a run directory)."""
    folder = Path(folder)
    if (folder / "model" / "model.json").is_file() and not (folder / "model.json").is_file():
        folder = folder / "model"
    meta_path = folder / "model.json"
    if not meta_path.is_file():
        raise ArtifactError(
            "no model.json here",
            path=folder,
            fix="point to RUN_DIR/model written by `medlens train`",
        )
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as err:
        raise ArtifactError(f"model.json is unreadable ({err})", path=meta_path) from None
    if meta.get("format") != FORMAT:
        raise ArtifactError("not a medlens model.json", path=meta_path)
    if int(meta.get("format_version", 0)) > FORMAT_VERSION:
        raise ArtifactError(
            f"artifact format {meta['format_version']} is newer than this medlens reads ({FORMAT_VERSION})",
            path=meta_path,
            fix="upgrade medlens",
        )
    try:
        labels = LabelSpec.from_dict(meta["labels"])
        pipeline = Pipeline.from_spec(meta["preprocessing"])
        missing = [f for f in meta["members"] if not (folder / f).is_file()]
        architecture = str(meta["architecture"]["name"])
    except (KeyError, TypeError, ConfigError) as err:
        raise ArtifactError(
            f"incomplete or incompatible model.json ({err})", path=meta_path
        ) from None
    if missing:
        raise ArtifactError(f"weights file(s) {missing} missing", path=folder)
    if architecture not in list_models():
        raise ArtifactError(
            f"unknown architecture {architecture!r}", path=meta_path, fix="upgrade medlens"
        )
    return Artifact(folder, meta, labels, pipeline)


def _load_members(folder: Path, meta: dict[str, Any]) -> list[MedlensModel]:
    members = []
    meta_path = folder / "model.json"
    for file in meta["members"]:
        try:
            model = model_from_spec(meta["architecture"])
        except (KeyError, TypeError, ConfigError) as err:
            raise ArtifactError(
                f"incomplete or incompatible model.json ({err})", path=meta_path
            ) from None
        try:
            model.load_state_dict(load_weights(folder / file))
        except RuntimeError as err:
            first = str(err).strip().splitlines()[0]
            raise ArtifactError(
                f"weights do not fit the architecture ({first})", path=folder / file
            ) from None
        members.append(model.eval())
    return members
