"""``medlens explain``: maps with faithfulness for images, or region permutation importance."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import numpy as np
import typer
from rich.table import Table

from medlens.cli.common import cache_dir, console, progress_bar
from medlens.cli.sources import resolve_data
from medlens.errors import ConfigError

if TYPE_CHECKING:
    from medlens.inference.artifact import Artifact


def explain_command(
    model_dir: Annotated[Path, typer.Argument(help="A model folder (RUN_DIR/model).")],
    inputs: Annotated[
        list[str],
        typer.Argument(
            help="Image files, folders or DICOM series; with --permutation one dataset "
            "(.npz, class folder, manifest CSV, medmnist:NAME)."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Output folder.")] = Path("explanations"),
    method: Annotated[
        str, typer.Option(help="gradcam, gradcam++, occlusion or ig (integrated gradients).")
    ] = "gradcam",
    class_name: Annotated[
        str | None, typer.Option("--class", help="Class to explain (default: the decision).")
    ] = None,
    layer: Annotated[
        str | None, typer.Option(help="Layer for Grad-CAM (default: the model's target layer).")
    ] = None,
    window: Annotated[
        str | None, typer.Option(help="Display window: a preset (lung, bone...) or C,W.")
    ] = None,
    randomisation: Annotated[
        bool,
        typer.Option(
            "--randomisation/--no-randomisation",
            help="Compare each map with the same model's maps under random weights.",
        ),
    ] = True,
    permutation: Annotated[
        bool, typer.Option("--permutation", help="Region permutation importance on a dataset.")
    ] = False,
    split: Annotated[str, typer.Option(help="Split used by --permutation.")] = "test",
    grid: Annotated[int, typer.Option(help="Regions per axis for --permutation.")] = 4,
    repeats: Annotated[int, typer.Option(help="Permutations per region.")] = 5,
) -> None:
    """Explain predictions: overlays, raw maps and explanations.json with faithfulness figures."""
    from medlens.explain import METHODS
    from medlens.inference import load_artifact

    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; use one of {', '.join(METHODS)}")
    artifact = load_artifact(model_dir)
    if permutation:
        _permutation(artifact, inputs, out, split, grid, repeats)
        return
    from medlens.explain.outputs import explain_inputs
    from medlens.inference.predictor import expand_inputs
    from medlens.transforms import parse_window

    items = expand_inputs(inputs)
    with progress_bar(f"explaining ({method})") as update:
        entries = explain_inputs(
            artifact,
            items,
            out,
            method=method,
            class_name=class_name,
            layer=layer,
            window=parse_window(window) if window else None,
            randomisation=randomisation,
            progress=update,
        )
    table = Table(title=f"{method}: {len(entries)} input(s)")
    for column in ("input", "prediction", "class (p)", "deletion / random", "warnings"):
        table.add_column(column, overflow="fold")
    for e in entries[:20]:
        if "error" in e:
            table.add_row(e["input"], f"[red]{e['error']}", "", "", "")
            continue
        f = e["faithfulness"]
        table.add_row(
            e["input"],
            e["prediction"],
            f"{e['class']} ({e['probability']:.3f})",
            f"{f['deletion_auc']:.3f} / {f['random_deletion_auc']:.3f}",
            "[red]" + "; ".join(e["warnings"]) if e["warnings"] else "",
        )
    console.print(table)
    console.print(f"wrote {out / 'explanations.json'} and {out / 'index.html'}")
    if all("error" in e for e in entries):
        raise typer.Exit(1)


def _permutation(
    artifact: Artifact, inputs: list[str], out: Path, split: str, grid: int, repeats: int
) -> None:
    from medlens.explain.outputs import permutation_outputs
    from medlens.training.data import prepare_data

    if len(inputs) != 1:
        raise ConfigError("--permutation takes one dataset (a manifest, folder, .npz or medmnist:)")
    manifest = resolve_data(inputs[0])
    data = prepare_data(
        manifest,
        artifact.labels,
        artifact.pipeline,
        cache_dir() / "arrays",
        in_channels=artifact.in_channels,
        check_leakage=False,
    )
    idx = np.sort(data.indices(split))
    if len(idx) == 0:
        raise ConfigError(f"the data has no rows in split {split!r}", fix="choose --split")
    with console.status(f"permuting {grid}^{artifact.spatial_dims} regions x {repeats}"):
        document = permutation_outputs(
            artifact, data.images(idx), data.targets[idx], out, grid=grid, repeats=repeats
        )
    table = Table(title=f"AUC {document['baseline_auc']:.3f} on {split} (n={len(idx)})")
    for column in ("region", "AUC drop", "SD"):
        table.add_column(column)
    for region in document["regions"][:10]:
        table.add_row(region["name"], f"{region['auc_drop']:.4f}", f"{region['std']:.4f}")
    console.print(table)
    console.print(f"wrote {out / 'importance.json'}, importance.csv and importance.png")
