"""NRRD / MetaImage (.mha, .mhd) via SimpleITK. ITK is LPS with index order (x, y, z) = our axes reversed."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from medlens._fs import atomic_path
from medlens.errors import DataError
from medlens.io.image import ImageMeta, MedicalImage


def read_itk(path: str | Path) -> MedicalImage:
    """Read any file SimpleITK reads (NRRD, MHA/MHD, ...) keeping its LPS geometry."""
    path = Path(path)
    try:
        img = sitk.ReadImage(str(path))
        array = sitk.GetArrayFromImage(img)
    except Exception as err:  # SimpleITK raises RuntimeError with a C++ trace
        first = str(err).strip().splitlines()[-1][:200] if str(err).strip() else type(err).__name__
        raise DataError(f"cannot read image with SimpleITK ({first})", path=path) from err
    nd = img.GetDimension()
    if nd not in (2, 3):
        raise DataError(f"{nd}D ITK images are not supported (2D or 3D expected)", path=path)
    array = np.moveaxis(array, -1, 0) if img.GetNumberOfComponentsPerPixel() > 1 else array[None]
    itk_dir = np.asarray(img.GetDirection(), dtype=np.float64).reshape(nd, nd)
    direction = np.eye(3)
    direction[:nd, :nd] = itk_dir[:, ::-1]
    origin = list(img.GetOrigin()) + [0.0] * (3 - nd)
    meta = ImageMeta(modality="OT", source=str(path))
    return MedicalImage(
        array,
        spacing=tuple(img.GetSpacing())[::-1],
        origin=(origin[0], origin[1], origin[2]),
        direction=direction,
        meta=meta,
    )


def to_sitk(image: MedicalImage) -> Any:
    """Convert to a SimpleITK image (geometry included). 2D planes outside the xy-plane are
    written as one-slice 3D images so that no geometry is lost."""
    array = image.array
    vector = image.channels > 1
    data = np.moveaxis(array, 0, -1) if vector else array[0]
    nd = image.spatial_dims
    direction = image.direction
    spacing = list(image.spacing)
    if nd == 2 and not (np.allclose(direction[2, :2], 0) and np.isclose(image.origin[2], 0)):
        data = data[None]
        nd = 3
        direction = np.stack([direction[:, 2], direction[:, 0], direction[:, 1]], axis=1)
        spacing = [1.0, *spacing]
    img = sitk.GetImageFromArray(np.ascontiguousarray(data), isVector=vector)
    img.SetSpacing([float(s) for s in spacing[::-1]])
    img.SetOrigin([float(o) for o in image.origin[:nd]])
    img.SetDirection([float(v) for v in direction[:nd, :nd][:, ::-1].ravel()])
    return img


def write_itk(image: MedicalImage, path: str | Path) -> Path:
    """Write NRRD/MHA (one file) or MHD (+ raw data file) atomically."""
    path = Path(path)
    img = to_sitk(image)
    if path.suffix.lower() != ".mhd":
        with atomic_path(path) as tmp:
            sitk.WriteImage(img, str(tmp), True)
        return path
    # .mhd names its data file inside the header: write both in a temp folder, then move them.
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".medlens-") as tmpdir:
        tmp = Path(tmpdir) / path.name
        sitk.WriteImage(img, str(tmp), True)
        for produced in sorted(Path(tmpdir).iterdir(), key=lambda p: p.suffix == ".mhd"):
            os.replace(produced, path.parent / produced.name)
    return path
