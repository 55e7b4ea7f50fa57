"""Medical image I/O: one :func:`read_image` that decides by content, one :func:`write_image`."""

from __future__ import annotations

import gzip
import logging
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from medlens.errors import ConfigError, DataError, UnsupportedFormatError
from medlens.io.dicom import has_dicom_preamble, read_dicom_file
from medlens.io.dicom_series import looks_like_dicom, read_dicom_series, scan_series
from medlens.io.image import ImageMeta, MedicalImage, lps_to_ras, ras_to_lps
from medlens.io.itk import read_itk, write_itk
from medlens.io.nifti import read_nifti, write_nifti
from medlens.io.npz import is_medmnist, read_medmnist, read_npz, write_npz
from medlens.io.raster import apply_window, read_raster, write_raster

__all__ = [
    "ImageMeta",
    "MedicalImage",
    "apply_window",
    "detect_format",
    "is_medmnist",
    "is_raster_bytes",
    "lps_to_ras",
    "ras_to_lps",
    "read_image",
    "read_medmnist",
    "scan_series",
    "split_selector",
    "write_image",
]

log = logging.getLogger(__name__)

_RASTER_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "raster"),
    (b"\xff\xd8\xff", "raster"),
    (b"GIF87a", "raster"),
    (b"GIF89a", "raster"),
    (b"II*\x00", "raster"),
    (b"MM\x00*", "raster"),
    (b"BM", "raster"),
    (b"NRRD000", "itk"),
    (b"PK\x03\x04", "npz"),
)
_WRITERS: dict[str, str] = {
    ".nii": "nifti",
    ".nii.gz": "nifti",
    ".png": "raster",
    ".jpg": "raster",
    ".jpeg": "raster",
    ".bmp": "raster",
    ".tif": "raster",
    ".tiff": "raster",
    ".npz": "npz",
    ".nrrd": "itk",
    ".mha": "itk",
    ".mhd": "itk",
}


def _is_nifti_header(head: bytes) -> bool:
    if len(head) < 348:
        return False
    size_le, size_be = int.from_bytes(head[:4], "little"), int.from_bytes(head[:4], "big")
    if 348 in (size_le, size_be):
        return head[344:347] in (b"n+1", b"ni1")
    if 540 in (size_le, size_be):
        return head[4:7] in (b"n+2", b"ni2")
    return False


def detect_format(path: Path) -> str:
    """Format of a file from its first bytes: dicom, nifti, itk, raster or npz."""
    try:
        with path.open("rb") as fh:
            head = fh.read(1024)
    except OSError as err:
        raise DataError(f"cannot open file ({err.strerror})", path=path) from err
    if not head:
        raise DataError("file is empty", path=path, fix="re-export or re-download it")
    if has_dicom_preamble(head):
        return "dicom"
    for magic, kind in _RASTER_MAGIC:
        if head.startswith(magic):
            return kind
    if head.startswith(b"\x1f\x8b"):
        try:
            with gzip.open(path, "rb") as gz:
                inner = gz.read(560)
        except (OSError, EOFError, zlib.error) as err:
            raise DataError(f"corrupt gzip stream ({err})", path=path) from err
        if _is_nifti_header(inner):
            return "nifti"
        raise UnsupportedFormatError("gzip file that does not contain a NIfTI image", path=path)
    if _is_nifti_header(head) or path.suffix.lower() == ".hdr":
        return "nifti"
    text = head[:256].lstrip()
    if text.startswith((b"ObjectType", b"NDims")) or b"\nNDims" in head:
        return "itk"
    if looks_like_dicom(path):
        return "dicom"
    raise UnsupportedFormatError(
        f"not a recognised medical image (starts with {head[:8]!r})",
        path=path,
        fix="supported: DICOM, NIfTI, NRRD/MHA/MHD, PNG/JPEG/BMP/TIFF/GIF, .npz",
    )


def is_raster_bytes(head: bytes) -> bool:
    """Whether bytes start like a PNG, JPEG, GIF, TIFF or BMP file (and not like a DICOM one)."""
    return not has_dicom_preamble(head) and any(
        head.startswith(magic) for magic, kind in _RASTER_MAGIC if kind == "raster"
    )


