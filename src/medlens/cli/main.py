"""Entry point: ``medlens info | convert | data | plan | train | evaluate | predict | export | explain | serve | models | demo``."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from medlens.cli import training
from medlens.cli.common import console, err_console, mask_id, progress_bar
from medlens.cli.data import data_app
from medlens.cli.explain import explain_command
from medlens.cli.serve import serve_command
from medlens.errors import MedlensError

if TYPE_CHECKING:
    from medlens.io import MedicalImage

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="medlens: CNN-based medical image analysis.",
)
app.add_typer(data_app, name="data")
app.command("plan")(training.plan_command)
app.command("train")(training.train_command)
app.command("evaluate")(training.evaluate_command)
app.command("predict")(training.predict_command)
app.command("export")(training.export_command)
app.command("explain")(explain_command)
app.command("serve")(serve_command)
_state = {"debug": False}


@app.callback()
def _global(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details.")] = False,
) -> None:
    _state["debug"] = debug
    logging.basicConfig(
        level=logging.INFO if verbose or debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


def describe(image: MedicalImage, show_ids: bool = False) -> dict[str, Any]:
    """JSON-ready summary of an image (identifiers masked unless ``show_ids``)."""
    low, high = image.intensity_range()
    meta = image.meta
    return {
        "source": meta.source,
        "modality": meta.modality,
        "shape": list(image.array.shape),
        "channels": image.channels,
        "spatial_dims": image.spatial_dims,
        "dtype": str(image.array.dtype),
        "spacing_mm": [round(s, 6) for s in image.spacing],
        "origin_lps_mm": [round(o, 4) for o in image.origin],
        "orientation": image.orientation(),
        "direction": [[round(v, 6) for v in row] for row in image.direction.tolist()],
        "intensity_range": [low, high],
        "window": None if meta.window_center is None else [meta.window_center, meta.window_width],
        "photometric": meta.photometric,
        "patient_id": mask_id(meta.patient_id, show_ids),
        "study_uid": mask_id(meta.study_uid, show_ids),
        "series_uid": meta.series_uid,
        "series_description": meta.series_description,
        "notes": meta.extra,
    }


@app.command()
def info(
    path: Annotated[
        str, typer.Argument(help="Image file, DICOM folder, MedMNIST .npz or file.npz#split/i.")
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    series: Annotated[
        str | None, typer.Option("--series", help="SeriesInstanceUID or SeriesNumber.")
    ] = None,
    show_ids: Annotated[
        bool, typer.Option("--show-ids", help="Show patient/study identifiers.")
    ] = False,
    resample_irregular: Annotated[bool, typer.Option("--resample-irregular")] = False,
) -> None:
    """Describe an image, a DICOM folder (its series) or a MedMNIST dataset."""
    from medlens.io import is_medmnist, read_image, read_medmnist, scan_series, split_selector

    base, selector = split_selector(path)
    if base.is_dir() and series is None:
        found = scan_series(base)
        if len(found) > 1:
            _print(
                {
                    "series": [
                        {
                            "uid": s.uid,
                            "number": s.number,
                            "modality": s.modality,
                            "description": s.description,
                            "files": len(s.files),
                        }
                        for s in found.values()
                    ]
                },
                as_json,
                "Series in folder (pick one with --series)",
            )
            return
    if base.is_file() and selector is None and is_medmnist(base):
        splits = read_medmnist(base)
        summary = {
            split: {
                "images": list(d.images.shape),
                "dtype": str(d.images.dtype),
                "label_counts": _counts(d.labels),
            }
            for split, d in splits.items()
        }
        _print({"medmnist": str(base), "splits": summary}, as_json, "MedMNIST dataset")
        return
    with progress_bar("reading") as update:
        image = read_image(
            path, series_uid=series, resample_irregular=resample_irregular, progress=update
        )
    _print(describe(image, show_ids), as_json, "Image")


def _counts(labels: Any) -> dict[str, int]:
    if labels.shape[1] == 1:
        values, counts = __import__("numpy").unique(labels[:, 0], return_counts=True)
        return {str(v): int(c) for v, c in zip(values, counts, strict=True)}
    return {f"label_{k}": int(labels[:, k].sum()) for k in range(labels.shape[1])}


def _print(payload: dict[str, Any], as_json: bool, title: str) -> None:
    if as_json:
        console.print_json(json.dumps(payload, default=str))
        return
    table = Table(title=title, show_header=False)
    for key, value in payload.items():
        table.add_row(
            key, json.dumps(value, default=str) if isinstance(value, dict | list) else str(value)
        )
    console.print(table)


@app.command()
def convert(
    src: Annotated[str, typer.Argument(help="Input image, DICOM folder or file.npz#split/i.")],
    dst: Annotated[
        Path,
        typer.Argument(help="Output: .nii/.nii.gz, .png/.jpg/.bmp/.tif, .npz, .nrrd/.mha/.mhd."),
    ],
    window: Annotated[
        str | None,
        typer.Option(
            "--window", help="Preset (lung, mediastinum, abdomen, bone, brain...) or C,W."
        ),
    ] = None,
    series: Annotated[
        str | None, typer.Option("--series", help="SeriesInstanceUID or SeriesNumber.")
    ] = None,
    resample_irregular: Annotated[
        bool, typer.Option("--resample-irregular", help="Resample uneven/tilted series.")
    ] = False,
) -> None:
    """Convert between formats, keeping geometry (DICOM series -> NIfTI, DICOM -> PNG, ...)."""
    from medlens.io import read_image, write_image
    from medlens.transforms import parse_window

    with progress_bar("reading") as update:
        image = read_image(
            src, series_uid=series, resample_irregular=resample_irregular, progress=update
        )
    out = write_image(image, dst, window=parse_window(window) if window else None)
    console.print(
        f"wrote {out} ({'x'.join(map(str, image.spatial_shape))}, {image.orientation()}, spacing {tuple(round(s, 4) for s in image.spacing)})"
    )


@app.command()
def models() -> None:
    """List the registered networks."""
    from medlens.models import MODELS, list_models

    table = Table(title="models (all 2D and 3D)")
    table.add_column("name")
    table.add_column("description")
    for name in list_models():
        doc = (MODELS.get(name).__doc__ or "").strip().splitlines()
        table.add_row(name, doc[0] if doc else "")
    console.print(table)


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", help="Output folder.")] = Path("demo-output"),
    offline: Annotated[bool, typer.Option("--offline", help="Never try to download.")] = False,
    budget: Annotated[str, typer.Option("--budget", help="Training budget (90s, 3m, ...).")] = "3m",
) -> None:
    """The main job: PneumoniaMNIST (or phantoms) -> plan -> train -> evaluate -> report."""
    from medlens.cli.demo import run_demo

    run_demo(out, offline=offline, budget_s=training.parse_duration(budget))


def main() -> None:
    """Console-script entry point: one-line errors, exit code 2, tracebacks only with --debug."""
    try:
        app()
    except MedlensError as err:
        if _state["debug"]:
            raise
        err_console.print(f"[bold red]error:[/] {err}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
