"""Built-in synthetic data, deterministic by seed: chest-radiograph and CT phantoms, fake DICOM.

Each sample ``i`` of a dataset is drawn from ``default_rng([seed, i])``, so any single sample can
be regenerated without the others and datasets of different sizes share their first samples.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from medlens._fs import atomic_path

Array = NDArray[Any]


@dataclass(frozen=True)
class PhantomSample:
    """One phantom: image ``(1, *spatial)``, label, mask (lesions), boxes ``(N, 2*D)`` in voxels."""

    image: Array
    label: int
    mask: Array
    boxes: Array


def _grid(shape: tuple[int, ...]) -> list[Array]:
    return [np.linspace(-1.0, 1.0, n, dtype=np.float32) for n in shape]


def _ellipse(
    shape: tuple[int, int], center: tuple[float, float], radii: tuple[float, float]
) -> Array:
    yy, xx = np.meshgrid(*_grid(shape), indexing="ij")
    return ((yy - center[0]) / radii[0]) ** 2 + ((xx - center[1]) / radii[1]) ** 2 <= 1.0


def chest_phantom(
    seed: int,
    index: int = 0,
    *,
    size: int = 128,
    nodule: bool | None = None,
    nodule_radius: tuple[float, float] = (0.025, 0.05),
) -> PhantomSample:
    """A frontal chest-radiograph-like image: body, two lung fields, ribs, heart, optional nodules.

    Brighter means denser (as on a displayed radiograph). Label 1 means "nodule present";
    ``nodule_radius`` is the range of nodule radii as a fraction of the image size.

    Example:
        >>> s = chest_phantom(0, 3, size=64, nodule=True)
        >>> s.image.shape, s.label, s.boxes.shape[1]
        ((1, 64, 64), 1, 4)
    """
    rng = np.random.default_rng([seed, index])
    shape = (size, size)
    has_nodule = bool(rng.random() < 0.5) if nodule is None else nodule
    img = np.full(shape, 0.05, dtype=np.float32)
    img[_ellipse(shape, (0.05, 0.0), (0.95, 0.85 + 0.05 * rng.random()))] = 0.55
    lungs = np.zeros(shape, dtype=bool)
    for side in (-1, 1):
        center = (-0.05 + 0.05 * rng.standard_normal(), side * (0.38 + 0.03 * rng.random()))
        lungs |= _ellipse(shape, center, (0.62 + 0.05 * rng.random(), 0.24 + 0.03 * rng.random()))
    img[lungs] = 0.18
    yy, xx = np.meshgrid(*_grid(shape), indexing="ij")
    phase = rng.uniform(0, np.pi)
    ribs = (np.sin((yy + 0.25 * xx**2) * 14.0 + phase) > 0.75) & lungs
    img[ribs] += 0.12
    heart = _ellipse(shape, (0.25, 0.12 + 0.04 * rng.random()), (0.3, 0.26 + 0.04 * rng.random()))
    img[heart] = np.maximum(img[heart], 0.5)
    mask = np.zeros(shape, dtype=np.uint8)
    boxes = []
    if has_nodule:
        candidates = np.argwhere(lungs & ~heart & ~ribs)
        for _ in range(int(rng.integers(1, 3))):
            cy, cx = candidates[rng.integers(len(candidates))]
            radius = rng.uniform(*nodule_radius) * size
            disc = (np.arange(size)[:, None] - cy) ** 2 + (
                np.arange(size)[None, :] - cx
            ) ** 2 <= radius**2
            img[disc] += 0.3
            mask[disc] = 1
            ys, xs = np.nonzero(disc)
            boxes.append([ys.min(), xs.min(), ys.max() + 1, xs.max() + 1])
    img = ndimage.gaussian_filter(img, sigma=size / 128.0)
    img += rng.normal(0.0, 0.02, shape).astype(np.float32)
    return PhantomSample(
        image=np.clip(img, 0, 1)[None].astype(np.float32),
        label=int(has_nodule),
        mask=mask[None],
        boxes=np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
    )


def ct_phantom(
    seed: int, index: int = 0, *, size: int = 48, lesion: bool | None = None
) -> PhantomSample:
    """A CT-like abdominal volume in HU ``(1, D, H, W)`` with an organ label map as ``mask``.

    Labels: 1 body, 2 liver, 3 kidneys, 4 spine, 5 lesion (hypodense, in the liver when present).
    """
    rng = np.random.default_rng([seed, index, 3])
    shape = (size, size, size)
    zz, yy, xx = np.meshgrid(*_grid(shape), indexing="ij")
    labels = np.zeros(shape, dtype=np.uint8)

    def ellipsoid(c: tuple[float, float, float], r: tuple[float, float, float]) -> Array:
        return ((zz - c[0]) / r[0]) ** 2 + ((yy - c[1]) / r[1]) ** 2 + (
            (xx - c[2]) / r[2]
        ) ** 2 <= 1.0

    labels[ellipsoid((0, 0, 0), (0.95, 0.7 + 0.05 * rng.random(), 0.9))] = 1
    liver = ellipsoid((0.0, -0.1, -0.35 + 0.05 * rng.standard_normal()), (0.5, 0.35, 0.3))
    labels[liver] = 2
    for side in (-1, 1):
        labels[ellipsoid((0.1, 0.3, side * 0.35), (0.25, 0.12, 0.1))] = 3
    labels[ellipsoid((0.0, 0.5, 0.0), (0.95, 0.1, 0.1))] = 4
    has_lesion = bool(rng.random() < 0.5) if lesion is None else lesion
    boxes = []
    if has_lesion:
        pts = np.argwhere(liver)
        c = pts[rng.integers(len(pts))]
        radius = rng.uniform(0.06, 0.1) * size
        grid = np.indices(shape)
        ball = ((grid - c.reshape(3, 1, 1, 1)) ** 2).sum(0) <= radius**2
        ball &= labels == 2
        labels[ball] = 5
        idx = np.argwhere(ball)
        boxes.append([*idx.min(0), *(idx.max(0) + 1)])
    hu = np.array([-1000, 40, 60, 30, 700, 10], dtype=np.float32)[labels]
    hu = ndimage.gaussian_filter(hu, 0.7) + rng.normal(0, 12, shape).astype(np.float32)
    return PhantomSample(
        image=np.round(hu)[None].astype(np.int16),
        label=int(has_lesion),
        mask=labels[None],
        boxes=np.asarray(boxes, dtype=np.float32).reshape(-1, 6),
    )


@dataclass(frozen=True)
class PhantomDataset:
    """Stacked phantoms with patient ids (some patients have two images, as follow-ups do)."""

    images: Array
    labels: Array
    masks: Array
    patient_ids: list[str]


def chest_dataset(
    n: int, *, size: int = 64, seed: int = 0, nodule_radius: tuple[float, float] = (0.025, 0.05)
) -> PhantomDataset:
    """``n`` chest phantoms; every third patient contributes two images with the same label."""
    samples: list[PhantomSample] = []
    pids: list[str] = []
    patient = 0
    while len(samples) < n:
        label = bool(np.random.default_rng([seed, patient, 7]).random() < 0.5)
        repeats = 2 if patient % 3 == 0 else 1
        for _ in range(min(repeats, n - len(samples))):
            samples.append(
                chest_phantom(
                    seed, len(samples), size=size, nodule=label, nodule_radius=nodule_radius
                )
            )
            pids.append(f"P{patient:05d}")
        patient += 1
    return PhantomDataset(
        images=np.stack([s.image for s in samples]),
        labels=np.asarray([s.label for s in samples], dtype=np.int64),
        masks=np.stack([s.mask for s in samples]),
        patient_ids=pids,
    )


CHEST_CLASSES = ("normal", "nodule")


def write_chest_folder(
    root: str | Path,
    n: int,
    *,
    size: int = 64,
    seed: int = 0,
    nodule_radius: tuple[float, float] = (0.025, 0.05),
) -> Path:
    """Write ``n`` chest phantoms as 8-bit PNGs in class sub-folders (``normal/``, ``nodule/``).

    File names start with the patient id (``P00003_1.png``) so patient-level splits can find it.
    """
    from PIL import Image

    root = Path(root)
    data = chest_dataset(n, size=size, seed=seed, nodule_radius=nodule_radius)
    counts: dict[str, int] = {}
    for image, label, pid in zip(data.images, data.labels, data.patient_ids, strict=True):
        folder = root / CHEST_CLASSES[int(label)]
        folder.mkdir(parents=True, exist_ok=True)
        counts[pid] = counts.get(pid, 0) + 1
        target = folder / f"{pid}_{counts[pid]}.png"
        with atomic_path(target) as tmp:
            Image.fromarray((image[0] * 255 + 0.5).astype(np.uint8)).save(tmp, format="PNG")
    return root


def rotation_matrix(degrees_xyz: tuple[float, float, float]) -> Array:
    """Rotation about x, then y, then z (degrees)."""
    ax, ay, az = np.radians(degrees_xyz)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    out: Array = rz @ ry @ rx
    return out
