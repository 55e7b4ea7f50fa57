"""One served model: its artifact, inference engine, dynamic batcher and explainer."""

from __future__ import annotations

import base64
import logging
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from medlens.explain import UNITS, explain_batch
from medlens.explain.outputs import explained_classes
from medlens.explain.overlay import display_range, on_display, render
from medlens.inference import Artifact, load_artifact
from medlens.inference.batching import DynamicBatcher
from medlens.inference.engine import Engine, input_shape
from medlens.io.image import MedicalImage
from medlens.models.forward import to_probabilities
from medlens.serving.settings import ServeSettings

#: largest side of the image and heatmap sent to the viewer (source resolution below that):
#: a 512^2 slice is 1 MiB of float32, a 128^3 volume 8 MiB
DISPLAY_SIDE = {2: 512, 3: 128}

log = logging.getLogger(__name__)


def _array_payload(values: NDArray[Any]) -> dict[str, Any]:
    """A float32 array as base64 little-endian bytes with its shape (the viewer's format)."""
    data = np.ascontiguousarray(values, dtype="<f4")
    return {
        "shape": list(data.shape),
        "dtype": "float32",
        "data": base64.b64encode(data.tobytes()).decode(),
    }


Output = tuple[NDArray[np.float32], NDArray[np.float64] | None]  # one image's logits, embedding


