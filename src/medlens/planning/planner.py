"""Dataset + machine + time budget -> a Plan, by measuring candidate networks on this machine.

Like nnU-Net the plan follows from a fingerprint; unlike it, the planner times a few training
steps of each candidate (largest first) and keeps the first one that affords enough epochs
(within a margin for timing noise) in the budget, so the same defaults fit a laptop CPU and a
GPU server.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from medlens.data.labels import LabelSpec
from medlens.data.manifest import Manifest
from medlens.errors import ConfigError
from medlens.io.dicom_series import PROJECTION_MODALITIES
from medlens.models import create_model
from medlens.models.precision import autocast, autocast_dtype, guard_small_convolutions
from medlens.planning.fingerprint import (
    DatasetFingerprint,
    HardwareFingerprint,
    fingerprint_dataset,
    hardware_fingerprint,
)
from medlens.planning.plan import Plan
from medlens.transforms.augment import BatchAugment

log = logging.getLogger(__name__)

#: a smaller network for more epochs beat a larger one for fewer on validation AUC (PneumoniaMNIST
#: 0.998 both, AdrenalMNIST3D 0.887 vs 0.879 with 20; benchmarks/bench_classification.py)
MIN_EPOCHS = 40
#: a candidate is kept when it affords this share of the target epochs. Step timing on a shared
#: machine moves 10-20 % between runs; with no margin the PneumoniaMNIST choice flipped between two
#: networks from run to run (widths 24-192 needed <= 15.0 s per epoch and measured 13-15 s). The
#: target has slack: early stopping ends most runs well before it, and ensemble members use the rest.
EPOCH_TOLERANCE = 0.8
USABLE_BUDGET = 0.8  # the rest covers caching, evaluation and the report
#: ensemble members trained in the budget a run leaves when early stopping ends it (training/run.py)
MAX_MEMBERS = 3
WIDTHS = ((32, 64, 128, 256), (24, 48, 96, 192), (16, 32, 64, 128), (8, 16, 32, 64))


@dataclass(frozen=True)
class Candidate:
    model: str
    options: dict[str, Any]


def input_size(fp: DatasetFingerprint, hw: HardwareFingerprint) -> list[int]:
    """The median shape, shrunk (aspect kept) so the largest axis fits the machine's cap."""
    cap = (224 if hw.gpu else 128) if fp.spatial_dims == 2 else (96 if hw.gpu else 64)
    shape = fp.median_shape
    factor = min(1.0, cap / max(shape))
    return [max(8, round(s * factor)) for s in shape]


def candidates(fp: DatasetFingerprint, size: list[int], hw: HardwareFingerprint) -> list[Candidate]:
    """Networks to try, best expected quality first."""
    small = max(size) <= 64
    found: list[Candidate] = []
    if hw.gpu:
        found.append(Candidate("resnet18", {"small_input": small}))
    stride = 1 if (fp.spatial_dims == 2 and small) else 2
    for widths in WIDTHS:
        found.append(Candidate("compactnet", {"widths": list(widths), "stem_stride": stride}))
    return found


def default_options(model: str, size: list[int]) -> dict[str, Any]:
    """Options for a user-chosen model: small-input stems for MedMNIST-sized images."""
    if model.startswith(("resnet", "densenet")):
        return {"small_input": max(size) <= 64}
    if model == "compactnet":
        return {"stem_stride": 1 if max(size) <= 64 else 2}
    if model.startswith("vgg") and max(size) <= 64:
        return {"width": 0.5}
    return {}


def measure_step(
    candidate: Candidate,
    *,
    spatial_dims: int,
    in_channels: int,
    num_outputs: int,
    size: list[int],
    batch_size: int,
    device: str,
    augmentation: dict[str, Any] | None = None,
    steps: int = 2,
    mixed_precision: bool = True,
) -> float:
    """Seconds per training step (batch augmentation on the CPU, forward, backward, AdamW
    update) after one warm-up step, in the precision the trainer will use on ``device``.
    Augmenting 3D batches costs about 14 % of a step (AdrenalMNIST3D); without it the planned
    epochs ran ~20 % long."""
    amp_dtype = autocast_dtype(device, mixed_precision)
    model = create_model(
        candidate.model, spatial_dims, in_channels, num_outputs, **candidate.options
    ).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    augment = BatchAugment(spatial_dims=spatial_dims, **(augmentation or {"prob": 0.0}))
    generator = torch.Generator().manual_seed(0)
    batch = torch.randn(batch_size, in_channels, *size)
    y = torch.randint(0, num_outputs, (batch_size,), device=device)
    elapsed = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        x = augment(batch, generator=generator).images.to(device)
        optimizer.zero_grad()
        with autocast(device, amp_dtype), guard_small_convolutions(model, amp_dtype):
            logits = model(x).float()
        F.cross_entropy(logits, y).backward()
        optimizer.step()
        if device == "cuda":
            torch.cuda.synchronize()
        elapsed.append(time.perf_counter() - start)
    return min(elapsed[1:])


