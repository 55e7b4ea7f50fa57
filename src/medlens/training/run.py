"""One training run end to end: split, plan, cache, train (or k folds), evaluate, save, report.

This is what ``medlens train`` calls; a Python user gets the same with :func:`train_run`.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medlens._fs import atomic_write_text
from medlens.data.labels import LabelSpec, check_split_classes, infer_labels
from medlens.data.manifest import Manifest
from medlens.data.splits import kfold, patient_split
from medlens.data.typicality import Typicality
from medlens.errors import ConfigError
from medlens.evaluation import Case, SplitScores, evaluate_scores, write_report
from medlens.evaluation.evaluate import HEADLINE, decisions_for
from medlens.explain import relevance_maps
from medlens.inference.artifact import load_artifact, save_artifact
from medlens.models import MedlensModel
from medlens.models.forward import batched_embeddings, batched_outputs, to_probabilities
from medlens.models.precision import autocast_dtype, precision_name
from medlens.models.transfer import load_backbone
from medlens.models.tta import NO_TTA, TTA
from medlens.planning import Plan, make_plan
from medlens.training.data import PreparedData, prepare_data
from medlens.training.members import member_plan, spent_seconds
from medlens.training.trainer import Event, Trainer, TrainResult, build_model, pick_device

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    run_dir: Path
    model_dir: Path
    plan: Plan
    metrics: dict[str, Any]
    results: list[TrainResult]
    #: the scores the operating point was fitted on (out-of-fold with folds) and the test scores
    val: SplitScores | None = None
    test: SplitScores | None = None


def ensure_splits(manifest: Manifest, *, seed: int = 0) -> tuple[Manifest, str]:
    """Keep a complete split; otherwise split by patient (70/15/15, or val from train)."""
    present = {r.get("split", "") for r in manifest.rows}
    if {"train", "val", "test"} <= present and "" not in present:
        return manifest, "the data's own split"
    if "" in present:
        return patient_split(manifest, val=0.15, test=0.15, seed=seed), "patient-level 70/15/15"
    if "val" not in present and "train" in present:
        train = Manifest([r for r in manifest.rows if r["split"] == "train"], manifest.root)
        carved = {
            r["path"]: r["split"] for r in patient_split(train, val=0.15, test=0.0, seed=seed)
        }
        rows = [{**r, "split": carved.get(r["path"], r["split"])} for r in manifest.rows]
        return Manifest(rows, manifest.root), "validation carved from train by patient"
    raise ConfigError(
        f"the data has splits {sorted(present)} but needs train, val and test",
        fix="run `medlens data split` to split by patient",
    )


def _scores(
    data: PreparedData, split: str, members: list[MedlensModel], device: str, tta: TTA
) -> SplitScores:
    idx = np.sort(data.indices(split))
    images = data.images(idx)
    logits, embedding = batched_outputs(members, images, device=device, tta=tta)
    groups = [data.manifest.rows[i]["patient_id"] for i in idx]
    return SplitScores(split, idx, data.targets[idx], logits, groups, embedding)


def _view(
    image: np.ndarray, relevance: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """2D pictures of a (C, *spatial) image and its map: first channel; in 3D the slice through
    the map's maximum (the middle slice without a map)."""
    plane = image[0]
    while plane.ndim > 2:
        k = plane.shape[0] // 2
        if relevance is not None:
            k = int(np.unravel_index(int(np.argmax(relevance)), relevance.shape)[0])
            relevance = relevance[k]
        plane = plane[k]
    return plane, relevance


def gallery(
    data: PreparedData,
    test: SplitScores,
    labels: LabelSpec,
    metrics: dict[str, Any],
    members: Sequence[MedlensModel] = (),
    per_kind: int = 8,
) -> list[Case]:
    """The most confident correct and wrong single-label test cases, with the Grad-CAM map of
    the predicted class when ``members`` are given."""
    if labels.multilabel:
        return []
    probs = to_probabilities(test.logits, multilabel=False, temperature=metrics["temperature"])
    decided = decisions_for(test, labels, metrics)
    correct = decided == test.targets
    confidence = probs[np.arange(len(decided)), decided]
    picked: list[int] = []
    for want in (True, False):
        chosen = np.flatnonzero(correct == want)
        picked += [int(j) for j in chosen[np.argsort(-confidence[chosen])][:per_kind]]
    maps: dict[int, np.ndarray] = {}
    if members and picked:
        images = torch.from_numpy(data.images(test.indices[picked]))
        for c in sorted({int(decided[j]) for j in picked}):
            rows = [k for k, j in enumerate(picked) if decided[j] == c]
            found = relevance_maps(members, images[rows], method="gradcam", class_index=c)
            maps.update(zip(rows, found, strict=True))
    cases = []
    for k, j in enumerate(picked):
        picture, relevance = _view(np.asarray(data.cached.images[test.indices[j]]), maps.get(k))
        title = (
            f"true {labels.classes[test.targets[j]]}\n"
            f"pred {labels.classes[decided[j]]} {confidence[j]:.2f}"
        )
        cases.append(Case(picture, title, bool(correct[j]), relevance))
    return cases


