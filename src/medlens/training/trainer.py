"""The training loop: seeded, checkpointed every epoch, resumable after any kill, early stopping.

Reproducibility does not depend on saving RNG states: epoch ``e`` seeds its data order,
augmentation and dropout from ``(seed, e)``, so a run resumed from the checkpoint of epoch
``e - 1`` replays exactly what an uninterrupted run would have done.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medlens._fs import atomic_write_text, remove_partial_writes
from medlens.errors import ArtifactError, ConfigError
from medlens.losses import make_loss
from medlens.metrics import roc_auc
from medlens.models import MedlensModel, create_model
from medlens.models.forward import batched_logits, to_probabilities
from medlens.models.precision import autocast, autocast_dtype, guard_small_convolutions
from medlens.planning.plan import Plan
from medlens.serialization import load_state, load_weights, save_state, save_weights
from medlens.training.averaging import WeightAverage
from medlens.training.data import PreparedData
from medlens.training.schedule import lr_multiplier

log = logging.getLogger(__name__)
Event = Callable[[str, dict[str, Any]], None]
CHECKPOINT = "checkpoint.safetensors"
BEST = "best.safetensors"


@dataclass
class TrainResult:
    model: MedlensModel
    history: list[dict[str, Any]]
    best_epoch: int
    best_score: float
    stopped: str  # "completed", "early_stopping" or "deadline"
    seconds: float


def _out_of_memory(err: RuntimeError, batch_size: int) -> Exception:
    text = str(err)
    if "out of memory" not in text.lower() and "can't allocate memory" not in text:
        return err
    return ConfigError(
        f"batch size {batch_size} does not fit in memory ({text.splitlines()[0][:120]})",
        fix=f"train with --set batch_size={max(1, batch_size // 2)} (or a smaller input_size)",
    )


def pick_device(requested: str | None = None) -> str:
    if requested:
        if requested.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"device {requested!r} requested but CUDA is not available")
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"


def selection_score(data: PreparedData, indices: np.ndarray, logits: np.ndarray) -> float:
    """Validation AUC: the positive class (binary), macro one-vs-rest or macro over labels."""
    y = data.targets[indices]
    probs = to_probabilities(logits, multilabel=data.labels.multilabel)
    if data.labels.task == "binary":
        return roc_auc(y, probs[:, 1])
    columns = y.T if data.labels.multilabel else [y == k for k in range(probs.shape[1])]
    aucs = [roc_auc(col, probs[:, k]) for k, col in enumerate(columns)]
    return float(np.nanmean(aucs)) if not all(math.isnan(a) for a in aucs) else float("nan")


def build_model(plan: Plan) -> MedlensModel:
    return create_model(
        plan.model,
        plan.spatial_dims,
        plan.in_channels,
        plan.label_spec.num_outputs,
        **plan.model_options,
    )


AUC_TIE = 1e-3


def is_improvement(score: float, loss: float, best: dict[str, Any]) -> bool:
    """Higher validation AUC wins; AUCs within ``AUC_TIE`` are a tie that the lower loss breaks.

    On an easy validation split the AUC saturates (0.997 vs 0.998 is a handful of cases), and
    picking the epoch by that noise tends to keep an early, high-learning-rate model.
    """
    if score > best["score"] + AUC_TIE:
        return True
    return bool(score >= best["score"] - AUC_TIE and loss < best["loss"])


def _optimizer(plan: Plan, model: nn.Module) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if plan.optimizer == "sgd":
        return torch.optim.SGD(
            params,
            lr=plan.lr,
            momentum=plan.momentum,
            weight_decay=plan.weight_decay,
            nesterov=True,
        )
    return torch.optim.AdamW(params, lr=plan.lr, weight_decay=plan.weight_decay)


def _write_history(run_dir: Path, history: list[dict[str, Any]]) -> None:
    if not history:
        return
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(history[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    atomic_write_text(run_dir / "history.csv", buf.getvalue())


#: epochs timed before the schedule is first fitted to the deadline (the first includes
#: warm-up), and the recent epochs whose median predicts the next ones
REFIT_AFTER = 3


def epochs_that_fit(
    elapsed_s: float, epoch_walls: list[float], deadline_s: float, planned: int
) -> int:
    """The planned epochs, or fewer when the epochs measured so far say they would end past the
    deadline: the schedule then anneals before the budget runs out instead of being cut
    mid-decay (a planner's estimate can be low: a shared machine's speed moves, and it does not
    time validation or weight averaging; AdrenalMNIST3D epochs once ran 25 % over it).

    ``epoch_walls`` are whole epochs, checkpointing included: timing only the training and
    validation let a CI run plan one epoch more than it could finish. The recent ones count: a
    machine that slows down mid-run is seen within two epochs."""
    epoch_s = statistics.median(epoch_walls[-REFIT_AFTER:])
    left = int((deadline_s - elapsed_s) / max(epoch_s, 1e-9))
    return max(len(epoch_walls) + 1, min(planned, len(epoch_walls) + left))


def _out_of_time(elapsed_s: float, epoch_walls: list[float], deadline_s: float | None) -> bool:
    """Whether another epoch would end past the deadline, at the median epoch time so far (a
    planner's estimate can be low: a 600 s plan ran 656 s when only a spent budget stopped it)."""
    if deadline_s is None:
        return False
    epoch_s = statistics.median(epoch_walls[-REFIT_AFTER:]) if epoch_walls else 0.0
    return elapsed_s + epoch_s > deadline_s


class Trainer:
    """Train ``plan`` on ``data`` into ``run_dir`` (checkpoints/, history.csv, tensorboard/)."""

    def __init__(
        self,
        plan: Plan,
        data: PreparedData,
        run_dir: str | Path,
        *,
        device: str | None = None,
        on_event: Event | None = None,
        deadline_s: float | None = None,
        tensorboard: bool = True,
        init_model: MedlensModel | None = None,
        train_split: str = "train",
        val_split: str = "val",
    ):
        self.plan = plan
        self.data = data
        self.run_dir = Path(run_dir)
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.device = pick_device(device)
        self.on_event = on_event or (lambda kind, info: None)
        self.deadline_s = deadline_s
        self.tensorboard = tensorboard
        self.train_idx = data.indices(train_split)
        self.val_idx = data.indices(val_split)
        if len(self.train_idx) < 2 or len(self.val_idx) < 1:
            raise ConfigError(
                f"need training and validation rows; found {len(self.train_idx)} {train_split!r} "
                f"and {len(self.val_idx)} {val_split!r}",
                fix="split the data by patient first (`medlens data split`)",
            )
        torch.manual_seed(plan.seed)
        self.model = (init_model or build_model(plan)).to(self.device)
        self.loss_fn = make_loss(
            plan.loss,
            class_weights=plan.class_weights,
            label_smoothing=plan.label_smoothing,
            focal_gamma=plan.focal_gamma,
        ).to(self.device)
        self.optimizer = _optimizer(plan, self.model)
        self.steps_per_epoch = self._steps_per_epoch()
        self._set_schedule(plan.epochs)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: self._multiplier(step)
        )
        self.amp_dtype = autocast_dtype(self.device, plan.mixed_precision)
        # float16 needs loss scaling against underflow; bfloat16 has float32's range
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.augment = plan.augment()
        self.average = WeightAverage(self.model, plan.ema_decay) if plan.ema_decay > 0 else None

    @property
    def eval_model(self) -> nn.Module:
        """The model validation scores and the best checkpoint keeps (the average, if any)."""
        return self.average.model if self.average is not None else self.model

    def _set_schedule(self, epochs: int) -> None:
        """The learning-rate schedule over ``epochs`` (the plan's, or fewer: _fit_to_deadline)."""
        self.epochs = epochs
        self._multiplier = lr_multiplier(
            self.plan.schedule,
            epochs * self.steps_per_epoch,
            int(self.plan.warmup_epochs * self.steps_per_epoch),
        )

    def _fit_to_deadline(self, elapsed_s: float, epoch_walls: list[float]) -> None:
        """Shorten the schedule when the epochs so far say it ends past the deadline; checked
        after every epoch from the third on, because a shared machine can slow down later."""
        if self.deadline_s is None or len(epoch_walls) < REFIT_AFTER:
            return
        epochs = epochs_that_fit(elapsed_s, epoch_walls, self.deadline_s, self.epochs)
        if epochs < self.epochs:
            log.info("the deadline affords %d of %d planned epochs", epochs, self.epochs)
            self._set_schedule(epochs)

    @property
    def min_epochs(self) -> int:
        return min(self.plan.min_epochs, self.epochs // 2)

    def _steps_per_epoch(self) -> int:
        n, bs = len(self.train_idx), self.plan.batch_size
        return n // bs + (1 if n % bs > 1 else 0)  # a final batch of one would break batch norm

    # -- checkpoints ------------------------------------------------------------------------------
    def _state(
        self, epoch: int, best: dict[str, Any], history: list[dict[str, Any]]
    ) -> dict[str, Any]:
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": epoch,
            "epochs": self.epochs,
            "best": best,
            "history": history,
            "plan": self.plan.to_json(),
        }
        if self.average is not None:
            state["average"] = self.average.model.state_dict()
        return state

    def _resume(self) -> tuple[int, dict[str, Any], list[dict[str, Any]]]:
        path = self.ckpt_dir / CHECKPOINT
        state = load_state(path, kind="checkpoint")
        if state.get("plan") != self.plan.to_json():
            raise ArtifactError(
                "this checkpoint was written for a different plan",
                path=path,
                fix="resume with the run's own plan.json, or train into a new --out folder",
            )
        self._set_schedule(int(state.get("epochs", self.plan.epochs)))
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            if state.get("scaler"):
                self.scaler.load_state_dict(state["scaler"])
            if self.average is not None:
                self.average.model.load_state_dict(state["average"])
        except (RuntimeError, KeyError, ValueError) as err:
            raise ArtifactError(f"checkpoint does not fit the model ({err})", path=path) from None
        return int(state["epoch"]), dict(state["best"]), list(state["history"])

    # -- loop -------------------------------------------------------------------------------------
    def _train_epoch(self, epoch: int) -> float:
        seed = self.plan.seed * 100_003 + epoch
        torch.manual_seed(seed)  # dropout
        generator = torch.Generator().manual_seed(seed)
        self.model.train()
        mixing = np.random.default_rng(seed) if self.plan.mixup > 0 else None
        with guard_small_convolutions(self.model, self.amp_dtype):
            return self._train_batches(epoch, generator, mixing)

    def _train_batches(
        self, epoch: int, generator: torch.Generator, mixing: np.random.Generator | None
    ) -> float:
        total, count, step = 0.0, 0, 0
        multilabel = self.data.labels.multilabel
        for idx, images in self.data.cached.batches(
            self.train_idx, self.plan.batch_size, generator=generator
        ):
            if len(idx) < 2:
                continue
            x = self.augment(images, generator=generator).images.to(self.device)
            target = torch.from_numpy(self.data.targets[idx]).to(self.device)
            target = target.float() if multilabel else target
            pairing = self._mixup_pairing(mixing, len(idx))
            if pairing is not None:
                lam, partner = pairing
                x = lam * x + (1 - lam) * x[partner]
            try:
                with autocast(self.device, self.amp_dtype):
                    logits = self.model(x).float()
                loss = self.loss_fn(logits, target)
                if pairing is not None:  # each image's loss, weighted as its pixels were
                    loss = lam * loss + (1 - lam) * self.loss_fn(logits, target[partner])
                if not torch.isfinite(loss):
                    raise ConfigError(
                        f"the loss became {loss.item()} in epoch {epoch + 1}",
                        fix="lower the learning rate (--set lr=...) or check the input intensities",
                    )
                self.optimizer.zero_grad(set_to_none=True)
                self.scaler.scale(loss).backward()
            except RuntimeError as err:  # torch.cuda.OutOfMemoryError is a RuntimeError
                raise _out_of_memory(err, self.plan.batch_size) from None
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            if self.average is not None:
                self.average.update(self.model, self.scheduler.last_epoch)
            total += loss.item() * len(idx)
            count += len(idx)
            step += 1
            self.on_event("step", {"epoch": epoch, "step": step, "loss": total / count})
        return total / max(1, count)

    def _mixup_pairing(
        self, rng: np.random.Generator | None, n: int
    ) -> tuple[float, torch.Tensor] | None:
        """Mixup (Zhang et al. 2018): a weight >= 0.5 from Beta(alpha, alpha), so each mixed
        image stays mostly itself, and the partner of each image in the batch."""
        if rng is None:
            return None
        lam = float(rng.beta(self.plan.mixup, self.plan.mixup))
        partner = torch.from_numpy(rng.permutation(n)).to(self.device)
        return max(lam, 1.0 - lam), partner

    def _validate(self) -> tuple[float, float]:
        images = self.data.images(self.val_idx)
        logits = batched_logits(
            self.eval_model, images, batch_size=self.plan.batch_size * 2, device=self.device
        )
        order = np.sort(self.val_idx)
        target = torch.from_numpy(self.data.targets[order])
        with torch.no_grad():
            t = target.float() if self.data.labels.multilabel else target
            val_loss = float(self.loss_fn.cpu()(torch.from_numpy(logits), t))
        self.loss_fn.to(self.device)
        return selection_score(self.data, order, logits), val_loss

    def fit(self, *, resume: bool = False) -> TrainResult:
        """Train to the plan's epochs (or early stopping) and return the best-validation model."""
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        start_epoch, history = 0, list[dict[str, Any]]()
        best: dict[str, Any] = {"score": -math.inf, "loss": math.inf, "epoch": -1, "bad_epochs": 0}
        if resume:
            for folder in (self.run_dir, self.ckpt_dir):
                remove_partial_writes(folder)
        if resume and (self.ckpt_dir / CHECKPOINT).exists():
            start_epoch, best, history = self._resume()
            log.info("resuming after epoch %d", start_epoch)
        writer = self._tensorboard()
        started = time.monotonic()
        stopped = "completed"
        epoch = start_epoch
        epoch_walls: list[float] = []  # this call's epochs, checkpointing included
        while epoch < self.epochs:
            if epoch >= self.min_epochs and best["bad_epochs"] >= self.plan.patience:
                stopped = "early_stopping"
                break
            self.on_event(
                "epoch_start",
                {"epoch": epoch, "epochs": self.epochs, "steps": self.steps_per_epoch},
            )
            tic = time.monotonic()
            train_loss = self._train_epoch(epoch)
            val_auc, val_loss = self._validate()
            score = -val_loss if math.isnan(val_auc) else val_auc
            improved = is_improvement(score, val_loss, best)
            if improved:
                best = {"score": score, "loss": val_loss, "epoch": epoch, "bad_epochs": 0}
                save_weights(
                    self.ckpt_dir / BEST, self.eval_model.state_dict(), {"epoch": str(epoch)}
                )
            else:
                best["bad_epochs"] += 1
            row = {
                "epoch": epoch + 1,
                "train_loss": round(train_loss, 6),
                "val_loss": round(val_loss, 6),
                "val_auc": round(val_auc, 6),
                "lr": self.optimizer.param_groups[0]["lr"],
                "seconds": round(time.monotonic() - tic, 2),
                "best": improved,
            }
            history.append(row)
            save_state(
                self.ckpt_dir / CHECKPOINT, self._state(epoch + 1, best, history), kind="checkpoint"
            )
            _write_history(self.run_dir, history)
            if writer is not None:
                for key in ("train_loss", "val_loss", "val_auc", "lr"):
                    writer.add_scalar(key, row[key], epoch + 1)
                writer.flush()
            self.on_event("epoch_end", row)
            epoch += 1
            epoch_walls.append(time.monotonic() - tic)
            self._fit_to_deadline(time.monotonic() - started, epoch_walls)
            more = epoch < self.epochs
            if more and _out_of_time(time.monotonic() - started, epoch_walls, self.deadline_s):
                stopped = "deadline"
                log.warning("stopping after epoch %d: the time budget is spent", epoch)
                break
        if writer is not None:
            writer.close()
        self.model.load_state_dict(load_weights(self.ckpt_dir / BEST))
        return TrainResult(
            self.model,
            history,
            int(best["epoch"]) + 1,
            float(best["score"]),
            stopped,
            round(time.monotonic() - started, 1),
        )

    def _tensorboard(self) -> Any:
        if not self.tensorboard:
            return None
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(log_dir=str(self.run_dir / "tensorboard"))
