"""Batched forward passes and logits -> probabilities (shared by training, evaluation, inference)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from medlens.models.base import MedlensModel
from medlens.models.tta import NO_TTA, TTA


@torch.no_grad()
def batched_logits(
    model: nn.Module,
    images: NDArray[np.float32] | torch.Tensor,
    *,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    tta: TTA = NO_TTA,
) -> NDArray[np.float32]:
    """Logits (N, K) in eval mode, averaged over the views ``tta`` makes of each image."""
    model.eval()
    out = []
    per_chunk = max(1, batch_size // tta.count(images.ndim - 2))  # views share the batch
    for start in range(0, len(images), per_chunk):
        chunk = images[start : start + per_chunk]
        x = chunk if isinstance(chunk, torch.Tensor) else torch.from_numpy(np.asarray(chunk))
        x = x.to(device, torch.float32)
        logits = tta.mean(model(tta.views(x)).float(), len(x))
        out.append(logits.cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


@torch.no_grad()
def batched_outputs(
    members: Sequence[MedlensModel],
    images: NDArray[np.float32],
    *,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    tta: TTA = NO_TTA,
) -> tuple[NDArray[np.float32], NDArray[np.float64]]:
    """The members' mean logits (N, K) and their pooled features side by side (N, sum of D),
    both averaged over the views ``tta`` makes of each image, from one forward pass."""
    model = LogitsAndEmbedding(members).eval()
    logits, embeddings = [], []
    per_chunk = max(1, batch_size // tta.count(images.ndim - 2))
    for start in range(0, len(images), per_chunk):
        x = torch.from_numpy(np.ascontiguousarray(images[start : start + per_chunk]))
        x = x.to(device, torch.float32)
        found, pooled = model(tta.views(x))
        logits.append(tta.mean(found.float(), len(x)).cpu().numpy())
        embeddings.append(tta.mean(pooled, len(x)).double().cpu().numpy())
    if not logits:
        return np.zeros((0, 0), np.float32), np.zeros((0, 0))
    return np.concatenate(logits), np.concatenate(embeddings)


def batched_embeddings(
    members: Sequence[MedlensModel],
    images: NDArray[np.float32],
    *,
    device: str | torch.device = "cpu",
    tta: TTA = NO_TTA,
) -> NDArray[np.float64]:
    """The pooled features of :func:`batched_outputs`."""
    return batched_outputs(members, images, device=device, tta=tta)[1]


def to_probabilities(
    logits: NDArray[Any], *, multilabel: bool, temperature: float = 1.0
) -> NDArray[np.float64]:
    """Softmax (single-label) or sigmoid (multi-label) of logits / temperature."""
    z = np.asarray(logits, np.float64) / temperature
    if multilabel:
        out: NDArray[np.float64] = 1.0 / (1.0 + np.exp(-z))
        return out
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    probs: NDArray[np.float64] = e / e.sum(axis=1, keepdims=True)
    return probs


class MeanLogits(nn.Module):
    """An ensemble as one module: the mean of its members' logits (what artifacts predict)."""

    def __init__(self, members: Sequence[nn.Module]):
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x) for m in self.members]).mean(dim=0)


class LogitsAndEmbedding(nn.Module):
    """An ensemble's mean logits and its members' pooled features side by side: the second
    output is what ``unlike_training`` measures in the model's own terms
    (:mod:`medlens.data.typicality`)."""

    def __init__(self, members: Sequence[MedlensModel]):
        super().__init__()
        self.members: Sequence[MedlensModel] = nn.ModuleList(members)  # type: ignore[assignment]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = [m.embed(x).flatten(1) for m in self.members]
        logits = [m.head(e) for m, e in zip(self.members, pooled, strict=True)]
        return torch.stack(logits).mean(dim=0), torch.cat(pooled, dim=1)


def combined(members: Sequence[nn.Module]) -> nn.Module:
    """The single member itself, or a :class:`MeanLogits` of several."""
    return members[0] if len(members) == 1 else MeanLogits(members)
