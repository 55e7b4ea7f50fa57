"""Rendering a relevance map over its image, as a clinician reads it.

The map lives on the model's input grid (after the artifact's resizing); image and map are both
shown on a display grid - the source image's own voxels, downsized only beyond ``max_side`` - by
resampling through world coordinates, with the image's own intensities and window (a given one,
the DICOM window, else the 1st-99th percentiles). 2D: one overlay. 3D: the
three orthogonal planes through the map's maximum, then a montage of slices around it. Pixels
keep their physical aspect ratio. Figures use matplotlib's object API (no pyplot state), so
rendering is safe from several threads at once.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from medlens.io.image import MedicalImage

PLANE_NAMES = ("sagittal", "coronal", "axial")  # slicing across LPS x, y, z


def on_grid(image: MedicalImage, grid: MedicalImage) -> NDArray[np.float32]:
    """``image`` resampled (linear) onto the voxels of ``grid``: (C, *grid.spatial_shape)."""
    if image.spatial_shape == grid.spatial_shape and np.allclose(image.affine, grid.affine):
        return image.array.astype(np.float32)
    index = np.indices(grid.spatial_shape, dtype=np.float64).reshape(grid.spatial_dims, -1)
    homogeneous = np.zeros((4, index.shape[1]))
    homogeneous[: grid.spatial_dims] = index
    homogeneous[3] = 1.0
    source = np.linalg.inv(image.affine) @ (grid.affine @ homogeneous)
    coords = source[: image.spatial_dims]
    return np.stack(
        [
            ndimage.map_coordinates(c.astype(np.float32), coords, order=1, mode="nearest").reshape(
                grid.spatial_shape
            )
            for c in image.array
        ]
    )


def display_grid(image: MedicalImage, max_side: int) -> MedicalImage:
    """``image`` itself, or resized (same field of view) so no axis exceeds ``max_side``."""
    factor = min(1.0, max_side / max(image.spatial_shape))
    if factor == 1.0:
        return image
    from medlens.transforms import Resize

    return Resize(tuple(max(1, round(n * factor)) for n in image.spatial_shape))(image)


def on_display(
    image: MedicalImage, grid: MedicalImage, relevance: NDArray[Any], max_side: int
) -> tuple[MedicalImage, NDArray[np.float32], NDArray[np.float32]]:
    """The display grid, the image's values (C, *S) and the map (*S) on it."""
    display = display_grid(image, max_side)
    values = display.array.astype(np.float32)  # resized anti-aliased, not point-sampled again
    heat = on_grid(grid.with_array(np.asarray(relevance, np.float32)[None]), display)[0]
    return display, values, heat


def display_range(
    image: MedicalImage, values: NDArray[Any], window: tuple[float, float] | None = None
) -> tuple[float, float]:
    """(low, high) for display: ``window`` (centre, width), the DICOM window, or percentiles."""
    if window is None and image.meta.window_center is not None and image.meta.window_width:
        window = (image.meta.window_center, image.meta.window_width)
    if window is not None:
        return window[0] - window[1] / 2, window[0] + window[1] / 2
    low, high = np.percentile(values, [1, 99])
    return float(low), float(max(high, low + 1e-6))


def _greyscale(values: NDArray[Any], low: float, high: float) -> NDArray[np.float32]:
    """(C, *S) -> (*S) or (*S, 3) in [0, 1]."""
    scaled = np.clip((values - low) / (high - low), 0, 1).astype(np.float32)
    return np.moveaxis(scaled, 0, -1) if scaled.shape[0] == 3 else scaled[0]


def _show(ax: Any, picture: NDArray[Any], relevance: NDArray[Any], aspect: float, **kw: Any) -> Any:
    ax.imshow(picture, cmap="gray", vmin=0, vmax=1, aspect=aspect, interpolation="nearest")
    peak = float(np.abs(relevance).max()) or 1.0
    alpha = np.clip(np.abs(relevance) / peak, 0, 1) * kw.pop("opacity", 0.6)
    shown = ax.imshow(relevance, cmap="inferno", alpha=alpha, aspect=aspect, **kw)
    ax.set_xticks([])
    ax.set_yticks([])
    return shown