class ModelService:
    """Predictions and explanations of one artifact, batched across concurrent callers."""

    def __init__(self, folder: Path, settings: ServeSettings, name: str | None = None):
        self.artifact: Artifact = load_artifact(folder)
        _ = self.artifact.typicality  # a broken summary file fails at start-up, not per request
        self.name = name or str(self.artifact.meta["name"])
        self.version = str(self.artifact.meta["version"])
        self.engine = Engine(
            self.artifact,
            backend=settings.backend,
            cache_dir=settings.onnx_cache,
            precision=settings.precision,
            provider=settings.provider,
            threads=settings.threads,
        )
        self.engine.warm_up()  # before /ready says yes
        self.batcher = DynamicBatcher(
            self._forward,
            max_batch=settings.max_batch,
            window_s=settings.batch_window_ms / 1000,
            max_queue=settings.max_queue,
            name=f"batcher-{self.name}",
        )
        self._explain_lock = threading.Lock()  # CAM hooks on shared modules: one at a time
        # not a daemon: torch must not be mid-call when the interpreter exits
        self.warming = threading.Thread(
            target=self._warm_explanations,
            args=(settings.explain_method,),
            name=f"warm-{self.name}",
        )
        if settings.warm_explanations:
            self.warming.start()

    def _warm_explanations(self, method: str) -> None:
        """One explanation of a random input, in the background once the service is up: the torch
        members, their first backward pass and the overlay's plotting cost the first explain
        request of a fresh server ~0.8 s (the viewer's first radiograph: 1.31 s, then 0.47 s)."""
        try:
            shape = input_shape(self.artifact)
            noise = np.random.default_rng(0).normal(size=shape).astype(np.float32)
            image = MedicalImage(noise)
            self.explain(image, self.artifact.prepared(image), method, None)
        except Exception:  # a warm-up must never stop the service; the request will say why
            log.warning("warming up %s's explanations failed", self.name, exc_info=True)

    def describe(self) -> dict[str, Any]:
        meta = self.artifact.meta
        return {
            "name": self.name,
            "version": self.version,
            "input": {
                "spatial_dims": self.artifact.spatial_dims,
                "channels": self.artifact.in_channels,
                "size": meta.get("input_size"),
            },
            "task": self.artifact.labels.task,
            "classes": self.artifact.labels.classes,
            "threshold": self.artifact.threshold,
            # distances are in units of the threshold (artifacts' first format included)
            "typicality_threshold": None if self.artifact.typicality is None else 1.0,
            "metrics": meta.get("metrics", {}),
            "backend": self.engine.backend_used,
            "provider": self.engine.provider,
        }

    def _forward(self, batch: NDArray[np.float32]) -> list[Output]:
        logits, embeddings = self.engine.outputs(batch)
        rows = [None] * len(logits) if embeddings is None else list(embeddings)
        return list(zip(logits, rows, strict=True))

    def pixel_distance(self, grid: MedicalImage) -> float | None:
        """The pixel part of a preprocessed image's distance from the training images (None
        for an artifact trained before medlens stored their summary)."""
        typicality = self.artifact.typicality
        return float(typicality.pixel_distances(grid.array[None])[0]) if typicality else None

    def typical(
        self, pixels: float | None, embedding: NDArray[np.float64] | None
    ) -> dict[str, Any]:
        """``distance_from_training`` and ``unlike_training`` from :meth:`pixel_distance` and
        the image's embedding (:mod:`medlens.data.typicality`)."""
        typicality = self.artifact.typicality
        if typicality is None or pixels is None:
            return {}
        rows = None if embedding is None else embedding[None]
        return typicality.unlike(typicality.combine(np.asarray([pixels]), rows))[0]

    def submit(self, grid: MedicalImage) -> Future[Output]:
        """Queue one preprocessed image for its logits and embedding (None when the artifact
        stores no embedding summary); raises QueueFullError when the queue is at its limit."""
        return self.batcher.submit(grid.array.astype(np.float32, copy=False))

    def result(self, logits: NDArray[np.float32]) -> dict[str, Any]:
        """Probabilities (raw and temperature-calibrated) and the decision at the stored point."""
        multilabel = self.artifact.labels.multilabel
        raw = to_probabilities(logits[None], multilabel=multilabel)[0]
        calibrated = self.artifact.probabilities(logits[None])
        decision = self.artifact.decide(calibrated)[0]
        classes = self.artifact.labels.classes
        out: dict[str, Any] = {
            "model": self.name,
            "version": self.version,
            "backend": self.engine.backend_used,
            "prediction": decision,
            "probabilities": {c: round(float(p), 6) for c, p in zip(classes, raw, strict=True)},
            "calibrated_probabilities": {
                c: round(float(p), 6) for c, p in zip(classes, calibrated[0], strict=True)
            },
            "threshold": self.artifact.threshold,
            "temperature": self.artifact.temperature,
        }
        # the calibrated probability of what was decided (the top label for multi-label)
        top = decision.split(";")[0] if decision else classes[int(np.argmax(calibrated[0]))]
        out["probability"] = out["calibrated_probabilities"][top]
        if self.artifact.labels.task == "binary":
            out["decision_rule"] = f"{classes[1]} if p({classes[1]}) >= threshold"
        return out

    def explain(
        self, image: MedicalImage, grid: MedicalImage, method: str, class_name: str | None
    ) -> dict[str, Any]:
        """A map of the decided (or asked) class, its overlay, the image and the map on a display
        grid (the source resolution, capped by DISPLAY_SIDE) and the map's faithfulness figures."""
        started = time.perf_counter()
        batch = grid.array.astype(np.float32)[None]
        with self._explain_lock:
            probs = self.artifact.probabilities(self.artifact.logits(batch))
            decisions = self.artifact.decide(probs)
            classes = explained_classes(self.artifact, probs, decisions, class_name)
            (found,) = explain_batch(
                self.artifact.members,
                batch,
                classes,
                self.artifact.labels.classes,
                probs,
                method=method,
                multilabel=self.artifact.labels.multilabel,
            )
        title = f"{decisions[0]} | {method} for {found.class_name!r} (p = {found.probability:.3f})"
        side = DISPLAY_SIDE[grid.spatial_dims]
        shown = on_display(image, grid, found.relevance, side)
        display, values, heat = shown
        overlay = render(
            image,
            grid,
            found.relevance,
            title=title,
            units=UNITS[method],
            display=shown if grid.spatial_dims == 2 else None,  # 3D: a finer overlay (256)
        )
        low, high = display_range(image, values)
        return {
            "explanation": found.to_dict(),
            "overlay_png": base64.b64encode(overlay).decode(),
            "heatmap": _array_payload(heat),
            "image": {
                **_array_payload(values[0]),
                "window": [low, high],
                "spacing": list(display.spacing),
            },
            "explain_ms": round(1000 * (time.perf_counter() - started), 1),
        }

    def close(self) -> None:
        if self.warming.is_alive():
            self.warming.join()
        self.batcher.close()