def _initial_model(plan: Plan) -> MedlensModel | None:
    if not plan.init_from:
        return None
    source = load_artifact(plan.init_from)
    model = build_model(plan)
    report = load_backbone(
        model,
        source.members[0].state_dict(),
        source_name=source.meta["architecture"]["name"],
        freeze=plan.freeze_backbone,
    )
    log.info("initialised %d feature tensors from %s", report.loaded, plan.init_from)
    return model


def _fold_manifest(manifest: Manifest, fold: int) -> Manifest:
    rows = []
    for r in manifest.rows:
        split = "test" if r.get("split") == "test" else "val" if r["fold"] == str(fold) else "train"
        rows.append({**r, "split": split})
    return Manifest(rows, manifest.root)


@dataclass(frozen=True)
class _Context:
    """What every training member shares."""

    plan: Plan
    labels: LabelSpec
    run_dir: Path
    cache_dir: Path
    device: str
    resume: bool
    tensorboard: bool
    tta: TTA
    on_event: Event | None


def _resolve_plan(
    manifest: Manifest,
    labels: LabelSpec,
    plan_path: Path,
    *,
    plan: Plan | None,
    resume: bool,
    budget_s: float,
    model: str | None,
    overrides: dict[str, Any] | None,
    seed: int,
    folds: int | None,
) -> Plan:
    """The run's own plan when resuming, else the given one, else a new one; then overrides;
    ``folds`` (when given) replaces the plan's."""
    if resume and plan_path.exists():
        plan = Plan.load(plan_path)
    elif plan is None:
        source = (overrides or {}).get("init_from")
        if source:  # fine-tuning keeps the pre-trained architecture
            arch = load_artifact(source).meta["architecture"]
            model, overrides = arch["name"], {"model_options": arch["options"], **(overrides or {})}
        plan = make_plan(
            manifest, labels, budget_s=budget_s, model=model, seed=seed, folds=folds or 0
        )
    if overrides:
        plan = plan.with_overrides(overrides)
    if folds is not None and folds != plan.folds:
        log.warning("the plan was made for %d fold(s); training %d", plan.folds, folds)
        plan = plan.with_overrides({"folds": folds})
    if plan.labels != labels.to_dict():
        raise ConfigError(
            f"the plan was made for classes {plan.labels['classes']}, the data has {labels.classes}",
            fix="make a new plan for this data (`medlens plan`)",
        )
    plan.save(plan_path)
    return plan


def _fit(
    ctx: _Context, data: PreparedData, out: Path, deadline_s: float, plan: Plan | None = None
) -> TrainResult:
    plan = plan or ctx.plan
    trainer = Trainer(
        plan,
        data,
        out,
        device=ctx.device,
        on_event=ctx.on_event,
        deadline_s=deadline_s,
        tensorboard=ctx.tensorboard,
        init_model=_initial_model(plan),
    )
    return trainer.fit(resume=ctx.resume)


def _train_members(
    ctx: _Context, data: PreparedData, stage: Callable[[str], None]
) -> tuple[list[TrainResult], SplitScores, SplitScores]:
    """The planned model, then more members while the unspent budget affords them. Each member
    is scored on val and test when it is done; what scoring took so far, plus as much again for
    the next member, is kept back from that member's training. Returns the results and the
    ensemble's val and test scores."""
    plan = ctx.plan
    stage(f"training {plan.model} for up to {plan.epochs} epochs on {ctx.device}")
    results = [_fit(ctx, data, ctx.run_dir, plan.budget_s)]
    vals, tests, scoring_s = [], [], []
    while True:
        tic = time.monotonic()
        vals.append(_scores(data, "val", [results[-1].model], ctx.device, ctx.tta))
        tests.append(_scores(data, "test", [results[-1].model], ctx.device, ctx.tta))
        scoring_s.append(time.monotonic() - tic)
        reserved = sum(scoring_s) + scoring_s[-1]
        out = ctx.run_dir / f"member{len(results)}"
        saved = out / "plan.json"
        resumed = ctx.resume and saved.exists()
        member = Plan.load(saved) if resumed else member_plan(plan, results, reserved)
        if member is None:
            return results, _ensemble(vals), _ensemble(tests)
        member.save(saved)
        left = plan.budget_s - spent_seconds(results) - reserved
        stage(
            f"training ensemble member {len(results) + 1} for up to {member.epochs} epochs "
            f"({left:.0f} s of the budget left, less scoring)"
        )
        results.append(_fit(ctx, data, out, max(left, 0.0), member))