def split_selector(path: str | Path) -> tuple[Path, str | None]:
    """``'data.npz#test/3'`` -> (Path('data.npz'), 'test/3'); a path without ``#`` is unchanged."""
    text = str(path)
    if "#" in text and not Path(text).exists():
        base, _, selector = text.rpartition("#")
        return Path(base), selector or None
    return Path(text), None


def read_image(
    path: str | Path,
    *,
    series_uid: str | None = None,
    resample_irregular: bool = False,
    progress: Callable[[int, int], None] | None = None,
    max_values: int | None = None,
) -> MedicalImage:
    """Read any supported image; the format is decided by the file's content, not its suffix.

    Args:
        path: a file, a DICOM folder, or ``file.npz#split/index`` for one MedMNIST sample.
        series_uid: which series to read when a DICOM folder holds several.
        resample_irregular: resample DICOM series with uneven spacing or gantry tilt instead of
            refusing them.
        progress: optional ``callback(done, total)`` for long reads.
        max_values: a DICOM folder whose headers promise more decoded values is refused
            before decoding (:class:`~medlens.errors.ImageTooLargeError`).

    Example:
        >>> img = read_image("../shared/data/dicom_mr_brain_sag_series")  # doctest: +SKIP
        >>> img.spatial_shape, img.meta.modality
        ((192, 256, 256), 'MR')
    """
    path, selector = split_selector(path)
    if path.is_dir():
        image = read_dicom_series(
            path,
            series_uid=series_uid,
            resample_irregular=resample_irregular,
            progress=progress,
            max_values=max_values,
        )
    elif not path.exists():
        raise DataError("file or folder not found", path=path, fix="check the path")
    else:
        kind = detect_format(path)
        if selector is not None and kind != "npz":
            raise ConfigError(
                f"'#{selector}' selects a sample of a .npz dataset, but this is {kind}", path=path
            )
        readers: dict[str, Callable[[Path], MedicalImage]] = {
            "dicom": read_dicom_file,
            "nifti": read_nifti,
            "itk": read_itk,
            "raster": read_raster,
            "npz": lambda p: read_npz(p, selector),
        }
        image = readers[kind](path)
    _check_finite(image, path)
    return image


def _check_finite(image: MedicalImage, path: Path) -> None:
    if image.array.dtype.kind == "f" and not np.all(np.isfinite(image.array)):
        bad = int(np.size(image.array) - np.count_nonzero(np.isfinite(image.array)))
        raise DataError(
            f"{bad} voxels are NaN or infinite",
            path=path,
            fix="repair the source (e.g. numpy.nan_to_num) before using it",
        )


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def write_image(
    image: MedicalImage, path: str | Path, *, window: tuple[float, float] | None = None
) -> Path:
    """Write ``image`` in the format named by the suffix (atomically; geometry preserved).

    Args:
        image: the image.
        path: ``.nii[.gz]``, ``.png/.jpg/.bmp/.tif``, ``.npz``, ``.nrrd/.mha/.mhd``.
        window: ``(center, width)`` for 8-bit raster output.

    Example:
        >>> write_image(read_image("series/"), "volume.nii.gz")  # doctest: +SKIP
    """
    path = Path(path)
    kind = _WRITERS.get(_suffix(path))
    if kind is None:
        raise ConfigError(
            f"cannot write {_suffix(path) or 'files without a suffix'}",
            path=path,
            fix=f"use one of {', '.join(sorted(_WRITERS))}",
        )
    if window is not None and kind != "raster":
        raise ConfigError("a display window only applies to PNG/JPEG/BMP/TIFF output", path=path)
    writers: dict[str, Callable[..., Any]] = {
        "nifti": write_nifti,
        "itk": write_itk,
        "npz": write_npz,
        "raster": lambda img, p: write_raster(img, p, window=window),
    }
    try:
        return Path(writers[kind](image, path))
    except (OSError, RuntimeError) as err:
        raise DataError(f"cannot write file ({err})", path=path) from err
