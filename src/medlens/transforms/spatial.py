"""Spatial preprocessing that keeps the geometry right: resample, resize, crop/pad, reorient, ROI crop.

Each step updates spacing/origin/direction so the world position of every voxel is preserved.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from medlens.errors import ConfigError, DataError
from medlens.io.image import MedicalImage
from medlens.transforms.base import Transform, register

_LETTER_VECTORS = {
    "L": (0, 1.0),
    "R": (0, -1.0),
    "P": (1, 1.0),
    "A": (1, -1.0),
    "S": (2, 1.0),
    "I": (2, -1.0),
}


def _check_len(values: Sequence[Any], image: MedicalImage, what: str) -> None:
    if len(values) != image.spatial_dims:
        raise ConfigError(
            f"{what} {tuple(values)} needs {image.spatial_dims} values for a {image.spatial_dims}D image"
        )


def _zoom(
    image: MedicalImage,
    scale: NDArray[np.float64],
    offset: NDArray[np.float64],
    shape: tuple[int, ...],
    order: int,
) -> NDArray[Any]:
    """Sample each channel at input index ``scale * out + offset`` (anti-aliased when shrinking)."""
    shrinking = order > 0 and bool(np.any(scale > 1.5))
    sigma = np.maximum((scale - 1) / 2, 0) if shrinking else np.zeros_like(scale)
    if order == 1:  # also growing: 28 -> 224 px 4.5x and 28^3 -> 64^3 20x faster than scipy
        operators = [
            _AxisOperator.build(n, s, o, m, g)
            for n, s, o, m, g in zip(image.spatial_shape, scale, offset, shape, sigma, strict=True)
        ]
        return np.stack([_apply_separable(c.astype(np.float32), operators) for c in image.array])
    out = []
    for channel in image.array:
        data = channel.astype(np.float32) if order > 0 else channel
        if shrinking:
            data = ndimage.gaussian_filter(data, sigma=sigma)
        out.append(
            ndimage.affine_transform(
                data, scale, offset=offset, output_shape=shape, order=order, mode="nearest"
            )
        )
    return np.stack(out)


@dataclass(frozen=True)
class _AxisOperator:
    """scipy's ``gaussian_filter`` (reflect mode, truncate 4) followed by
    ``affine_transform(order=1, mode="nearest")`` along one axis, as ``taps`` (index, weight)
    pairs per output sample: ``out[i] = sum_t weight[i, t] * data[index[i, t]]``.

    Applied axis by axis it gives the same values as filtering the whole array and sampling it,
    but filters only where the samples need it: shrinking a 2k-pixel radiograph to 28 px took
    0.7 s the whole-array way (a 277-tap filter over every pixel) and takes milliseconds here.
    """

    index: NDArray[np.int64]  # (m, taps)
    weight: NDArray[np.float32]  # (m, taps)
    n: int

    #: above this many taps a dense (m, n) matmul beats gathering tap by tap
    GATHER_TAPS = 16

    @classmethod
    def build(cls, n: int, scale: float, offset: float, m: int, sigma: float) -> _AxisOperator:
        x = np.clip(scale * np.arange(m) + offset, 0, n - 1)
        low = np.floor(x).astype(np.int64)
        frac = x - low
        radius = int(4.0 * sigma + 0.5) if sigma > 0 else 0
        k = np.arange(-radius, radius + 1)
        kernel = np.exp(-0.5 * (k / sigma) ** 2) if sigma > 0 else np.ones(1)
        kernel /= kernel.sum()
        index, weight = [], []
        for start, w in ((low, 1 - frac), (np.minimum(low + 1, n - 1), frac)):
            source = (start[:, None] + k[None, :]) % (2 * n)  # reflect: d c b a | a b c d
            index.append(np.where(source >= n, 2 * n - 1 - source, source))
            weight.append(w[:, None] * kernel)
        return cls(np.hstack(index), np.hstack(weight).astype(np.float32), n)

    @property
    def m(self) -> int:
        return int(self.index.shape[0])

    def dense(self) -> NDArray[np.float32]:
        matrix = np.zeros((self.m, self.n), np.float64)
        rows = np.broadcast_to(np.arange(self.m)[:, None], self.index.shape)
        np.add.at(matrix, (rows, self.index), self.weight)
        return matrix.astype(np.float32)

    def apply(self, data: NDArray[Any], axis: int) -> NDArray[Any]:
        if self.index.shape[1] <= self.GATHER_TAPS:  # linear sampling, little or no blur
            shape = [1] * data.ndim
            shape[axis] = self.m
            out: NDArray[Any] | None = None
            for t in range(self.index.shape[1]):
                term = np.take(data, self.index[:, t], axis)
                term *= self.weight[:, t].reshape(shape)
                if out is None:
                    out = term
                else:
                    out += term
            assert out is not None
            return out
        matrix = self.dense()  # a wide blur: BLAS does the sums; no axis is moved (a copy)
        if axis == data.ndim - 1:
            product: NDArray[Any] = data @ matrix.T
        elif axis == data.ndim - 2:
            product = matrix @ data
        else:  # the first of three axes
            product = (matrix @ data.reshape(data.shape[0], -1)).reshape(self.m, *data.shape[1:])
        return product


def _apply_separable(data: NDArray[Any], operators: list[_AxisOperator]) -> NDArray[Any]:
    """One operator per axis, the axis that shrinks most first (the least work after)."""
    for axis in sorted(range(data.ndim), key=lambda a: operators[a].m / operators[a].n):
        data = operators[axis].apply(data, axis)
    return np.ascontiguousarray(data, dtype=np.float32)


@register("resample")
@dataclass(frozen=True)
class Resample(Transform):
    """Resample to ``spacing`` (mm); the first voxel centre stays where it is.

    Use ``order=0`` for label maps.
    """

    spacing: tuple[float, ...]
    order: int = 1

    def __call__(self, image: MedicalImage) -> MedicalImage:
        _check_len(self.spacing, image, "spacing")
        if any(s <= 0 for s in self.spacing):
            raise ConfigError(f"spacing must be positive, got {self.spacing}")
        old, new = np.asarray(image.spacing), np.asarray(self.spacing, dtype=np.float64)
        extent = (np.asarray(image.spatial_shape) - 1) * old
        shape = tuple(int(n) for n in np.floor(extent / new + 1e-6).astype(int) + 1)
        array = _zoom(image, new / old, np.zeros(len(shape)), shape, self.order)
        return image.with_array(array, spacing=tuple(new))


@register("resize")
@dataclass(frozen=True)
class Resize(Transform):
    """Resize to ``shape`` voxels covering the same field of view (spacing changes accordingly)."""

    shape: tuple[int, ...]
    order: int = 1

    def __call__(self, image: MedicalImage) -> MedicalImage:
        _check_len(self.shape, image, "shape")
        old_shape = np.asarray(image.spatial_shape, dtype=np.float64)
        new_shape = np.asarray(self.shape, dtype=np.float64)
        if np.any(new_shape < 1):
            raise ConfigError(f"shape must be positive, got {self.shape}")
        if np.array_equal(old_shape, new_shape):
            return image
        scale = old_shape / new_shape
        offset = 0.5 * scale - 0.5  # voxel-area alignment: the field of view is unchanged
        array = _zoom(image, scale, offset, tuple(self.shape), self.order)
        spacing = np.asarray(image.spacing) * scale
        return image.with_array(array, spacing=tuple(spacing), origin=_shift_origin(image, offset))


def _shift_origin(
    image: MedicalImage, index_offset: NDArray[Any] | Sequence[float]
) -> tuple[float, float, float]:
    """Origin of an image whose first voxel sits at (fractional) index ``index_offset``."""
    nd = image.spatial_dims
    move = image.direction[:, :nd] @ (
        np.asarray(image.spacing) * np.asarray(index_offset, dtype=np.float64)
    )
    o = np.asarray(image.origin) + move
    return float(o[0]), float(o[1]), float(o[2])


def crop(
    image: MedicalImage,
    starts: Sequence[int] | NDArray[np.int64],
    stops: Sequence[int] | NDArray[np.int64],
) -> MedicalImage:
    """Crop to ``[starts, stops)`` per spatial axis, keeping world positions."""
    slices = tuple(slice(int(a), int(b)) for a, b in zip(starts, stops, strict=True))
    return image.with_array(
        image.array[(slice(None), *slices)].copy(), origin=_shift_origin(image, starts)
    )


def pad(
    image: MedicalImage, before: Sequence[int], after: Sequence[int], value: float | None = None
) -> MedicalImage:
    """Pad with ``value`` (default: the image minimum), keeping world positions."""
    fill = float(image.array.min()) if value is None else value
    widths = [(0, 0)] + [(int(b), int(a)) for b, a in zip(before, after, strict=True)]
    array = np.pad(image.array, widths, mode="constant", constant_values=fill)
    return image.with_array(array, origin=_shift_origin(image, [-int(b) for b in before]))


@register("crop_or_pad")
@dataclass(frozen=True)
class CropOrPad(Transform):
    """Centre-crop and/or pad to ``shape`` (padding with ``value`` or the image minimum)."""

    shape: tuple[int, ...]
    value: float | None = None

    def __call__(self, image: MedicalImage) -> MedicalImage:
        _check_len(self.shape, image, "shape")
        current = np.asarray(image.spatial_shape)
        target = np.asarray(self.shape)
        excess = np.maximum(current - target, 0)
        starts = excess // 2
        image = crop(image, starts, starts + np.minimum(current, target))
        missing = np.maximum(target - current, 0)
        if missing.any():
            image = pad(image, missing // 2, missing - missing // 2, self.value)
        return image


@register("reorient")
@dataclass(frozen=True)
class Reorient(Transform):
    """Flip/permute axes so that axis ``d`` increases towards ``codes[d]`` (e.g. ``"LPS"``, ``"RAS"``).

    Only whole-voxel flips and transposes: no interpolation, world positions unchanged.
    """

    codes: str = "LPS"

    def __call__(self, image: MedicalImage) -> MedicalImage:
        codes = self.codes.upper()
        nd = image.spatial_dims
        if len(codes) != nd or any(c not in _LETTER_VECTORS for c in codes):
            raise ConfigError(f"orientation {self.codes!r} must be {nd} letters from L/R, P/A, S/I")
        targets = np.zeros((3, nd))
        for t, letter in enumerate(codes):
            axis, sign = _LETTER_VECTORS[letter]
            targets[axis, t] = sign
        if len({_LETTER_VECTORS[c][0] for c in codes}) != nd:
            raise ConfigError(f"orientation {self.codes!r} names the same anatomical axis twice")
        # Greedy assignment by strongest alignment: oblique axes go to their closest code.
        score = image.direction[:, :nd].T @ targets  # (source, target)
        perm = [-1] * nd
        for _ in range(nd):
            masked = np.abs(score).copy()
            masked[[s for s in perm if s >= 0], :] = -1
            masked[:, [t for t in range(nd) if perm[t] >= 0]] = -1
            src, tgt = np.unravel_index(int(np.argmax(masked)), masked.shape)
            perm[int(tgt)] = int(src)
        flips = [bool(score[perm[t], t] < 0) for t in range(nd)]
        array = np.transpose(image.array, [0] + [p + 1 for p in perm])
        first = [image.spatial_shape[perm[t]] - 1 if flips[t] else 0 for t in range(nd)]
        origin_index = np.zeros(nd)
        for t in range(nd):
            origin_index[perm[t]] = first[t]
        direction = image.direction.copy()
        for t in range(nd):
            direction[:, t] = image.direction[:, perm[t]] * (-1 if flips[t] else 1)
        flip_axes = tuple(t + 1 for t in range(nd) if flips[t])
        if flip_axes:
            array = np.flip(array, axis=flip_axes)
        return image.with_array(
            np.ascontiguousarray(array),
            spacing=tuple(image.spacing[p] for p in perm),
            origin=_shift_origin(image, origin_index),
            direction=direction,
        )


def bounding_box(
    mask: NDArray[Any], margin: int = 0
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """``(starts, stops)`` of the non-zero voxels of a spatial mask, grown by ``margin``."""
    nonzero = np.argwhere(mask)
    if nonzero.size == 0:
        raise DataError("the mask / threshold selects no voxel; nothing to crop to")
    starts = np.maximum(nonzero.min(axis=0) - margin, 0)
    stops = np.minimum(nonzero.max(axis=0) + 1 + margin, mask.shape)
    return starts.astype(np.int64), stops.astype(np.int64)


@register("crop_foreground")
@dataclass(frozen=True)
class CropForeground(Transform):
    """Crop to the voxels above ``threshold`` in any channel (default: above the minimum)."""

    threshold: float | None = None
    margin: int = 0

    def __call__(self, image: MedicalImage) -> MedicalImage:
        threshold = float(image.array.min()) if self.threshold is None else self.threshold
        starts, stops = bounding_box(np.any(image.array > threshold, axis=0), self.margin)
        return crop(image, starts, stops)


def crop_to_mask(
    image: MedicalImage, mask: MedicalImage, margin: int = 0
) -> tuple[MedicalImage, MedicalImage]:
    """Crop an image and its mask (same grid) to the mask's bounding box plus ``margin`` voxels."""
    if mask.spatial_shape != image.spatial_shape:
        raise DataError(
            f"mask shape {mask.spatial_shape} differs from image shape {image.spatial_shape}"
        )
    starts, stops = bounding_box(np.any(mask.array != 0, axis=0), margin)
    return crop(image, starts, stops), crop(mask, starts, stops)