def _ensemble(parts: list[SplitScores]) -> SplitScores:
    """The members' scores of one split averaged (their logits, as the artifact does) and
    their pooled features side by side."""
    first = parts[0]
    logits = np.mean([p.logits for p in parts], axis=0).astype(np.float32)
    pooled = [p.embedding for p in parts if p.embedding is not None]
    embedding = np.concatenate(pooled, axis=1) if len(pooled) == len(parts) else None
    return SplitScores(first.split, first.indices, first.targets, logits, first.groups, embedding)


def _train_folds(
    ctx: _Context, manifest: Manifest, folds: int, seed: int, stage: Callable[[str], None]
) -> tuple[list[TrainResult], SplitScores]:
    """k patient-grouped folds; validation scores are the out-of-fold predictions."""
    folded = kfold(manifest, folds, seed=seed)
    results, parts = [], []
    for fold in range(folds):
        stage(f"training fold {fold + 1}/{folds}: {ctx.plan.model}, {ctx.plan.epochs} epochs")
        fold_data = prepare_data(
            _fold_manifest(folded, fold), ctx.labels, ctx.plan.pipeline(), ctx.cache_dir
        )
        results.append(_fit(ctx, fold_data, ctx.run_dir / f"fold{fold}", ctx.plan.budget_s / folds))
        parts.append(_scores(fold_data, "val", [results[-1].model], ctx.device, ctx.tta))
    val = SplitScores(
        "val (out-of-fold)",
        np.concatenate([p.indices for p in parts]),
        np.concatenate([p.targets for p in parts]),
        np.concatenate([p.logits for p in parts]),
        [g for p in parts for g in p.groups],
    )
    return results, val


def _typicality(
    ctx: _Context,
    data: PreparedData,
    results: list[TrainResult],
    val: SplitScores,
    test: SplitScores,
) -> tuple[Typicality, dict[str, Any]]:
    """The training images' summaries (pixels, the members' pooled features) and the share of
    validation and test flagged. Validation's and test's features come from their scoring;
    out-of-fold validation scores (``--folds``) are not the ensemble's, so its are computed."""
    members = [r.model for r in results]

    def embed(images: np.ndarray, tta: TTA = NO_TTA) -> np.ndarray:
        return batched_embeddings(members, images, device=ctx.device, tta=tta)

    on_val = val.embedding if val.split == "val" else None
    if on_val is None and len(data.indices("val")):
        on_val = embed(data.images(data.indices("val")), ctx.tta)
    typicality = data.typicality(ctx.plan.seed, embed, on_val)
    shares = {
        "val": data.unlike_training(typicality, "val", on_val),
        "test": data.unlike_training(typicality, "test", test.embedding),
    }
    found = {
        "threshold": typicality.threshold,
        "features": typicality.embedding is not None,
        "unlike_training": shares,
    }
    return typicality, found


