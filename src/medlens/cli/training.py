"""``medlens plan | train | evaluate | predict | export``: thin shells over the library."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from medlens._fs import atomic_write_text
from medlens.cli.common import cache_dir, console, err_console, progress_bar
from medlens.cli.sources import resolve_data
from medlens.errors import ConfigError

if TYPE_CHECKING:
    from medlens.inference.artifact import Artifact
    from medlens.planning import Plan
    from medlens.training.data import PreparedData

BudgetOpt = Annotated[str, typer.Option("--budget", help="Training time budget: 90s, 10m, 1h.")]
SetOpt = Annotated[
    list[str] | None, typer.Option("--set", help="Override a plan field: --set lr=1e-3 (repeat).")
]
ConfigOpt = Annotated[Path | None, typer.Option("--config", help="YAML file of plan overrides.")]
ModelOpt = Annotated[
    str | None, typer.Option("--model", help="Network name (see `medlens models`).")
]
TaskOpt = Annotated[
    str | None,
    typer.Option("--task", help="binary, multiclass, multilabel or ordinal (default: inferred)."),
]
PatientOpt = Annotated[
    str | None,
    typer.Option(
        "--patient-regex",
        help="Class folders: a regex whose first group in a file name is the patient id "
        "(default: the DICOM PatientID, else the name up to its first '_', where these read "
        "as patients).",
    ),
]

#: rows of `medlens predict`'s table (the CSV/JSON has them all)
TABLE_ROWS = 20


def parse_duration(text: str) -> float:
    """``90s``, ``10m``, ``1.5h`` or plain seconds."""
    units = {"s": 1, "m": 60, "h": 3600}
    text = text.strip().lower()
    try:
        value = float(text[:-1]) * units[text[-1]] if text and text[-1] in units else float(text)
    except ValueError:
        raise ConfigError(f"budget {text!r}: use a duration such as 90s, 10m or 1h") from None
    if value <= 0:
        raise ConfigError(f"budget {text!r} must be positive")
    return value


def collect_overrides(sets: list[str] | None, config: Path | None) -> dict[str, Any]:
    from medlens.planning import parse_overrides, read_config

    overrides = read_config(config) if config else {}
    overrides.update(parse_overrides(sets or []))
    return overrides


def show_plan(plan: Plan) -> None:
    table = Table(title="plan", show_header=False)
    fp = plan.fingerprint
    rows = [
        (
            "data",
            f"{fp.get('counts')} {fp.get('spatial_dims')}D, "
            + (f"patients {fp['patients']}, " if fp.get("patients") else "")
            + f"median shape {fp.get('median_shape')}, "
            f"channels {fp.get('channels')}, classes {fp.get('class_counts')}",
        ),
        (
            "machine",
            f"{plan.hardware.get('cpu_cores')} cores, GPU {plan.hardware.get('gpu') or 'none'}",
        ),
        ("model", f"{plan.model} {plan.model_options}"),
        ("input", f"{plan.input_size}, batch {plan.batch_size}"),
        (
            "schedule",
            f"{plan.epochs} epochs, {plan.optimizer} lr {plan.lr}, {plan.schedule}, "
            f"warm-up {plan.warmup_epochs} epochs, patience {plan.patience} "
            f"(from epoch {plan.min_epochs}), weight average "
            + (f"EMA {plan.ema_decay}" if plan.ema_decay else "off"),
        ),
        (
            "loss",
            f"{plan.loss}, class weights {plan.class_weights}, smoothing {plan.label_smoothing}",
        ),
        ("ensemble", _ensemble_text(plan)),
        ("estimate", f"{plan.estimates.get('train_s')} s for a {plan.budget_s:.0f} s budget"),
    ]
    for key, value in rows:
        table.add_row(key, str(value))
    console.print(table)
    for note in plan.notes:
        console.print(f"[yellow]note:[/] {note}")


def _ensemble_text(plan: Plan) -> str:
    if plan.folds:
        return f"{plan.folds} fold models (cross-validation; out-of-fold operating point)"
    if plan.max_members > 1:
        return f"up to {plan.max_members - 1} more member(s) in the budget the first model leaves unspent"
    return "one model"


def check_folds(folds: int | None) -> None:
    if folds is not None and (folds == 1 or folds < 0):
        raise ConfigError("--folds must be 0 (no cross-validation) or at least 2")


def plan_command(
    data: Annotated[
        str, typer.Argument(help="Dataset: .npz, class folder, manifest CSV, medmnist:NAME.")
    ],
    out: Annotated[Path, typer.Option("--out", help="Where to write the plan.")] = Path(
        "plan.json"
    ),
    budget: BudgetOpt = "10m",
    model: ModelOpt = None,
    task: TaskOpt = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    folds: Annotated[
        int,
        typer.Option("--folds", help="Plan k-fold cross-validation (k models share the budget)."),
    ] = 0,
    sets: SetOpt = None,
    config: ConfigOpt = None,
    patient_regex: PatientOpt = None,
) -> None:
    """Fingerprint DATA and this machine and write a training plan (JSON) for the time budget."""
    from medlens.data.labels import infer_labels
    from medlens.planning import make_plan
    from medlens.training.run import ensure_splits

    manifest = resolve_data(data, patient_regex=patient_regex)
    labels = infer_labels(manifest, task=task)
    check_folds(folds)
    manifest, _ = ensure_splits(manifest, seed=seed)
    plan = make_plan(
        manifest, labels, budget_s=parse_duration(budget), model=model, seed=seed, folds=folds
    )
    overrides = collect_overrides(sets, config)
    if overrides:
        plan = plan.with_overrides(overrides)
    plan.save(out)
    show_plan(plan)
    console.print(f"wrote {out}")


@contextmanager
def training_progress() -> Iterator[Any]:
    """Rich bars for epochs and steps with live loss and validation AUC."""
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err_console, disable=not err_console.is_terminal) as bar:
        epochs = bar.add_task("epochs", total=None, info="")
        steps = bar.add_task("steps", total=None, info="")

        def on_event(kind: str, info: dict[str, Any]) -> None:
            if kind == "cache":  # decoding and preprocessing every image once, before training
                bar.update(
                    steps,
                    description="cache",
                    total=info["total"],
                    completed=info["done"],
                    info="images",
                )
            elif kind == "epoch_start":
                bar.update(epochs, total=info["epochs"], completed=info["epoch"])
                bar.reset(steps, description="steps", total=info["steps"], info="")
            elif kind == "step":
                bar.update(steps, completed=info["step"], info=f"loss {info['loss']:.4f}")
            elif kind == "epoch_end":
                bar.update(
                    epochs,
                    completed=info["epoch"],
                    info=f"train {info['train_loss']:.4f} val {info['val_loss']:.4f} "
                    f"AUC {info['val_auc']:.4f}{' *' if info['best'] else ''}",
                )

        yield on_event


def headline_table(metrics: dict[str, Any], title: str) -> Table:
    table = Table(title=title)
    for col in ("metric", "test", "95% CI", "validation"):
        table.add_column(col, justify="right")
    test, ci, val = metrics["test"], metrics["test"].get("ci", {}), metrics.get("val", {})
    for key in ("auc", "accuracy", "sensitivity", "specificity", "f1", "pr_auc"):
        if key in test:
            low_high = ci.get(key)
            table.add_row(
                key,
                f"{test[key]:.3f}",
                f"{low_high[0]:.3f}-{low_high[1]:.3f}" if low_high else "",
                f"{val[key]:.3f}" if key in val else "",
            )
    return table


#: a split with this share of images unlike the training images gets a warning (the threshold
#: lets about 1 % of validation's through)
UNLIKE_WARNING = 0.05


def print_shift_warnings(metrics: dict[str, Any]) -> None:
    """One line for each split whose images a classifier tells apart from training's, and for
    each split with many images unlike the training images."""
    from medlens.data.shift import SplitShift

    for found in metrics.get("shift", []):
        if found["flagged"]:
            console.print(f"[yellow]warning:[/] {SplitShift.from_dict(found).describe()}")
    shares = (metrics.get("typicality") or {}).get("unlike_training", {})
    for split, share in shares.items():
        if share is not None and share >= UNLIKE_WARNING:
            console.print(
                f"[yellow]warning:[/] {100 * share:.0f} % of the {split} images are unlike the "
                "training images (about 1 % of validation's are): the model may not apply to them"
            )


def train_command(
    data: Annotated[
        str, typer.Argument(help="Dataset: .npz, class folder, manifest CSV, medmnist:NAME.")
    ],
    out: Annotated[
        Path, typer.Option("--out", help="Run folder (model/, metrics.json, report.html).")
    ],
    plan_file: Annotated[
        Path | None, typer.Option("--plan", help="A plan from `medlens plan`.")
    ] = None,
    budget: BudgetOpt = "10m",
    model: ModelOpt = None,
    task: TaskOpt = None,
    folds: Annotated[
        int | None,
        typer.Option(
            "--folds",
            help="k-fold cross-validation; the k models form an ensemble (default: the plan's).",
        ),
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue an interrupted run in --out.")
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace the trained model already in --out.")
    ] = False,
    seed: Annotated[int, typer.Option(help="Random seed (recorded in the plan).")] = 0,
    device: Annotated[
        str | None, typer.Option(help="cpu or cuda (default: cuda when present).")
    ] = None,
    sensitivity: Annotated[
        float | None,
        typer.Option(
            help="Operating point: the threshold reaching this validation sensitivity (default: Youden's J)."
        ),
    ] = None,
    tta: Annotated[
        bool,
        typer.Option(
            "--tta", help="Add flips of the last axis to the test-time views (the plan shifts)."
        ),
    ] = False,
    init_from: Annotated[
        Path | None,
        typer.Option(
            "--init-from", help="Initialise the backbone from a medlens model (transfer learning)."
        ),
    ] = None,
    freeze_backbone: Annotated[
        bool, typer.Option("--freeze-backbone", help="With --init-from: train only the head.")
    ] = False,
    sets: SetOpt = None,
    config: ConfigOpt = None,
    patient_regex: PatientOpt = None,
) -> None:
    """Train a classifier on DATA, evaluate it on the test split, and save the model artifact."""
    from medlens.planning import Plan
    from medlens.training.run import train_run

    check_folds(folds)
    if (out / "model" / "model.json").is_file() and not (resume or overwrite):
        raise ConfigError(
            f"{out} already holds a trained model",
            fix="choose another --out, or pass --overwrite to replace it (--resume continues "
            "an interrupted run)",
        )
    manifest = resolve_data(data, patient_regex=patient_regex)
    overrides = collect_overrides(sets, config)
    if init_from is not None:
        overrides.update(init_from=str(init_from), freeze_backbone=freeze_backbone)
    plan = Plan.load(plan_file) if plan_file else None
    if plan is not None:
        plan.seed = seed if seed else plan.seed
    tic = time.monotonic()
    with training_progress() as on_event:
        result = train_run(
            manifest,
            out,
            cache_dir=cache_dir() / "arrays",
            plan=plan,
            budget_s=parse_duration(budget),
            model=model,
            overrides=overrides,
            task=task,
            folds=folds,
            resume=resume,
            device=device,
            seed=seed,
            sensitivity=sensitivity,
            tta_flips=(-1,) if tta else (),
            on_event=on_event,
            on_stage=lambda text: console.print(f"[bold]>[/] {text}"),
        )
    show_plan(result.plan)
    console.print(headline_table(result.metrics, f"test results ({time.monotonic() - tic:.0f} s)"))
    print_shift_warnings(result.metrics)
    console.print(
        f"model: {result.model_dir}\nreport: {out / 'report.html'}\nmetrics: {out / 'metrics.json'}"
    )


def evaluate_command(
    model_dir: Annotated[Path, typer.Argument(help="A model folder (RUN_DIR/model).")],
    data: Annotated[
        str, typer.Argument(help="Dataset: .npz, class folder, manifest CSV, medmnist:NAME.")
    ],
    split: Annotated[
        str, typer.Option(help="Split to evaluate (rows without a split count as this one).")
    ] = "test",
    out: Annotated[
        Path | None, typer.Option("--out", help="Folder for metrics.json and report.html.")
    ] = None,
    sensitivity: Annotated[
        float | None,
        typer.Option(
            help="Re-choose the threshold on the data's validation split for this sensitivity."
        ),
    ] = None,
    tta: Annotated[
        bool | None,
        typer.Option(
            "--tta/--no-tta",
            help="Test-time views: --tta adds flips of the last axis, --no-tta scores the image "
            "alone (default: as trained).",
        ),
    ] = None,
    resamples: Annotated[int, typer.Option(help="Bootstrap resamples for the CIs.")] = 1000,
    patient_regex: PatientOpt = None,
) -> None:
    """Evaluate a model on DATA: metrics with 95% CIs, calibration, report.html."""
    from dataclasses import replace

    from medlens.data.manifest import Manifest
    from medlens.evaluation.artifact_eval import evaluate_artifact
    from medlens.evaluation.report import write_report
    from medlens.inference import load_artifact
    from medlens.models.tta import NO_TTA
    from medlens.training.run import gallery

    artifact = load_artifact(model_dir)
    manifest = resolve_data(data, patient_regex=patient_regex)
    # the run's manifest beside model/: an external data set is compared with its training images
    run_manifest = artifact.folder.parent / "manifest.csv"
    trained_on = Manifest.read(run_manifest) if run_manifest.is_file() else None
    with progress_bar("preprocessing") as update:
        metrics, prepared, test = evaluate_artifact(
            artifact,
            manifest,
            split=split,
            cache_dir=cache_dir() / "arrays",
            sensitivity=sensitivity,
            tta=None if tta is None else (replace(artifact.tta, flips=(-1,)) if tta else NO_TTA),
            resamples=resamples,
            progress=update,
            trained_on=trained_on,
        )
    out = out or artifact.folder.parent / f"evaluation-{split}"
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    write_report(
        out / "report.html",
        metrics,
        title=f"medlens: {artifact.meta['name']} on {data} ({split})",
        cases=gallery(prepared, test, artifact.labels, metrics, artifact.members),
    )
    console.print(
        headline_table(metrics, f"{artifact.meta['name']} on {split} (n={metrics['test']['n']})")
    )
    print_shift_warnings(metrics)
    console.print(f"metrics: {out / 'metrics.json'}\nreport: {out / 'report.html'}")


def predict_command(
    model_dir: Annotated[Path, typer.Argument(help="A model folder (RUN_DIR/model).")],
    inputs: Annotated[
        list[Path], typer.Argument(help="Image files, folders or DICOM series folders.")
    ],
    out: Annotated[Path, typer.Option("--out", help="predictions.csv or .json.")] = Path(
        "predictions.csv"
    ),
    batch_size: Annotated[int, typer.Option(help="Images per forward pass.")] = 32,
    backend: Annotated[
        str, typer.Option(help="auto (ONNX Runtime, else torch), onnx or torch.")
    ] = "auto",
    precision: Annotated[
        str,
        typer.Option(
            help="fp32; bf16 or int8 once `medlens export --bf16|--int8` has checked them."
        ),
    ] = "fp32",
    provider: Annotated[
        str,
        typer.Option(
            help="fp32's ONNX Runtime provider: auto (the fastest for the model, timed on "
            "first use and remembered), cpu, openvino or cuda."
        ),
    ] = "auto",
) -> None:
    """Class probabilities and the thresholded decision for each input."""
    from medlens.inference import load_artifact
    from medlens.inference.engine import Engine
    from medlens.inference.predictor import expand_inputs, predict_items, write_predictions

    artifact = load_artifact(model_dir)
    items = expand_inputs(inputs)
    engine = Engine(
        artifact,
        backend=backend,
        cache_dir=cache_dir() / "onnx",
        precision=precision,
        provider=provider,
    )
    with progress_bar(f"predicting ({engine.backend_used})") as update:
        rows = list(
            predict_items(artifact, items, batch_size=batch_size, engine=engine, progress=update)
        )
    meta = {
        "name": artifact.meta["name"],
        "version": artifact.meta["version"],
        "classes": artifact.labels.classes,
        "operating_point": artifact.meta["operating_point"],
    }
    write_predictions(rows, out, meta)
    errors = sum(1 for r in rows if "error" in r)
    # the inputs that failed first (they need the user), then the others, up to TABLE_ROWS
    shown = sorted(rows, key=lambda r: "error" not in r)[:TABLE_ROWS]
    table = Table(
        title=f"{len(rows)} input(s)",
        caption=f"{len(shown)} of {len(rows)} shown; all in {out}"
        if len(shown) < len(rows)
        else None,
    )
    table.add_column("input", overflow="fold")
    table.add_column("prediction")
    for row in shown:
        table.add_row(row["input"], row.get("prediction") or f"[red]{row['error']}")
    console.print(table)
    decided = Counter(str(r["prediction"]) for r in rows if "error" not in r)
    summary = ", ".join(f"{name} {count}" for name, count in decided.most_common())
    console.print(
        f"wrote {out}: {summary or 'no prediction'}"
        + (f"; {errors} input(s) could not be read" if errors else "")
    )
    if errors == len(rows):
        raise typer.Exit(1)


def export_command(
    model_dir: Annotated[Path, typer.Argument(help="A model folder (RUN_DIR/model).")],
    onnx: Annotated[
        bool, typer.Option("--onnx", help="Write model.onnx and check it against torch.")
    ] = True,
    out: Annotated[
        Path | None, typer.Option("--out", help="Output file (default: MODEL_DIR/model.onnx).")
    ] = None,
    int8: Annotated[
        bool,
        typer.Option(
            "--int8", help="Also write model.int8.onnx, calibrated on --calibration DATA."
        ),
    ] = False,
    bf16: Annotated[
        bool,
        typer.Option(
            "--bf16",
            help="Check bfloat16 inference (OpenVINO, CPUs with native bf16) on --calibration "
            "DATA's test rows.",
        ),
    ] = False,
    calibration: Annotated[
        str | None,
        typer.Option(
            help="Dataset for the INT8 calibration and the --int8/--bf16 checks "
            "(.npz, folder, manifest, medmnist:NAME)."
        ),
    ] = None,
    max_images: Annotated[
        int,
        typer.Option(help="At most this many images each to calibrate on and to check on."),
    ] = 256,
) -> None:
    """Export a model to ONNX and report the largest ONNX Runtime vs torch difference;
    with --int8 or --bf16, how much the reduced precision moves its predictions."""
    from medlens.inference import load_artifact
    from medlens.inference.onnx import export_onnx

    if not onnx:
        raise ConfigError("only --onnx export is available")
    if (int8 or bf16) and not calibration:
        raise ConfigError(
            f"{'--int8' if int8 else '--bf16'} needs --calibration DATA",
            fix="name images like the training data (e.g. the training dataset itself)",
        )
    artifact = load_artifact(model_dir)
    shape = (artifact.in_channels, *artifact.meta["input_size"])
    report = export_onnx(artifact.members, shape, out or artifact.folder / "model.onnx")
    console.print(
        f"wrote {report.path}; ONNX Runtime vs torch max |difference| {report.max_abs_diff:.2e} "
        f"(batches {list(report.batch_sizes)})"
    )
    if calibration and (int8 or bf16):
        from medlens.training.data import prepare_data

        data = prepare_data(
            resolve_data(calibration),
            artifact.labels,
            artifact.pipeline,
            cache_dir() / "arrays",
            in_channels=artifact.in_channels,
            check_leakage=False,
        )
        if int8:
            _export_int8(artifact, data, max_images)
        if bf16:
            _check_bf16(artifact, data, max_images)


def _check_bf16(artifact: Artifact, data: PreparedData, max_images: int) -> None:
    """bf16.json: bfloat16 against float32 predictions on DATA's test rows."""
    from medlens.inference.bf16 import check_bf16
    from medlens.inference.quantize import calibration_split

    _, check = calibration_split(data, max_images)
    report = check_bf16(artifact, data.images(check), check_targets=data.targets[check])
    auc = (
        f"; AUC {report.auc_fp32:.4f} (fp32) vs {report.auc_bf16:.4f} (bf16)"
        if report.auc_fp32 is not None
        else ""
    )
    console.print(
        f"checked bf16 on {report.check_images} images: the decision agrees "
        f"{report.decision_agreement:.1%}, probabilities move {report.mean_probability_change:.4f} "
        f"on average (max {report.max_probability_change:.4f}){auc}"
    )
    auc_drop = (report.auc_fp32 or 0.0) - (report.auc_bf16 or 0.0)
    if report.decision_agreement < 0.98 or auc_drop > 0.01:
        err_console.print(
            "[yellow]warning:[/] bfloat16 changes decisions noticeably; serve the fp32 model"
        )