def _plane_name(grid: MedicalImage, axis: int) -> str:
    return PLANE_NAMES[int(np.argmax(np.abs(grid.direction[:, axis])))]


def _montage_slices(relevance: NDArray[Any], axis: int, peak: int, count: int = 8) -> list[int]:
    """``count`` slices spread over where the map is at least half its maximum (and the peak)."""
    profile = np.moveaxis(relevance, axis, 0).reshape(relevance.shape[axis], -1).max(axis=1)
    strong = np.flatnonzero(profile >= 0.5 * profile.max()) if profile.max() > 0 else [peak]
    low = max(0, min(int(strong[0]), peak - count // 2))
    high = min(relevance.shape[axis] - 1, max(int(strong[-1]), peak + count // 2))
    return sorted({int(v) for v in np.rint(np.linspace(low, high, count - 1))} | {peak})


def render(
    image: MedicalImage,
    grid: MedicalImage,
    relevance: NDArray[Any],
    *,
    title: str,
    units: str,
    window: tuple[float, float] | None = None,
    opacity: float = 0.6,
    max_side: int | None = None,
    display: tuple[MedicalImage, NDArray[Any], NDArray[Any]] | None = None,
) -> bytes:
    """PNG bytes: ``relevance`` (on ``grid``'s voxels) over ``image``, colour bar in ``units``;
    shown at the source resolution up to ``max_side`` (default 512 in 2D, 256 in 3D), or on
    ``display``, what :func:`on_display` gave a caller that needs it too."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    side = max_side or (512 if grid.spatial_dims == 2 else 256)
    grid, values, relevance = display or on_display(image, grid, relevance, side)
    low, high = display_range(image, values, window)
    picture = _greyscale(values, low, high)
    vmin = float(min(relevance.min(), 0.0))
    vmax = float(relevance.max()) if relevance.max() > vmin else vmin + 1.0
    colour = {"vmin": vmin, "vmax": vmax, "opacity": opacity}
    spacing = grid.spacing
    if grid.spatial_dims == 2:
        fig = Figure(figsize=(5.2, 4.4))
        ax = fig.add_subplot(1, 1, 1)
        shown = _show(ax, picture, relevance, spacing[0] / spacing[1], **colour)
        axes: Sequence[Any] = [ax]
    else:
        fig = Figure(figsize=(11, 8.5))
        spec = fig.add_gridspec(3, 12)
        peak = [int(p) for p in np.unravel_index(int(np.argmax(relevance)), relevance.shape)]
        axes = []
        for axis in range(3):
            ax = fig.add_subplot(spec[0, 4 * axis : 4 * axis + 4])
            rest = [a for a in range(3) if a != axis]
            cut = tuple(peak[a] if a == axis else slice(None) for a in range(3))
            shown = _show(
                ax, picture[cut], relevance[cut], spacing[rest[0]] / spacing[rest[1]], **colour
            )
            ax.set_title(f"{_plane_name(grid, axis)} (axis {axis} = {peak[axis]})", fontsize=9)
            axes.append(ax)
        axis = int(np.argmax([abs(grid.direction[2, a]) for a in range(3)]))  # closest to axial
        rest = [a for a in range(3) if a != axis]
        for k, index in enumerate(_montage_slices(relevance, axis, peak[axis])[:8]):
            ax = fig.add_subplot(spec[1 + k // 4, 3 * (k % 4) : 3 * (k % 4) + 3])
            cut = tuple(index if a == axis else slice(None) for a in range(3))
            _show(ax, picture[cut], relevance[cut], spacing[rest[0]] / spacing[rest[1]], **colour)
            ax.set_title(f"{_plane_name(grid, axis)} {index}", fontsize=8)
            axes.append(ax)
    fig.colorbar(shown, ax=list(axes), shrink=0.8, label=units)
    fig.suptitle(title, fontsize=10)
    buffer = io.BytesIO()
    FigureCanvasAgg(fig).print_png(buffer)
    return buffer.getvalue()
