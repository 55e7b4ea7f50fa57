"""Training augmentation on whole batches of tensors ``(B, C, *spatial)``, 2D and 3D.

All spatial operations (flip, rotation/scale/translation, elastic) are fused into a single
sampling grid per batch, so an image costs one ``grid_sample`` whatever the number of steps.
Masks are resampled with the same grid (nearest neighbour) and boxes are carried through it.
Randomness comes only from the ``torch.Generator`` passed in: the same seed gives the same batch.

Example:
    >>> aug = BatchAugment(spatial_dims=2, rotate_deg=10, flip_axes=(1,))
    >>> gen = torch.Generator().manual_seed(0)
    >>> out = aug(torch.rand(8, 1, 64, 64), generator=gen)
    >>> out.images.shape
    torch.Size([8, 1, 64, 64])
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from medlens.errors import ConfigError


@dataclass
class AugmentedBatch:
    """Augmented images, and masks/boxes when given (boxes: per-sample ``(N, 2*D)`` in voxel
    index coordinates ``(min_0, ..., max_0, ...)``; boxes pushed fully out of view become NaN)."""

    images: Tensor
    masks: Tensor | None = None
    boxes: list[Tensor] | None = None


def _uniform(gen: torch.Generator, n: int, low: float, high: float) -> Tensor:
    return low + (high - low) * torch.rand(n, generator=gen)


@dataclass
class BatchAugment:
    """Random spatial and intensity augmentation applied per sample within a batch.

    Args:
        spatial_dims: 2 or 3.
        flip_axes: spatial axes (0-based) that may be flipped, each with probability ``flip_prob``.
        rotate_deg: maximum absolute rotation; in 3D about each axis.
        scale: maximum relative zoom (0.1 = 0.9x..1.1x).
        translate: maximum shift as a fraction of the image size.
        elastic_alpha: displacement amplitude (fraction of the size); 0 disables elastic.
        elastic_grid: control points per axis of the smooth random displacement field.
        gamma: maximum |log gamma| for a random gamma curve on min-max-normalised intensities.
        brightness, contrast: maximum additive / relative multiplicative change.
        noise_std: maximum standard deviation of additive Gaussian noise.
        blur_sigma: maximum Gaussian blur sigma (voxels), applied with probability ``prob``.
        prob: probability of each non-flip operation per sample.
    """

    spatial_dims: int = 2
    flip_axes: tuple[int, ...] = ()
    flip_prob: float = 0.5
    rotate_deg: float = 0.0
    scale: float = 0.0
    translate: float = 0.0
    elastic_alpha: float = 0.0
    elastic_grid: int = 4
    gamma: float = 0.0
    brightness: float = 0.0
    contrast: float = 0.0
    noise_std: float = 0.0
    blur_sigma: float = 0.0
    prob: float = 1.0
    _checked: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        if self.spatial_dims not in (2, 3):
            raise ConfigError(f"spatial_dims must be 2 or 3, got {self.spatial_dims}")
        if any(a < 0 or a >= self.spatial_dims for a in self.flip_axes):
            raise ConfigError(
                f"flip_axes {self.flip_axes} must be spatial axes 0..{self.spatial_dims - 1}"
            )

    @property
    def has_spatial(self) -> bool:
        return bool(
            self.flip_axes or self.rotate_deg or self.scale or self.translate or self.elastic_alpha
        )

    def __call__(
        self,
        images: Tensor,
        masks: Tensor | None = None,
        boxes: list[Tensor] | None = None,
        *,
        generator: torch.Generator,
    ) -> AugmentedBatch:
        if images.ndim != self.spatial_dims + 2:
            raise ConfigError(
                f"expected a (B, C, {'D, ' if self.spatial_dims == 3 else ''}H, W) batch, got {tuple(images.shape)}"
            )
        batch = images.shape[0]
        out_masks, out_boxes = masks, boxes
        if self.has_spatial:
            grid = self._sampling_grid(batch, images.shape[2:], generator, images.dtype)
            images = F.grid_sample(
                images, grid, mode="bilinear", padding_mode="border", align_corners=False
            )
            if masks is not None:
                warped = F.grid_sample(
                    masks.float(), grid, mode="nearest", padding_mode="zeros", align_corners=False
                )
                out_masks = warped.to(masks.dtype)
            if boxes is not None:
                out_boxes = _warp_boxes(boxes, grid, images.shape[2:])
        images = self._intensity(images, generator)
        return AugmentedBatch(images, out_masks, out_boxes)

    # -- spatial ----------------------------------------------------------------------------------
    def _sampling_grid(
        self, batch: int, size: torch.Size, gen: torch.Generator, dtype: torch.dtype
    ) -> Tensor:
        nd = self.spatial_dims
        theta = torch.eye(nd + 1).repeat(batch, 1, 1)[:, :nd, :]
        active = torch.rand(batch, generator=gen) < self.prob
        # grid_sample's coordinates run (x, y[, z]) = reversed spatial axes.
        for axis in self.flip_axes:
            flip = torch.rand(batch, generator=gen) < self.flip_prob
            col = nd - 1 - axis
            theta[:, :, col] = theta[:, :, col] * torch.where(flip, -1.0, 1.0)[:, None]
        if self.rotate_deg or self.scale or self.translate:
            affine = self._random_affine(batch, gen)
            affine[~active] = torch.eye(nd + 1)[:nd]
            theta = affine[:, :, :nd] @ theta + torch.cat(
                [torch.zeros(batch, nd, nd), affine[:, :, nd:]], 2
            )
        grid = F.affine_grid(theta, [batch, 1, *size], align_corners=False)
        if self.elastic_alpha:
            coarse = (
                torch.randn(batch, nd, *([self.elastic_grid] * nd), generator=gen)
                * self.elastic_alpha
            )
            coarse = coarse * active.view(-1, *([1] * (nd + 1)))
            mode = "bilinear" if nd == 2 else "trilinear"
            field_ = F.interpolate(coarse, size=tuple(size), mode=mode, align_corners=True)
            grid = grid + field_.movedim(1, -1) * 2.0  # fraction of size -> [-1, 1] units
        return grid.to(dtype)

    def _random_affine(self, batch: int, gen: torch.Generator) -> Tensor:
        nd = self.spatial_dims
        angles = (
            _uniform(gen, batch * (1 if nd == 2 else 3), -self.rotate_deg, self.rotate_deg)
            * math.pi
            / 180
        )
        if nd == 2:
            c, s = torch.cos(angles), torch.sin(angles)
            rot = torch.stack([torch.stack([c, -s], 1), torch.stack([s, c], 1)], 1)
        else:
            rot = _rotation_3d(angles.view(batch, 3))
        zoom = _uniform(gen, batch, 1.0 - self.scale, 1.0 + self.scale)
        shift = _uniform(gen, batch * nd, -self.translate, self.translate).view(batch, nd, 1) * 2.0
        return torch.cat([rot / zoom.view(-1, 1, 1), shift], dim=2)

    # -- intensity --------------------------------------------------------------------------------
    def _intensity(self, images: Tensor, gen: torch.Generator) -> Tensor:
        batch = images.shape[0]
        shape = (batch,) + (1,) * (images.ndim - 1)

        def chosen() -> Tensor:
            return (torch.rand(batch, generator=gen) < self.prob).view(shape)

        if self.gamma:
            low = images.amin(dim=tuple(range(1, images.ndim)), keepdim=True)
            high = images.amax(dim=tuple(range(1, images.ndim)), keepdim=True)
            span = (high - low).clamp_min(1e-8)
            gamma = torch.exp(_uniform(gen, batch, -self.gamma, self.gamma)).view(shape)
            curved = ((images - low) / span).clamp(0, 1) ** gamma * span + low
            images = torch.where(chosen(), curved, images)
        if self.contrast or self.brightness:
            mean = images.mean(dim=tuple(range(1, images.ndim)), keepdim=True)
            factor = _uniform(gen, batch, 1 - self.contrast, 1 + self.contrast).view(shape)
            offset = _uniform(gen, batch, -self.brightness, self.brightness).view(shape)
            images = torch.where(chosen(), (images - mean) * factor + mean + offset, images)
        if self.blur_sigma:
            sigma = _uniform(gen, batch, 0.0, self.blur_sigma)
            images = torch.where(chosen(), _gaussian_blur(images, sigma), images)
        if self.noise_std:
            std = _uniform(gen, batch, 0.0, self.noise_std).view(shape)
            noise = torch.randn(images.shape, generator=gen, dtype=images.dtype) * std
            images = torch.where(chosen(), images + noise, images)
        return images


def _rotation_3d(angles: Tensor) -> Tensor:
    """Rotation matrices from per-sample (about-x, about-y, about-z) angles."""
    cx, cy, cz = torch.cos(angles).unbind(1)
    sx, sy, sz = torch.sin(angles).unbind(1)
    one, zero = torch.ones_like(cx), torch.zeros_like(cx)
    rx = torch.stack([one, zero, zero, zero, cx, -sx, zero, sx, cx], 1).view(-1, 3, 3)
    ry = torch.stack([cy, zero, sy, zero, one, zero, -sy, zero, cy], 1).view(-1, 3, 3)
    rz = torch.stack([cz, -sz, zero, sz, cz, zero, zero, zero, one], 1).view(-1, 3, 3)
    return rz @ ry @ rx


def _gaussian_blur(images: Tensor, sigma: Tensor) -> Tensor:
    """Separable Gaussian blur with a per-sample sigma (voxels); sigma 0 leaves a sample unchanged."""
    batch, channels = images.shape[:2]
    nd = images.ndim - 2
    radius = max(1, math.ceil(3 * float(sigma.max())))
    offsets = torch.arange(-radius, radius + 1, dtype=images.dtype)
    safe = sigma.clamp_min(1e-3).to(images.dtype)[:, None]
    kernels = torch.exp(-0.5 * (offsets[None, :] / safe) ** 2)
    kernels = kernels / kernels.sum(dim=1, keepdim=True)
    kernels = kernels.repeat_interleave(channels, dim=0)  # (B*C, K)
    out = images.reshape(1, batch * channels, *images.shape[2:])
    conv = F.conv2d if nd == 2 else F.conv3d
    for axis in range(nd):
        shape = [batch * channels, 1] + [1] * nd
        shape[2 + axis] = kernels.shape[1]
        out = conv(
            F.pad(out, _pad_spec(nd, axis, radius), mode="replicate"),
            kernels.view(shape),
            groups=batch * channels,
        )
    return out.reshape(images.shape)


def _pad_spec(nd: int, axis: int, radius: int) -> list[int]:
    spec = [0] * (2 * nd)
    index = 2 * (nd - 1 - axis)  # F.pad lists the last axis first
    spec[index] = spec[index + 1] = radius
    return spec


def _warp_boxes(boxes: list[Tensor], grid: Tensor, size: torch.Size) -> list[Tensor]:
    """Carry boxes through the sampling grid by rasterising each box and taking the new extent."""
    nd = len(size)
    out = []
    for b, sample_boxes in enumerate(boxes):
        if sample_boxes.numel() == 0:
            out.append(sample_boxes.clone())
            continue
        index = torch.stack(
            torch.meshgrid(*[torch.arange(n, dtype=torch.float32) for n in size], indexing="ij")
        )
        inside = []
        for box in sample_boxes.float():
            lo, hi = box[:nd].view(-1, *([1] * nd)), box[nd:].view(-1, *([1] * nd))
            inside.append(((index >= lo) & (index < hi)).all(dim=0))
        raster = torch.stack(inside)[None].float()  # (1, N, *size)
        warped = (
            F.grid_sample(raster, grid[b : b + 1], mode="nearest", align_corners=False)[0] > 0.5
        )
        rows = []
        for mask in warped:
            coords = torch.nonzero(mask)
            if coords.numel() == 0:
                rows.append(torch.full((2 * nd,), float("nan")))
            else:
                rows.append(
                    torch.cat([coords.min(0).values.float(), coords.max(0).values.float() + 1])
                )
        out.append(
            torch.stack(rows).to(
                sample_boxes.dtype if sample_boxes.is_floating_point() else torch.float32
            )
        )
    return out
