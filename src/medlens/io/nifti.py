"""NIfTI-1/2 via nibabel. NIfTI stores RAS; conversion goes through :func:`lps_to_ras` only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from numpy.typing import NDArray

from medlens._fs import atomic_path
from medlens.errors import DataError
from medlens.io.image import ImageMeta, MedicalImage, lps_to_ras, ras_to_lps

_META_EXTENSION = "comment"  # NIfTI extension code 6: free text; medlens stores its ImageMeta JSON
_MAX_VOXELS = 2**31


def read_nifti(path: str | Path) -> MedicalImage:
    """Read a NIfTI file; a 4th axis (or MONAI's 5th) becomes the channel axis.

    Example:
        >>> img = read_nifti("Flair.nii.gz")  # doctest: +SKIP
        >>> img.orientation()
        'LPS'
    """
    path = Path(path)
    try:
        nii: Any = nib.load(path)
        shape = tuple(int(s) for s in nii.shape)
        if not shape or int(np.prod(shape, dtype=np.float64)) > _MAX_VOXELS:
            raise DataError(f"NIfTI header claims an implausible shape {shape}", path=path)
        data = np.asanyarray(nii.dataobj)
        affine = np.asarray(nii.affine, dtype=np.float64)
        meta = _meta_from_extensions(nii, path)
    except DataError:
        raise
    except Exception as err:  # nibabel raises many types for corrupt headers or short data
        raise DataError(
            f"corrupt or truncated NIfTI file ({type(err).__name__}: {err})",
            path=path,
            fix="re-export the volume; for .nii.gz check that the download completed",
        ) from err
    array = _channels_first(data, path)
    return MedicalImage.from_affine(array, ras_to_lps(affine), meta=meta)


def _channels_first(data: NDArray[Any], path: Path) -> NDArray[Any]:
    if data.ndim == 5 and data.shape[3] == 1:  # MONAI writes (x, y, z, 1, c)
        data = data[:, :, :, 0, :]
    if data.ndim == 3 and data.shape[2] == 1:
        data = data[:, :, 0]
    if data.ndim in (2, 3):
        return data[None]
    if data.ndim == 4:
        return np.moveaxis(data, -1, 0)
    raise DataError(
        f"NIfTI data has {data.ndim} dimensions {data.shape}; expected 2 to 4", path=path
    )


def _meta_from_extensions(nii: Any, path: Path) -> ImageMeta:
    for ext in getattr(nii.header, "extensions", []):
        content = ext.get_content() if hasattr(ext, "get_content") else b""
        if isinstance(content, bytes) and content.startswith(b"medlens:"):
            try:
                return ImageMeta.from_json(content[len(b"medlens:") :].decode("utf-8")).replace(
                    source=str(path)
                )
            except ValueError:
                break
    return ImageMeta(modality="OT", source=str(path))


def write_nifti(image: MedicalImage, path: str | Path) -> Path:
    """Write ``image`` as NIfTI (``.nii`` or ``.nii.gz``), atomically, with its geometry and metadata."""
    path = Path(path)
    array = image.array
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    elif array.dtype == np.int64 and array.size and np.abs(array).max() < 2**31:
        array = array.astype(np.int32)
    data = array[0] if image.channels == 1 else np.moveaxis(array, 0, -1)
    nii = nib.Nifti1Image(np.ascontiguousarray(data), lps_to_ras(image.affine))
    nii.set_qform(nii.affine, code=1)
    nii.set_sform(nii.affine, code=1)
    nii.header.set_xyzt_units("mm")
    payload = b"medlens:" + image.meta.replace(source=None).to_json().encode("utf-8")
    nii.header.extensions.append(nib.nifti1.Nifti1Extension(_META_EXTENSION, payload))
    with atomic_path(path) as tmp:
        nib.save(nii, tmp)
    return path
