"""Predict on files, folders and DICOM series with an artifact; results as rows for CSV/JSON."""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import json
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from medlens._fs import atomic_write_text
from medlens._parallel import default_workers, timed_map
from medlens.data.builders import IMAGE_SUFFIXES
from medlens.errors import DataError, MedlensError
from medlens.inference.artifact import Artifact
from medlens.inference.engine import Engine
from medlens.io import read_image
from medlens.io.dicom_series import is_volume, looks_like_dicom, scan_series, series_folder


@dataclass(frozen=True)
class InputItem:
    """One thing to predict on: a file, or one series of a DICOM folder."""

    path: Path
    series_uid: str | None = None

    @property
    def name(self) -> str:
        return f"{self.path}#series={self.series_uid}" if self.series_uid else str(self.path)


def expand_inputs(inputs: Sequence[str | Path]) -> list[InputItem]:
    """Files stay files; a folder yields each DICOM series (one item) and each other image file."""
    items: list[InputItem] = []
    for raw in inputs:
        path = Path(raw)
        if not path.exists():
            raise DataError("input not found", path=path, fix="check the path")
        if path.is_file():
            items.append(InputItem(path))
            continue
        for info in scan_series(path).values():
            if is_volume(info):  # read from the series' own folder, not the whole tree again
                items.append(InputItem(series_folder(info), info.uid))
            else:
                items += [InputItem(f) for f in info.files]
        items += [
            InputItem(p)
            for p in sorted(path.rglob("*"))
            if p.is_file()
            and p.suffix.lower() in IMAGE_SUFFIXES - {".dcm"}
            and not p.name.startswith(".")
            and not looks_like_dicom(p)
        ]
    if not items:
        raise DataError(f"no images found in {list(map(str, inputs))}")
    return items


def _load(artifact: Artifact, item: InputItem) -> NDArray[np.float32] | MedlensError:
    try:
        image = read_image(item.path, series_uid=item.series_uid)
        return artifact.preprocess(image, source=item.name)
    except MedlensError as err:
        return err


def predict_items(
    artifact: Artifact,
    items: Sequence[InputItem],
    *,
    batch_size: int = 32,
    device: str = "cpu",
    engine: Engine | None = None,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Iterator[dict[str, Any]]:
    """One result row per item, in order; an unreadable item gets an ``error`` instead of
    stopping the run. Rows say how far each image is from the training images
    (``distance_from_training``, ``unlike_training``: :mod:`medlens.data.typicality`). Batches
    run through ``engine`` (the service's ONNX Runtime engine) or the artifact's torch models.

    ``workers`` (default: one per core) read ahead while a batch runs: forked processes where
    reading and preprocessing an item is slow (a compressed radiograph: ~0.15 s, mostly a
    decoder holding the GIL), threads for small files; ``workers=1`` reads here.
    """
    typicality = artifact.typicality  # artifacts trained before it have none
    ahead = math.ceil(batch_size / (workers or default_workers())) + 1
    # small files in threads: their reads and zlib release the GIL, and no fork is paid
    loading = timed_map(
        _load, items, state=artifact, workers=workers, ahead=ahead, threads_when_fast=True
    )
    with contextlib.closing(loading) as loaded_items:  # a consumer that stops ends the workers
        for start in range(0, len(items), batch_size):
            chunk = items[start : start + batch_size]
            loaded = list(itertools.islice(loaded_items, len(chunk)))
            rows: list[dict[str, Any]] = [
                {"input": item.name, "error": str(x)} if isinstance(x, MedlensError) else {}
                for item, x in zip(chunk, loaded, strict=True)
            ]
            arrays = {j: x for j, x in enumerate(loaded) if not isinstance(x, MedlensError)}
            good = list(arrays)
            if good:
                batch = np.stack([arrays[j] for j in good])
                if engine is not None:
                    logits, embeddings = engine.outputs(batch)
                else:
                    logits, embeddings = artifact.outputs(batch, device=device)
                probs = artifact.probabilities(logits)
                typical = typicality.describe(batch, embeddings) if typicality else [{}] * len(good)
                for j, p, decision, seen in zip(
                    good, probs, artifact.decide(probs), typical, strict=True
                ):
                    rows[j] = (
                        {"input": chunk[j].name, "prediction": decision}
                        | {
                            f"p_{c}": round(float(v), 6)
                            for c, v in zip(artifact.labels.classes, p, strict=True)
                        }
                        | seen
                    )
            if progress is not None:
                progress(start + len(chunk), len(items))
            yield from rows


def write_predictions(rows: list[dict[str, Any]], out: str | Path, meta: dict[str, Any]) -> Path:
    """CSV or JSON by suffix; JSON also records the model and its operating point."""
    out = Path(out)
    if out.suffix.lower() == ".json":
        atomic_write_text(out, json.dumps({"model": meta, "predictions": rows}, indent=2) + "\n")
        return out
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out, buf.getvalue())
    return out
