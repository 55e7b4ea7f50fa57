"""Test-time augmentation: the views of an image whose logits a prediction averages.

The planner turns on one-voxel shifts for inputs of at most 64 voxels a side: every offset in
{-1, 0, 1} per spatial axis (9 views in 2D, 27 in 3D), edges repeated as the training
augmentation's resampling does, so the score no longer rests on one placement of the image on a
coarse grid. Validation is rescored with the views after training (early stopping scores one
view: 27 per epoch would eat the budget), and temperature, threshold, test metrics and every later
prediction use the same views. Flips are opt-in: the default augmentation never flips, because
left and right can be the label. Evidence: benchmarks/bench_tta.py (README, classification).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray

from medlens.errors import ConfigError


@dataclass(frozen=True)
class TTA:
    """``flips``: spatial axes (0-based, negative from the end), one flipped view each;
    ``shift``: a radius in voxels, one view per offset in {-shift, 0, shift} on every axis."""

    flips: tuple[int, ...] = ()
    shift: int = 0

    def __post_init__(self) -> None:
        if self.shift < 0:
            raise ConfigError(
                f"tta_shift must be 0 (off) or a positive voxel count, got {self.shift}"
            )

    @classmethod
    def from_meta(cls, operating_point: dict[str, Any]) -> TTA:
        """What an artifact's operating point was fitted with (older artifacts: flips only)."""
        return cls(
            tuple(int(a) for a in operating_point.get("tta_flips", ())),
            int(operating_point.get("tta_shift", 0)),
        )

    def to_meta(self) -> dict[str, Any]:
        return {"tta_flips": list(self.flips), "tta_shift": self.shift}

    def offsets(self, spatial_dims: int) -> list[tuple[int, ...]]:
        steps = (-self.shift, 0, self.shift) if self.shift else (0,)
        return list(itertools.product(steps, repeat=spatial_dims))

    def count(self, spatial_dims: int) -> int:
        """Views per image (1: no augmentation)."""
        return len(self.offsets(spatial_dims)) + len(self.flips)

    def views(self, x: torch.Tensor) -> torch.Tensor:
        """(V * N, C, *spatial): the views of a batch, view-major."""
        nd = x.dim() - 2
        out = [_shifted(x, offset) for offset in self.offsets(nd)]
        out += [torch.flip(x, dims=(a if a < 0 else 2 + a,)) for a in self.flips]
        return out[0] if len(out) == 1 else torch.cat(out)

    def mean(self, logits: torch.Tensor, n: int) -> torch.Tensor:
        """(V * N, K) logits of :meth:`views` -> (N, K), the mean over views."""
        return logits.reshape(-1, n, *logits.shape[1:]).mean(dim=0)

    def run(
        self, forward: Any, batch: NDArray[np.float32], max_views: int = 256
    ) -> NDArray[np.float32]:
        """Mean logits of ``forward`` (numpy in, numpy out: an ONNX Runtime session) over the
        views of ``batch``, at most ``max_views`` inputs per call."""
        return self.run_outputs(lambda views: [forward(views)], batch, max_views)[0]

    def run_outputs(
        self, forward: Any, batch: NDArray[np.float32], max_views: int = 256
    ) -> list[NDArray[np.float32]]:
        """Like :meth:`run` for a ``forward`` that returns a list of outputs (all of an ONNX
        session's: logits, embedding), each averaged over the views."""
        per_call = max(1, max_views // self.count(batch.ndim - 2))
        parts: list[list[NDArray[np.float32]]] = []
        for start in range(0, len(batch), per_call):
            x = torch.from_numpy(np.ascontiguousarray(batch[start : start + per_call], np.float32))
            outputs = forward(self.views(x).numpy())
            parts.append(
                [self.mean(torch.from_numpy(np.asarray(o)), len(x)).numpy() for o in outputs]
            )
        return [np.concatenate(p).astype(np.float32, copy=False) for p in zip(*parts, strict=True)]


NO_TTA = TTA()


def _shifted(x: torch.Tensor, offset: tuple[int, ...]) -> torch.Tensor:
    """``x`` moved by ``offset`` voxels (out[i] = x[i - offset]), edge voxels repeated."""
    if not any(offset):
        return x
    pad: list[int] = []
    for k in reversed(offset):  # F.pad lists the last axis first
        pad += [max(k, 0), max(-k, 0)]
    padded = F.pad(x, pad, mode="replicate")
    index = [slice(None), slice(None)]
    index += [slice(max(-k, 0), max(-k, 0) + n) for k, n in zip(offset, x.shape[2:], strict=True)]
    return padded[tuple(index)]
