"""``medlens demo``: the main job (for now its data half: prepare, check, summarise)."""

from __future__ import annotations

from pathlib import Path

from medlens.cli.common import cache_dir, console, data_dirs, progress_bar
from medlens.cli.data import render_report
from medlens.data import load_manifest, patient_split
from medlens.data.check import check_dataset
from medlens.data.demo import prepare_demo_data


def run_demo(out: Path, *, offline: bool = False) -> None:
    """Prepare the demo dataset, split it by patient if needed, check it and print its summary."""
    out.mkdir(parents=True, exist_ok=True)
    data = prepare_demo_data(out, search=data_dirs(), cache_dir=cache_dir(), offline=offline)
    console.rule("[bold]medlens demo")
    console.print(f"dataset: {data.description}")
    manifest = load_manifest(data.path)
    if not all(row.get("split") for row in manifest):
        manifest = patient_split(manifest, val=0.15, test=0.15, seed=0)
    manifest_path = manifest.write(out / "manifest.csv")
    with progress_bar("checking") as update:
        report = check_dataset(manifest, progress=update)
    render_report(report, data.path.name)
    if report.leakage.duplicates and data.origin != "phantoms":
        console.print(
            "note: these pixel-identical pairs are in MedMNIST's official split; the demo keeps that "
            "split so results stay comparable with the published tables."
        )
    console.print(f"manifest: {manifest_path}")
    console.print("next: training and evaluation join this demo with the classification work.")
