"""`medlens explain` on files: overlays, raw maps, explanations.json and an HTML page per batch."""

from __future__ import annotations

import difflib
import html
import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from medlens._fs import atomic_write_bytes, atomic_write_text
from medlens.errors import ConfigError, MedlensError
from medlens.explain.explainer import UNITS, Explanation, explain_batch
from medlens.explain.overlay import render
from medlens.inference.artifact import Artifact
from medlens.inference.predictor import InputItem
from medlens.io import read_image, write_image
from medlens.io.image import MedicalImage


def class_index(artifact: Artifact, name: str) -> int:
    """The index of class ``name``, with a "did you mean" error."""
    classes = artifact.labels.classes
    if name in classes:
        return classes.index(name)
    close = difflib.get_close_matches(name, classes, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ConfigError(f"the model has no class {name!r}{hint} (classes: {', '.join(classes)})")


def explained_classes(
    artifact: Artifact, probs: NDArray[np.float64], decisions: Sequence[str], chosen: str | None
) -> list[int]:
    """The asked class, else the decision (binary/multi-class) or the top label (multi-label)."""
    if chosen is not None:
        return [class_index(artifact, chosen)] * len(probs)
    if artifact.labels.multilabel:
        return [int(i) for i in probs.argmax(axis=1)]
    return [artifact.labels.classes.index(d) for d in decisions]


def _stem(k: int, item: InputItem) -> str:
    base = item.series_uid or item.path.name
    base = re.sub(r"(\.nii)?\.gz$|\.[A-Za-z0-9]+$", "", base)
    return f"{k:04d}_{re.sub(r'[^A-Za-z0-9_.-]+', '_', base)[:60]}"


def _write_map(
    out: Path, stem: str, grid: MedicalImage, relevance: NDArray[np.float32]
) -> list[str]:
    """NPY + 8-bit PNG (min..max) for 2D; NIfTI on the model's grid (true geometry) for 3D."""
    image = grid.with_array(relevance[None].astype(np.float32))
    if grid.spatial_dims == 3:
        write_image(image, out / f"{stem}_map.nii.gz")
        return [f"{stem}_map.nii.gz"]
    with (out / f"{stem}_map.npy").open("wb") as handle:
        np.save(handle, relevance.astype(np.float32))
    low, high = float(relevance.min()), float(relevance.max())
    write_image(image, out / f"{stem}_map.png", window=((low + high) / 2, max(high - low, 1e-12)))
    return [f"{stem}_map.npy", f"{stem}_map.png"]


def _title(item: InputItem, decision: str, e: Explanation) -> str:
    flag = "  [!] " + "; ".join(e.warnings) if e.warnings else ""
    return f"{item.path.name}: {decision} | {e.method} for {e.class_name!r} (p = {e.probability:.3f}){flag}"


def explain_inputs(
    artifact: Artifact,
    items: Sequence[InputItem],
    out: str | Path,
    *,
    method: str = "gradcam",
    class_name: str | None = None,
    layer: str | None = None,
    window: tuple[float, float] | None = None,
    randomisation: bool = True,
    batch_size: int = 16,
    progress: Callable[[int, int], None] | None = None,
) -> list[dict[str, Any]]:
    """Explain every item into ``out``; unreadable items get an ``error`` entry, not a crash."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if class_name is not None:
        class_index(artifact, class_name)  # fail before any work
    numbered: list[tuple[int, dict[str, Any]]] = []
    for start in range(0, len(items), batch_size):
        loaded: list[tuple[int, InputItem, MedicalImage, MedicalImage]] = []
        for k, item in enumerate(items[start : start + batch_size], start=start):
            try:
                image = read_image(item.path, series_uid=item.series_uid)
                loaded.append((k, item, image, artifact.prepared(image, source=item.name)))
            except MedlensError as err:
                numbered.append((k, {"input": item.name, "error": str(err)}))
        if loaded:
            numbered += _explain_loaded(
                artifact, loaded, out, method, class_name, layer, window, randomisation
            )
        if progress is not None:
            progress(min(start + batch_size, len(items)), len(items))
    entries = [entry for _, entry in sorted(numbered, key=lambda pair: pair[0])]
    document = {
        "model": {"name": artifact.meta["name"], "version": artifact.meta["version"]},
        "method": method,
        "units": UNITS[method],
        "explanations": entries,
    }
    atomic_write_text(out / "explanations.json", json.dumps(document, indent=2))
    atomic_write_text(out / "index.html", _page(document))
    return entries


def _explain_loaded(
    artifact: Artifact,
    loaded: Sequence[tuple[int, InputItem, MedicalImage, MedicalImage]],
    out: Path,
    method: str,
    class_name: str | None,
    layer: str | None,
    window: tuple[float, float] | None,
    randomisation: bool,
) -> list[tuple[int, dict[str, Any]]]:
    batch = np.stack([grid.array.astype(np.float32) for *_, grid in loaded])
    probs = artifact.probabilities(artifact.logits(batch))
    decisions = artifact.decide(probs)
    classes = explained_classes(artifact, probs, decisions, class_name)
    explanations = explain_batch(
        artifact.members,
        batch,
        classes,
        artifact.labels.classes,
        probs,
        method=method,
        multilabel=artifact.labels.multilabel,
        layer=layer,
        randomisation=randomisation,
    )
    entries = []
    for (k, item, image, grid), decision, p, e in zip(
        loaded, decisions, probs, explanations, strict=True
    ):
        stem = _stem(k, item)
        png = render(
            image,
            grid,
            e.relevance,
            title=_title(item, decision, e),
            units=UNITS[method],
            window=window,
        )
        atomic_write_bytes(out / f"{stem}_overlay.png", png)
        entries.append(
            (
                k,
                {
                    "input": item.name,
                    "prediction": decision,
                    "probabilities": {
                        c: round(float(v), 6)
                        for c, v in zip(artifact.labels.classes, p, strict=True)
                    },
                    **e.to_dict(),
                    "overlay": f"{stem}_overlay.png",
                    "maps": _write_map(out, stem, grid, e.relevance),
                },
            )
        )
    return entries


def _page(document: dict[str, Any]) -> str:
    cards = []
    for entry in document["explanations"]:
        name = html.escape(entry["input"])
        if "error" in entry:
            cards.append(
                f'<div class="card bad"><b>{name}</b><p>{html.escape(entry["error"])}</p></div>'
            )
            continue
        f = entry["faithfulness"]
        warn = "".join(f'<p class="warn">{html.escape(w)}</p>' for w in entry["warnings"])
        cards.append(
            f'<div class="card"><img src="{html.escape(entry["overlay"])}" alt="{name}">'
            f"<p><b>{name}</b>: {html.escape(entry['prediction'])}; {html.escape(entry['class'])} "
            f"p = {entry['probability']:.3f}</p><p>deletion {f['deletion_auc']:.3f} "
            f"(random {f['random_deletion_auc']:.3f}), insertion {f['insertion_auc']:.3f} "
            f"(random {f['random_insertion_auc']:.3f}); randomisation similarity "
            f"{entry['randomisation_similarity']}</p>{warn}</div>"
        )
    model = document["model"]
    return f"""<!doctype html><html><head><meta charset="utf-8">
<title>{html.escape(model["name"])} explanations</title><style>
body{{font-family:system-ui,sans-serif;margin:1.5em;color:#222}}.grid{{display:flex;flex-wrap:wrap;gap:12px}}
.card{{border:1px solid #ccc;border-radius:6px;padding:8px;width:420px;font-size:0.85em}}
.card img{{width:100%}}.warn,.bad p{{color:#b00020;font-weight:600}}</style></head><body>
<h1>{html.escape(model["name"])} v{html.escape(str(model["version"]))}: {html.escape(document["method"])}</h1>
<p>Map units: {html.escape(document["units"])}. Deletion: the class probability as the most relevant
voxels are blurred away (lower area = more faithful); insertion: as they are revealed (higher = more
faithful); both against random smooth maps. Randomisation similarity: rank correlation with the maps of
the same model with random weights (below 0.5 passes).</p>
<div class="grid">{"".join(cards)}</div></body></html>
"""


def permutation_outputs(
    artifact: Artifact,
    images: NDArray[np.float32],
    targets: NDArray[Any],
    out: str | Path,
    *,
    grid: int,
    repeats: int,
    seed: int = 0,
) -> dict[str, Any]:
    """Region permutation importance of ``artifact`` on preprocessed ``images``: importance.json,
    importance.csv and importance.png (bar chart of the drops, and the drops on the image grid)."""
    from medlens.explain.permutation import importance_map, region_importance

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    def predict(batch: NDArray[Any]) -> NDArray[np.float64]:
        return artifact.probabilities(artifact.logits(batch))

    baseline, found = region_importance(
        predict, images, targets, grid=grid, repeats=repeats, seed=seed
    )
    ranked = sorted(found, key=lambda f: -f.drop)
    document = {
        "model": {"name": artifact.meta["name"], "version": artifact.meta["version"]},
        "baseline_auc": round(baseline, 5),
        "grid": grid,
        "repeats": repeats,
        "n_images": len(images),
        "regions": [f.to_dict() for f in ranked],
    }
    atomic_write_text(out / "importance.json", json.dumps(document, indent=2))
    lines = ["region,auc_drop,std"] + [f"{f.name},{f.drop:.5f},{f.spread:.5f}" for f in ranked]
    atomic_write_text(out / "importance.csv", "\n".join(lines) + "\n")
    painted = importance_map(images.shape[2:], grid, found)
    atomic_write_bytes(out / "importance.png", _importance_figure(ranked, painted, images))
    return document


def _importance_figure(
    ranked: Sequence[Any], painted: NDArray[np.float32], images: NDArray[np.float32]
) -> bytes:
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    shown = ranked[:20]
    fig = Figure(figsize=(11, 4.5))
    bars, picture = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    bars.barh(
        [f.name for f in shown][::-1],
        [f.drop for f in shown][::-1],
        xerr=[f.spread for f in shown][::-1],
        color="#c0392b",
    )
    bars.set(xlabel="AUC drop when the region is permuted (mean ± SD)", title="Region importance")
    mean = images[:, 0].mean(axis=0)
    middle = mean.shape[0] // 2 if mean.ndim == 3 else None
    background = mean[middle] if middle is not None else mean
    drops = painted[middle] if middle is not None else painted
    picture.imshow(background, cmap="gray")
    overlay = picture.imshow(drops, cmap="inferno", alpha=0.55)
    picture.set_title("AUC drop by region" + (" (middle slice)" if middle is not None else ""))
    picture.set_xticks([])
    picture.set_yticks([])
    fig.colorbar(overlay, ax=picture, label="AUC drop")
    buffer = io.BytesIO()
    FigureCanvasAgg(fig).print_png(buffer)
    return buffer.getvalue()