def model_name(run_dir: Path) -> str | None:
    """The name a run's model is served under (`/v1/models/NAME/predict`): its run folder's, in
    URL-safe characters; None (the architecture's) for a folder named without any."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", run_dir.resolve().name).strip("-.")
    return name[:64] or None


def _save_outputs(
    ctx: _Context,
    data: PreparedData,
    results: list[TrainResult],
    test: SplitScores,
    metrics: dict[str, Any],
    *,
    title: str,
    how: str,
    typicality: Typicality,
) -> Path:
    """metrics.json, the model artifact and report.html."""
    plan = ctx.plan
    atomic_write_text(ctx.run_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    headline = {k: metrics["test"][k] for k in HEADLINE if k in metrics["test"]}
    model_dir = save_artifact(
        ctx.run_dir / "model",
        [r.model.cpu() for r in results],
        labels=ctx.labels,
        preprocessing=plan.preprocessing,
        plan=json.loads(plan.to_json()),
        operating_point={
            "temperature": metrics["temperature"],
            "threshold": metrics["threshold"],
            "method": metrics["threshold_method"],
            **ctx.tta.to_meta(),
        },
        metrics={"test": headline, "ci": metrics["test"]["ci"], "n_test": metrics["test"]["n"]},
        data_hash=data.data_hash,
        name=model_name(ctx.run_dir),
        typicality=typicality,
    )
    write_report(
        ctx.run_dir / "report.html",
        metrics,
        title=title,
        history=results[0].history,
        cases=gallery(data, test, ctx.labels, metrics, [r.model for r in results]),
        notes=[
            f"split: {how}; training stopped: {', '.join(r.stopped for r in results)}",
            *plan.notes,
        ],
    )
    return model_dir


def train_run(
    manifest: Manifest,
    run_dir: str | Path,
    *,
    cache_dir: str | Path,
    plan: Plan | None = None,
    budget_s: float = 600.0,
    model: str | None = None,
    overrides: dict[str, Any] | None = None,
    task: str | None = None,
    folds: int | None = None,
    resume: bool = False,
    device: str | None = None,
    seed: int = 0,
    sensitivity: float | None = None,
    tta_flips: tuple[int, ...] = (),
    resamples: int = 1000,
    on_event: Event | None = None,
    on_stage: Callable[[str], None] | None = None,
    tensorboard: bool = True,
    title: str | None = None,
) -> RunResult:
    """Train, evaluate on test, and write ``plan.json``, ``metrics.json``, ``report.html`` and
    ``model/`` into ``run_dir``. ``folds=k`` trains k fold models and ships their ensemble
    (None: as the plan says); without folds, budget the first model leaves unspent trains more
    members (``plan.max_members``). Validation and test are scored over the plan's test-time
    shifts (``plan.tta_shift``) plus flips of ``tta_flips``; the artifact predicts the same way.

    Example:
        >>> result = train_run(load_manifest("pneumoniamnist.npz"), "runs/pneu", cache_dir=".cache", budget_s=300)  # doctest: +SKIP
        >>> result.metrics["test"]["auc"]
        0.97
    """
    stage = on_stage or (lambda text: log.info("%s", text))
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    labels = infer_labels(manifest, task=task)
    manifest, how = ensure_splits(manifest, seed=seed)
    check_split_classes(manifest, labels)
    manifest.write(run_dir / "manifest.csv")
    stage(f"planning (budget {budget_s:.0f} s; split: {how})")
    plan = _resolve_plan(
        manifest,
        labels,
        run_dir / "plan.json",
        plan=plan,
        resume=resume,
        budget_s=budget_s,
        model=model,
        overrides=overrides,
        seed=seed,
        folds=folds,
    )
    folds = plan.folds
    ctx = _Context(
        plan,
        labels,
        run_dir,
        Path(cache_dir),
        pick_device(device),
        resume,
        tensorboard,
        TTA(tta_flips, plan.tta_shift),
        on_event,
    )
    stage(f"preprocessing into the cache ({len(manifest)} images)")
    tic = time.monotonic()
    data = prepare_data(
        manifest,
        labels,
        plan.pipeline(),
        cache_dir,
        in_channels=plan.in_channels,
        progress=(lambda done, total: on_event("cache", {"done": done, "total": total}))
        if on_event
        else None,
    )
    # outside the budget, which is the training's; a later run on the same data reuses the cache
    preprocessing_s = round(time.monotonic() - tic, 1)
    if folds:
        results, val = _train_folds(ctx, manifest, folds, seed, stage)
        stage("evaluating on the test split")
        test = _scores(data, "test", [r.model for r in results], ctx.device, ctx.tta)
    else:
        results, val, test = _train_members(ctx, data, stage)
    metrics = evaluate_scores(
        val, test, labels, sensitivity=sensitivity, resamples=resamples, seed=seed
    )
    metrics["training"] = {
        "model": plan.model,
        "epochs_run": [len(r.history) for r in results],
        "best_epoch": [r.best_epoch for r in results],
        "stopped": [r.stopped for r in results],
        "seconds": round(sum(r.seconds for r in results), 1),
        "preprocessing_s": preprocessing_s,
        "seed": plan.seed,
        "device": ctx.device,
        "precision": precision_name(autocast_dtype(ctx.device, plan.mixed_precision)),
        "folds": folds,
        "members": len(results),
        **ctx.tta.to_meta(),
        "split": how,
    }
    metrics["shift"] = [shift.to_dict() for shift in data.shifts()]
    typicality, metrics["typicality"] = _typicality(ctx, data, results, val, test)
    title = title or f"medlens: {plan.model} on {manifest.root.name or 'data'}"
    model_dir = _save_outputs(
        ctx, data, results, test, metrics, title=title, how=how, typicality=typicality
    )
    return RunResult(run_dir, model_dir, plan, metrics, results, val, test)
