"""``medlens data check``, ``medlens data split`` and ``medlens data manifest``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from medlens.cli.common import console, progress_bar
from medlens.errors import ConfigError

if TYPE_CHECKING:
    from medlens.data.check import DataCheckReport

data_app = typer.Typer(no_args_is_help=True, help="Build, check and split datasets.")


def render_report(report: DataCheckReport, title: str) -> None:
    """Summary table (split x label counts), shapes, warnings and problems."""
    labels = sorted({label for counts in report.counts.values() for label in counts})
    table = Table(title=f"{title}: {report.rows} rows")
    table.add_column("split")
    for label in labels:
        table.add_column(f"label {label}", justify="right")
    table.add_column("total", justify="right")
    for split, counts in sorted(report.counts.items()):
        table.add_row(
            split, *[str(counts.get(label, 0)) for label in labels], str(sum(counts.values()))
        )
    console.print(table)
    if report.shapes:
        console.print(
            "shapes: " + ", ".join(f"{s} ({n})" for s, n in sorted(report.shapes.items()))
        )
    if report.shifts:
        shifts = Table(title="Split shift: AUC of telling two splits' images apart (0.5: alike)")
        for column in ("split", "against", "class", "images", "AUC (95 % CI)"):
            shifts.add_column(column)
        for shift in report.shifts:
            shifts.add_row(
                shift.split,
                shift.reference,
                shift.label,
                f"{shift.n} / {shift.n_reference}",
                f"{shift.auc:.2f} ({shift.ci[0]:.2f}-{shift.ci[1]:.2f})",
                style="yellow" if shift.flagged else None,
            )
        console.print(shifts)
    for warning in report.warnings:
        console.print(f"[yellow]warning:[/] {warning}")
    if report.ok:
        console.print(
            "[green]no problems found[/] (files readable, labels usable, no patient or pixel leakage)"
        )
        return
    problems = Table(title="Problems", show_lines=False)
    problems.add_column("kind", style="red")
    problems.add_column("detail")
    for kind, detail in report.problems():
        problems.add_row(kind, detail)
    console.print(problems)


@data_app.command("check")
def check(
    path: Annotated[
        Path, typer.Argument(help="Manifest CSV, folder of class sub-folders, or MedMNIST .npz.")
    ],
    patient_regex: Annotated[
        str | None, typer.Option("--patient-regex", help="Regex for the patient id in file names.")
    ] = None,
    no_decode: Annotated[
        bool, typer.Option("--no-decode", help="Skip decoding (no unreadable/duplicate check).")
    ] = False,
    against: Annotated[
        Path | None,
        typer.Option(
            "--against",
            help="The data a model was trained on: compare PATH (an external test set) with its "
            "training images, and find images the two share.",
        ),
    ] = None,
) -> None:
    """Validate a dataset; exit code 1 when a problem is found."""
    from medlens.data import load_manifest
    from medlens.data.check import check_dataset

    manifest = load_manifest(path, patient_regex=patient_regex)
    reference = None if against is None else load_manifest(against, patient_regex=patient_regex)
    if reference is not None and no_decode:
        raise ConfigError("--against compares images: leave out --no-decode")
    with progress_bar("decoding") as update:
        report = check_dataset(manifest, decode=not no_decode, progress=update, against=reference)
    render_report(report, str(path))
    if not report.ok:
        raise typer.Exit(1)


@data_app.command("split")
def split(
    path: Annotated[
        Path, typer.Argument(help="Manifest CSV, folder of class sub-folders, or MedMNIST .npz.")
    ],
    out: Annotated[Path, typer.Option("--out", help="Manifest CSV to write.")],
    val: Annotated[float, typer.Option(help="Validation fraction of patients.")] = 0.15,
    test: Annotated[float, typer.Option(help="Test fraction of patients.")] = 0.15,
    folds: Annotated[int, typer.Option(help="Also assign k patient-level folds (0 = none).")] = 0,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    resplit: Annotated[
        bool, typer.Option("--resplit", help="Replace an existing split column.")
    ] = False,
    patient_regex: Annotated[str | None, typer.Option("--patient-regex")] = None,
) -> None:
    """Write a manifest with patient-level stratified train/val/test (and optional k-fold) splits."""
    from medlens.data import kfold, load_manifest, patient_split
    from medlens.data.check import check_dataset

    manifest = load_manifest(path, patient_regex=patient_regex)
    has_split = all(row.get("split") for row in manifest)
    if resplit or not has_split:
        manifest = patient_split(manifest, val=val, test=test, seed=seed)
    else:
        console.print("keeping the existing split column (pass --resplit to replace it)")
    if folds:
        manifest = kfold(manifest, folds, seed=seed)
    manifest.write(out)
    report = check_dataset(manifest, decode=False)
    console.print(f"wrote {out}")
    for name in ("train", "val", "test"):
        patients = {r["patient_id"] for r in manifest if r.get("split") == name}
        rows = sum(1 for r in manifest if r.get("split") == name)
        console.print(f"  {name}: {rows} rows, {len(patients)} patients")
    if not report.leakage.ok:
        raise typer.Exit(1)


@data_app.command("manifest")
def manifest_command(
    source: Annotated[
        Path,
        typer.Argument(help="A folder of class sub-folders, or a DICOM tree with --labels."),
    ],
    out: Annotated[Path, typer.Option("--out", help="Manifest CSV to write.")],
    labels: Annotated[
        Path | None,
        typer.Option(help="DICOM tree: a CSV of labels, joined on --key."),
    ] = None,
    key: Annotated[
        str, typer.Option(help="--labels column: PatientID, StudyInstanceUID or SeriesInstanceUID.")
    ] = "PatientID",
    patient_regex: Annotated[
        str | None, typer.Option("--patient-regex", help="Regex for the patient id in file names.")
    ] = None,
) -> None:
    """Write the manifest CSV of a dataset (one row per image or DICOM series, with its label and
    patient) to inspect, edit, split or train on."""
    from medlens.data import load_manifest, manifest_from_dicom_tree

    if labels is not None:
        if patient_regex is not None:
            raise ConfigError("--patient-regex is for class folders; a DICOM tree has PatientID")
        manifest = manifest_from_dicom_tree(source, labels, key=key)
    else:
        manifest = load_manifest(source, patient_regex=patient_regex)
    manifest.write(out)
    patients = len({row["patient_id"] for row in manifest})
    console.print(f"wrote {out}: {len(manifest)} rows, {patients} patients")
