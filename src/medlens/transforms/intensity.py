"""Intensity preprocessing: CT windowing, normalisation, contrast enhancement, denoising."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from medlens.errors import ConfigError
from medlens.io.image import MedicalImage
from medlens.transforms.base import Transform, register

#: Named CT windows as (centre, width) in HU - the usual radiology reading windows.
WINDOW_PRESETS: dict[str, tuple[float, float]] = {
    "lung": (-600.0, 1500.0),
    "mediastinum": (50.0, 350.0),
    "abdomen": (40.0, 400.0),
    "liver": (60.0, 150.0),
    "bone": (400.0, 1800.0),
    "brain": (40.0, 80.0),
    "stroke": (32.0, 8.0),
    "soft_tissue": (50.0, 400.0),
}


def resolve_window(
    preset: str | None, center: float | None, width: float | None
) -> tuple[float, float]:
    """(centre, width) from a preset name or explicit numbers."""
    if preset is not None:
        if preset not in WINDOW_PRESETS:
            names = ", ".join(sorted(WINDOW_PRESETS))
            raise ConfigError(f"unknown window preset {preset!r} (available: {names})")
        return WINDOW_PRESETS[preset]
    if center is None or width is None:
        raise ConfigError("a window needs a preset or both center and width")
    if width <= 0:
        raise ConfigError(f"window width must be positive, got {width}")
    return float(center), float(width)


def parse_window(text: str) -> tuple[float, float]:
    """``"lung"`` or ``"-600,1500"`` -> (centre, width)."""
    if text in WINDOW_PRESETS:
        return WINDOW_PRESETS[text]
    parts = text.split(",")
    if len(parts) != 2:
        raise ConfigError(f"window {text!r} must be a preset ({', '.join(WINDOW_PRESETS)}) or C,W")
    try:
        return resolve_window(None, float(parts[0]), float(parts[1]))
    except ValueError as err:
        raise ConfigError(f"window {text!r}: centre and width must be numbers") from err


def _float(image: MedicalImage) -> NDArray[np.float32]:
    return np.asarray(image.array, dtype=np.float32)


def _per_channel(
    image: MedicalImage, fn: Callable[[NDArray[np.float32]], NDArray[Any]]
) -> MedicalImage:
    """Apply ``fn`` to each channel (as float32) and restack."""
    return image.with_array(
        np.stack([np.asarray(fn(ch), dtype=np.float32) for ch in _float(image)])
    )


@register("window")
@dataclass(frozen=True)
class Window(Transform):
    """Clip to a window and scale it to [0, 1]; without arguments, use the image's DICOM window.

    Example:
        >>> Window(preset="lung")  # centre -600 HU, width 1500 HU
        Window(preset='lung', center=None, width=None)
    """

    preset: str | None = None
    center: float | None = None
    width: float | None = None

    def __call__(self, image: MedicalImage) -> MedicalImage:
        if self.preset is None and self.center is None:
            center, width = image.meta.window_center, image.meta.window_width
            if center is None or not width:
                raise ConfigError(
                    "image has no DICOM window; give a preset or centre and width",
                    path=image.meta.source,
                )
        else:
            center, width = resolve_window(self.preset, self.center, self.width)
        low = center - width / 2.0
        out = np.clip((_float(image) - low) / width, 0.0, 1.0)
        return image.with_array(out, meta=image.meta.replace(window_center=0.5, window_width=1.0))


@register("zscore")
@dataclass(frozen=True)
class ZScore(Transform):
    """Subtract the mean and divide by the standard deviation, per channel.

    ``nonzero=True`` computes the statistics inside the non-zero voxels only (brain MR) and
    leaves the background at zero.
    """

    nonzero: bool = False

    def __call__(self, image: MedicalImage) -> MedicalImage:
        return _per_channel(image, self._normalise)

    def _normalise(self, channel: NDArray[np.float32]) -> NDArray[np.float32]:
        out = channel.copy()
        mask = channel != 0 if self.nonzero else np.ones(channel.shape, dtype=bool)
        if mask.any():
            values = channel[mask]
            std = float(values.std())
            out[mask] = (values - values.mean()) / (std if std > 0 else 1.0)
        return out


@register("percentile_clip")
@dataclass(frozen=True)
class PercentileClip(Transform):
    """Clip each channel to its [lower, upper] percentiles (robust to outliers)."""

    lower: float = 0.5
    upper: float = 99.5

    def __call__(self, image: MedicalImage) -> MedicalImage:
        if not 0 <= self.lower < self.upper <= 100:
            raise ConfigError(
                f"percentiles must satisfy 0 <= lower < upper <= 100, got {self.lower}, {self.upper}"
            )
        bounds = [self.lower, self.upper]
        return _per_channel(image, lambda ch: np.clip(ch, *np.percentile(ch, bounds)))


@register("minmax")
@dataclass(frozen=True)
class MinMax(Transform):
    """Scale each channel linearly to [low, high]; a constant channel becomes ``low``."""

    low: float = 0.0
    high: float = 1.0

    def __call__(self, image: MedicalImage) -> MedicalImage:
        return _per_channel(image, self._scale)

    def _scale(self, channel: NDArray[np.float32]) -> NDArray[np.float32]:
        vmin, vmax = float(channel.min()), float(channel.max())
        scale = (self.high - self.low) / (vmax - vmin) if vmax > vmin else 0.0
        # float32 rounding can land the maximum at 1.0000001, which CLAHE refuses
        scaled: NDArray[np.float32] = (channel - vmin) * scale + self.low
        return np.clip(scaled, self.low, self.high, out=scaled)


@register("clahe")
@dataclass(frozen=True)
class CLAHE(Transform):
    """Contrast-limited adaptive histogram equalisation (scikit-image), output in [0, 1].

    The tile is ``kernel_size`` pixels, or ``kernel_fraction`` of each axis (a scale relative
    to the anatomy, the same for a 28 px thumbnail and a 2,000 px radiograph), or by default an
    eighth of each axis.
    """

    clip_limit: float = 0.01
    kernel_size: int | None = None
    kernel_fraction: float | None = None

    def __post_init__(self) -> None:
        if self.kernel_fraction is not None and not 0 < self.kernel_fraction <= 1:
            raise ConfigError(
                f"clahe kernel_fraction must be in (0, 1], got {self.kernel_fraction}"
            )

    def __call__(self, image: MedicalImage) -> MedicalImage:
        from skimage.exposure import equalize_adapthist

        def equalise(ch: NDArray[np.float32]) -> NDArray[Any]:
            kernel: int | list[int] | None = self.kernel_size
            if self.kernel_fraction is not None:
                kernel = [max(2, round(self.kernel_fraction * n)) for n in ch.shape]
            out = equalize_adapthist(ch, kernel_size=kernel, clip_limit=self.clip_limit)
            return np.asarray(out)

        return _per_channel(MinMax()(image), equalise)


@register("gaussian_denoise")
@dataclass(frozen=True)
class GaussianDenoise(Transform):
    """Gaussian smoothing with ``sigma_mm`` in millimetres (converted per axis with the spacing)."""

    sigma_mm: float = 1.0

    def __call__(self, image: MedicalImage) -> MedicalImage:
        sigma = [0.0] + [self.sigma_mm / s for s in image.spacing]
        return image.with_array(ndimage.gaussian_filter(_float(image), sigma=sigma))


@register("median_denoise")
@dataclass(frozen=True)
class MedianDenoise(Transform):
    """Median filter with a cubic window of ``size`` voxels (removes salt-and-pepper noise)."""

    size: int = 3

    def __call__(self, image: MedicalImage) -> MedicalImage:
        size = (1,) + (self.size,) * image.spatial_dims
        return image.with_array(ndimage.median_filter(image.array, size=size))


def noise_sigma(channel: NDArray[np.float32]) -> float:
    """Robust Gaussian noise estimate: MAD of neighbour differences along the last axis."""
    diffs = np.diff(channel, axis=-1).ravel()
    mad = float(np.median(np.abs(diffs - np.median(diffs))))
    return float(mad / 0.6745 / np.sqrt(2.0))


@register("nlm_denoise")
@dataclass(frozen=True)
class NonLocalMeans(Transform):
    """Non-local means (scikit-image); ``h`` defaults to 0.8x the estimated noise sigma."""

    h: float | None = None
    patch_size: int = 5
    patch_distance: int = 6

    def __call__(self, image: MedicalImage) -> MedicalImage:
        from skimage.restoration import denoise_nl_means

        def denoise(channel: NDArray[np.float32]) -> NDArray[Any]:
            sigma = noise_sigma(channel)
            h = self.h if self.h is not None else 0.8 * sigma
            sizes = {"patch_size": self.patch_size, "patch_distance": self.patch_distance}
            return np.asarray(denoise_nl_means(channel, h=h, sigma=sigma, fast_mode=True, **sizes))

        return _per_channel(image, denoise)


@register("channels")
@dataclass(frozen=True)
class Channels(Transform):
    """Convert to ``count`` channels: colour to grey by averaging, grey to colour by repeating.

    An alpha channel (4 -> 3) is dropped. Lets a dataset that mixes grey and RGB files train.
    """

    count: int = 1

    def __call__(self, image: MedicalImage) -> MedicalImage:
        array = image.array
        have = array.shape[0]
        if have == self.count:
            return image
        if have == 4 and self.count == 3:
            return image.with_array(array[:3])
        if self.count == 1:
            source = array[:3] if have == 4 else array
            return image.with_array(source.astype(np.float32).mean(axis=0, keepdims=True))
        if have == 1:
            return image.with_array(np.repeat(array, self.count, axis=0))
        raise ConfigError(f"cannot convert {have} channels to {self.count}")