def _export_int8(artifact: Artifact, data: PreparedData, max_images: int) -> None:
    """model.int8.onnx calibrated on DATA's validation rows, checked on its test rows."""
    from medlens.inference.quantize import calibration_split, quantize_artifact

    calibrate, check = calibration_split(data, max_images)
    report = quantize_artifact(
        artifact,
        data.images(calibrate),
        data.images(check),
        check_targets=data.targets[check],
    )
    auc = (
        f"; AUC {report.auc_fp32:.4f} (fp32) vs {report.auc_int8:.4f} (int8)"
        if report.auc_fp32 is not None
        else ""
    )
    console.print(
        f"wrote {report.path}: calibrated on {report.calibration_images} images; on "
        f"{report.check_images} others the decision agrees {report.decision_agreement:.1%}, "
        f"probabilities move {report.mean_probability_change:.4f} on average "
        f"(max {report.max_probability_change:.4f}){auc}"
    )
    auc_drop = (report.auc_fp32 or 0.0) - (report.auc_int8 or 0.0)
    if report.decision_agreement < 0.98 or auc_drop > 0.01:
        err_console.print(
            "[yellow]warning:[/] the INT8 model changes decisions noticeably; serve the fp32 "
            "model, or calibrate on more images like the ones it will see"
        )