def batch_size_for(n_train: int, spatial_dims: int, hw: HardwareFingerprint) -> int:
    preferred = (128 if hw.gpu else 64) if spatial_dims == 2 else (32 if hw.gpu else 16)
    # small datasets: at least ~10 steps per epoch
    return int(max(4, min(preferred, 2 ** int(math.log2(max(4, n_train // 10))))))


def augmentation_for(fp: DatasetFingerprint) -> dict[str, Any]:
    """Mild, orientation-preserving augmentation: no flips (left/right can be the label).

    No random zoom for volumes that all share one grid (one shape, one spacing): there a
    structure's size in voxels is a measurement (AdrenalMNIST3D's gland volume alone ranks its training labels with AUC 0.68)
    and a +-15 % zoom moves it by up to +-50 %. On held-out AdrenalMNIST3D training volumes,
    3 seeds, AUC 0.892 vs 0.887 and accuracy 0.862 vs 0.858 without it (benchmarks/
    bench_protocol.py, ``noscale``). 2D images keep it: a radiograph's magnification varies
    with the patient and the projection geometry.
    """
    one_grid = fp.spatial_dims == 3 and fp.one_grid
    return {
        "rotate_deg": 15.0,
        "scale": 0.0 if one_grid else 0.15,
        "translate": 0.1,
        "brightness": 0.2,
        "contrast": 0.2,
        "gamma": 0.3 if fp.spatial_dims == 2 else 0.0,
        "prob": 0.8,
    }


def tta_shift_for(size: list[int]) -> int:
    """One-voxel test-time shifts (medlens.models.tta) for inputs of at most 64 voxels a side.

    There a voxel is 1.5-4 % of the field of view and where the image falls on the grid moves
    the score; the views cost 9x (2D) or 27x (3D) one forward pass, cheap at this size. Larger
    inputs get none: a one-voxel move is a smaller change there, and the cost grows with the
    network that larger inputs get.
    """
    return 1 if max(size) <= 64 else 0


def ema_decay_for(steps_per_epoch: int) -> float:
    """Weights averaged over about two epochs of steps (1 / (1 - decay) steps).

    Validation AUC on a small split jumps from epoch to epoch; the averaged weights move
    smoothly, so the epoch chosen on it is less a pick of noise (AdrenalMNIST3D: 98 validation
    volumes; best epoch 4 of 67 with raw weights).
    """
    return round(min(0.9998, max(0.9, 1.0 - 1.0 / (2 * max(1, steps_per_epoch)))), 5)


def equalise_for(fp: DatasetFingerprint) -> bool:
    """Adaptive histogram equalisation for grey projection radiographs (CR, DX, MG...).

    A radiograph's grey values follow the exposure and the vendor's processing, which change
    from site to site; equalised, a monotone change of them barely moves the image. On a second
    site held out of PneumoniaMNIST's training images (``benchmarks/bench_protocol.py``,
    ``carve_site``), where the default's specificity fell from validation's 0.98 to 0.82,
    equalisation raised held-out accuracy on both sides of the leading principal component, two
    seeds each - the direction it is the remedy for; on PneumoniaMNIST's official test it lowered
    AUC and accuracy (benchmarks/README.md). Images of other or unknown modality keep their
    grey values: on the synthetic chest phantoms (flat regions, white noise, small nodules)
    equalisation amplified the noise and a small network's test AUC fell from 0.98 / 0.90 to
    0.93 / 0.49 (two seeds).
    """
    return fp.spatial_dims == 2 and fp.channels == [1] and fp.modality in PROJECTION_MODALITIES


def preprocessing_for(fp: DatasetFingerprint, size: list[int]) -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = []
    if len(fp.channels) > 1:  # a mix of grey and colour files: convert to the majority
        steps.append({"name": "channels", "count": max(fp.channels)})
    resize = {"name": "resize", "shape": list(size), "order": 1}
    clip_and_scale = [
        {"name": "percentile_clip", "lower": 0.5, "upper": 99.5},
        {"name": "zscore", "nonzero": False},
    ]
    if equalise_for(fp):  # on the model-sized image: tiles of half of it, a small fixed cost
        clahe = {"name": "clahe", "clip_limit": 0.02, "kernel_fraction": 0.5}
        return [*steps, resize, clahe, *clip_and_scale]
    return [*steps, *clip_and_scale, resize]


def loss_for(fp: DatasetFingerprint, labels: LabelSpec) -> tuple[str, list[float] | None]:
    """Cross-entropy; class weights beyond 2:1 imbalance; focal loss beyond 20:1."""
    if labels.multilabel:
        return "bce", None
    counts = [max(1, c) for c in fp.class_counts.values()]
    if fp.imbalance > 20:
        return "focal", None
    if fp.imbalance > 2:
        total = sum(counts)
        return "ce", [round(total / (len(counts) * c), 4) for c in counts]
    return "ce", None


def make_plan(
    manifest: Manifest,
    labels: LabelSpec,
    *,
    budget_s: float = 600.0,
    model: str | None = None,
    seed: int = 0,
    hardware: HardwareFingerprint | None = None,
    max_epochs: int | None = None,
    folds: int = 0,
) -> Plan:
    """Fingerprint the data and the machine, time the candidates, and return a validated Plan.

    ``folds=k`` plans k-fold cross-validation: k models share the budget, each trained on
    (k-1)/k of the non-test rows and validated on the rest.

    Example:
        >>> plan = make_plan(manifest, infer_labels(manifest), budget_s=300)  # doctest: +SKIP
        >>> plan.model, plan.epochs
        ('compactnet', 42)
    """
    if budget_s <= 0:
        raise ConfigError(f"budget must be positive, got {budget_s} s")
    if folds == 1 or folds < 0:
        raise ConfigError(f"folds must be 0 (no cross-validation) or at least 2, got {folds}")
    hw = hardware or hardware_fingerprint()
    fp = fingerprint_dataset(manifest, labels, seed=seed)
    size = input_size(fp, hw)
    in_channels = max(fp.channels)
    n_train = fp.counts.get("train", sum(fp.counts.values()))
    n_val = fp.counts.get("val", 0)
    if folds:
        pool_n = n_train + n_val
        n_train, n_val = math.ceil(pool_n * (folds - 1) / folds), math.ceil(pool_n / folds)
    model_budget_s = budget_s * USABLE_BUDGET / max(1, folds)
    batch = batch_size_for(n_train, fp.spatial_dims, hw)
    cap = max_epochs or int(min(200, max(30, round(150_000 / max(1, n_train)))))
    pool = [Candidate(model, default_options(model, size))] if model else candidates(fp, size, hw)
    notes: list[str] = []
    timings: dict[str, float] = {}
    chosen, epochs, epoch_s = pool[-1], 1, math.inf
    for candidate in pool:
        step = measure_step(
            candidate,
            spatial_dims=fp.spatial_dims,
            in_channels=in_channels,
            num_outputs=labels.num_outputs,
            size=size,
            batch_size=batch,
            device=hw.device,
            augmentation=augmentation_for(fp),
        )
        # an evaluation pass costs about a third of a training step per image
        epoch_s = step * math.ceil(n_train / batch) + step / 3 * math.ceil(n_val / batch)
        timings[f"{candidate.model}{candidate.options}"] = round(epoch_s, 2)
        affordable = int(model_budget_s / epoch_s)
        chosen, epochs = candidate, min(cap, affordable)
        if affordable >= math.floor(EPOCH_TOLERANCE * min(MIN_EPOCHS, cap)):
            break
    if epochs < 3:
        notes.append(
            f"the budget affords only {epochs} epoch(s) of the smallest network; raise --budget"
        )
        epochs = max(1, epochs)
    loss, weights = loss_for(fp, labels)
    return Plan(
        labels=labels.to_dict(),
        spatial_dims=fp.spatial_dims,
        in_channels=in_channels,
        input_size=size,
        preprocessing=preprocessing_for(fp, size),
        model=chosen.model,
        model_options=dict(chosen.options),
        batch_size=batch,
        epochs=epochs,
        warmup_epochs=min(2.0, max(0.5, epochs / 20)),
        loss=loss,
        class_weights=weights,
        label_smoothing=0.0 if labels.multilabel else 0.05,
        augmentation=augmentation_for(fp),
        tta_shift=tta_shift_for(size),
        patience=max(10, epochs // 3),
        min_epochs=epochs // 2,
        ema_decay=ema_decay_for(math.ceil(n_train / batch)),
        max_members=MAX_MEMBERS,
        folds=folds,
        seed=seed,
        budget_s=budget_s,
        fingerprint=fp.to_dict(),
        hardware=hw.to_dict(),
        estimates={
            "epoch_s": round(epoch_s, 2),
            "train_s": round(epoch_s * epochs * max(1, folds), 1),
            "measured_epoch_s": timings,
        },
        notes=notes,
    ).validate()
