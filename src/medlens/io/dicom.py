"""DICOM instances: decoding pixels and reading single files (single- and multi-frame).

Pixel values come out as a user expects them: the modality LUT / RescaleSlope-Intercept applied
(CT in HU), MONOCHROME1 inverted so that higher always means brighter, colour converted to RGB.
Multi-frame files with per-frame positions become volumes through the same geometry checks as a
series (:mod:`medlens.io.dicom_series`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from numpy.typing import NDArray
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from medlens.errors import DataError, MedlensError, UnsupportedFormatError
from medlens.io.image import ImageMeta, MedicalImage

log = logging.getLogger(__name__)

_DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
_RAW_SYNTAXES = {ExplicitVRLittleEndian, ImplicitVRLittleEndian}
_INSTALL_CODECS = (
    "install the codecs with `pip install -c constraints.txt pylibjpeg pylibjpeg-libjpeg "
    "pylibjpeg-openjpeg`, or convert the file with `gdcmconv --raw`"
)


def has_dicom_preamble(head: bytes) -> bool:
    """True when ``head`` (the first 132+ bytes of a file) carries the DICM magic."""
    return len(head) >= 132 and head[128:132] == b"DICM"


@contextlib.contextmanager
def corrupt_file_guard(path: Path) -> Iterator[None]:
    """pydicom parses elements lazily, so a corrupt element can fail long after ``dcmread``:
    turn any such failure while interpreting ``path`` into a one-line :class:`DataError`."""
    try:
        yield
    except MedlensError:
        raise
    except MemoryError as err:
        raise DataError("DICOM header claims an implausibly large element", path=path) from err
    except Exception as err:
        raise DataError(
            f"corrupt DICOM file ({type(err).__name__}: {err})",
            path=path,
            fix="re-export the file from the PACS or exclude it",
        ) from err


def load_dataset(
    path: Path, *, stop_before_pixels: bool = False, require_pixels: bool = True
) -> Dataset:
    """Parse a DICOM file, turning any parser failure into a one-line :class:`DataError`."""
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=stop_before_pixels, force=True)
        # Touch the elements we depend on so that lazy parsing fails here, not later.
        _ = ds.get("SOPClassUID"), ds.get("Rows"), ds.get("ImagePositionPatient")
    except (OSError, MemoryError) as err:
        raise DataError(f"cannot read DICOM file ({err})", path=path) from err
    except Exception as err:  # pydicom raises many types for corrupt/truncated files
        raise DataError(
            f"corrupt or truncated DICOM file ({type(err).__name__}: {err})",
            path=path,
            fix="re-export the file from the PACS or exclude it",
        ) from err
    has_pixels = "PixelData" in ds or "FloatPixelData" in ds
    if require_pixels and not stop_before_pixels and not has_pixels:
        sop = ds.get("SOPClassUID", "unknown")
        raise DataError(
            f"DICOM file has no pixel data (SOP class {getattr(sop, 'name', sop)})",
            path=path,
            fix="this is not an image instance (e.g. a report or presentation state); skip it",
        )
    return ds


def _float(value: Any, default: float | None = None) -> float | None:
    """First element of a possibly multi-valued DS/IS element as float."""
    if value is None or value == "":
        return default
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        if len(value) == 0:
            return default
        value = value[0]
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def _vector(value: Any, n: int) -> NDArray[np.float64] | None:
    try:
        vec = np.asarray([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return vec if vec.shape == (n,) and np.all(np.isfinite(vec)) else None


def _decode(ds: Dataset, path: Path) -> NDArray[Any]:
    """Decoded stored values: (frames, rows, cols[, samples]) without any LUT applied."""
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    frames = int(_float(ds.get("NumberOfFrames"), 1) or 1)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    bits = int(ds.get("BitsAllocated", 0) or 0)
    if rows <= 0 or cols <= 0:
        raise DataError(f"DICOM header has Rows={rows}, Columns={cols}", path=path)
    file_meta = getattr(ds, "file_meta", None)
    syntax = file_meta.get("TransferSyntaxUID") if file_meta is not None else None
    if (
        syntax in _RAW_SYNTAXES
        and samples == 1
        and frames == 1
        and bits in (8, 16, 32)
        and "PixelData" in ds
        and (int(ds.get("PixelRepresentation", 0)) == 0 or int(ds.get("BitsStored", bits)) == bits)
    ):
        # Fast path for uncompressed little-endian greyscale: a view on the raw bytes (pydicom's
        # generic path costs ~1 ms a slice, which dominates series loading).
        kind = "i" if int(ds.get("PixelRepresentation", 0)) else "u"
        dtype = np.dtype(f"<{kind}{bits // 8}")
        raw = ds.PixelData
        need = rows * cols * dtype.itemsize
        if len(raw) < need:
            raise DataError(
                f"pixel data is truncated ({len(raw)} bytes, {need} expected)", path=path
            )
        return np.frombuffer(raw, dtype=dtype, count=rows * cols).reshape(1, rows, cols)
    try:
        arr = np.asarray(ds.pixel_array)
    except (NotImplementedError, RuntimeError) as err:
        if "handler" in str(err).lower() or "plugin" in str(err).lower() or "decod" in str(err):
            name = getattr(syntax, "name", syntax)
            raise UnsupportedFormatError(
                f"no decoder for transfer syntax {name}", path=path, fix=_INSTALL_CODECS
            ) from err
        raise DataError(f"cannot decode pixel data ({err})", path=path) from err
    except Exception as err:  # corrupt pixel data shows up as many exception types
        raise DataError(
            f"cannot decode pixel data ({type(err).__name__}: {err})",
            path=path,
            fix="the file is probably truncated or corrupt; re-export it",
        ) from err
    if frames == 1 and arr.ndim == (2 if samples == 1 else 3):
        arr = arr[None]
    return arr


def _invert_monochrome1(ds: Dataset, arr: NDArray[Any]) -> tuple[NDArray[Any], int]:
    """Invert stored values so that MONOCHROME1 reads like MONOCHROME2; returns (array, max+min)."""
    stored = int(ds.get("BitsStored", ds.get("BitsAllocated", 16)) or 16)
    # The stored range [min, max] maps onto itself: signed ranges sum to -1, unsigned to 2^b - 1.
    total = -1 if int(ds.get("PixelRepresentation", 0)) else 2**stored - 1
    if arr.dtype.kind not in "iu":
        return total - arr, total
    wide = np.int32 if arr.dtype.itemsize <= 2 else np.int64  # int64 doubled a radiograph's time
    return (total - arr.astype(wide)).astype(arr.dtype), total


@dataclass(frozen=True)
class Rescale:
    """Modality rescale of one frame: ``value = slope * stored + intercept``."""

    slope: float = 1.0
    intercept: float = 0.0

    @property
    def is_identity(self) -> bool:
        return self.slope == 1.0 and self.intercept == 0.0


def frame_rescales(ds: Dataset) -> list[Rescale]:
    """Per-frame rescale (enhanced multi-frame functional groups, or the top-level tags)."""
    frames = int(_float(ds.get("NumberOfFrames"), 1) or 1)
    top = Rescale(
        _float(ds.get("RescaleSlope"), 1.0) or 1.0, _float(ds.get("RescaleIntercept"), 0.0) or 0.0
    )
    shared = _functional_item(
        ds.get("SharedFunctionalGroupsSequence"), 0, "PixelValueTransformationSequence"
    )
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    out = []
    for i in range(frames):
        item = _functional_item(per_frame, i, "PixelValueTransformationSequence") or shared
        if item is not None:
            slope = _float(item.get("RescaleSlope"), 1.0) or 1.0
            out.append(Rescale(slope, _float(item.get("RescaleIntercept"), 0.0) or 0.0))
        else:
            out.append(top)
    return out


def _functional_item(seq: Any, index: int, name: str) -> Dataset | None:
    """``seq[index].<name>[0]`` or None when any level is missing."""
    try:
        inner = seq[index].get(name)
        return inner[0] if inner else None
    except (IndexError, TypeError, AttributeError):
        return None


def apply_rescale(values: NDArray[Any], rescales: Sequence[Rescale]) -> NDArray[Any]:
    """Apply one rescale per leading-axis frame, keeping an integer dtype when it is exact."""
    if all(r.is_identity for r in rescales):
        return values
    slopes = np.asarray([r.slope for r in rescales])
    intercepts = np.asarray([r.intercept for r in rescales])
    shape = (-1,) + (1,) * (values.ndim - 1)
    if (
        values.dtype.kind in "iu"
        and np.all(slopes == np.round(slopes))
        and np.all(intercepts == np.round(intercepts))
    ):
        out = values.astype(np.int64) * slopes.astype(np.int64).reshape(shape)
        out += intercepts.astype(np.int64).reshape(shape)
        for dtype in (np.int16, np.int32):
            info = np.iinfo(dtype)
            if out.size == 0 or (out.min() >= info.min and out.max() <= info.max):
                return out.astype(dtype)
        wide: NDArray[Any] = out
        return wide
    scaled: NDArray[Any] = (values * slopes.reshape(shape) + intercepts.reshape(shape)).astype(
        np.float32
    )
    return scaled


def _photometric(ds: Dataset) -> str:
    return str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()


def declared_values(ds: Dataset) -> int:
    """How many values the header says the pixel data decodes to (checked before decoding)."""
    count = int(ds.get("Rows", 0) or 0) * int(ds.get("Columns", 0) or 0)
    return count * int(ds.get("NumberOfFrames", 1) or 1) * int(ds.get("SamplesPerPixel", 1) or 1)


def decoded_values(ds: Dataset, path: Path) -> NDArray[Any]:
    """Decoded, rescaled, MONOCHROME1-inverted frames ``(frames, rows, cols[, 3])``."""
    arr = _decode(ds, path)
    photometric = _photometric(ds)
    if photometric == "PALETTE COLOR":
        from pydicom.pixels.processing import apply_color_lut

        return np.asarray(apply_color_lut(arr, ds))
    if photometric == "MONOCHROME1":
        arr = _invert_monochrome1(ds, arr)[0]
    if arr.ndim == 3 or arr.shape[-1] not in (3, 4):
        arr = apply_rescale(arr, frame_rescales(ds))
    return arr


def pixel_values(ds: Dataset, path: Path) -> tuple[NDArray[Any], ImageMeta]:
    """:func:`decoded_values` and the instance's metadata (window moved with any inversion)."""
    arr = decoded_values(ds, path)
    meta = meta_from_dataset(ds, path)
    photometric = _photometric(ds)
    if photometric == "PALETTE COLOR" or photometric.startswith("YBR") or photometric == "RGB":
        meta = meta.replace(photometric="RGB")  # pydicom converts YBR to RGB when decoding
    elif photometric == "MONOCHROME1":
        total = _invert_monochrome1(ds, np.zeros(1, dtype=np.int16))[1]
        rescale = frame_rescales(ds)[0]
        # The displayed image is unchanged: move the window with the values (v' = K - v).
        k = rescale.slope * total + 2 * rescale.intercept
        center = meta.window_center
        meta = meta.replace(
            photometric="MONOCHROME2",
            window_center=None if center is None else k - center,
            extra={**meta.extra, "original_photometric": "MONOCHROME1"},
        )
    return arr, meta


def meta_from_dataset(ds: Dataset, path: Path) -> ImageMeta:
    """Clinical metadata of one instance."""

    def text(name: str) -> str | None:
        value = ds.get(name)
        return str(value).strip() or None if value is not None else None

    return ImageMeta(
        modality=text("Modality") or "OT",
        patient_id=text("PatientID"),
        study_uid=text("StudyInstanceUID"),
        series_uid=text("SeriesInstanceUID"),
        series_description=text("SeriesDescription"),
        window_center=_float(ds.get("WindowCenter")),
        window_width=_float(ds.get("WindowWidth")),
        photometric=text("PhotometricInterpretation"),
        source=str(path),
    )


@dataclass(frozen=True)
class PlaneGeometry:
    """Where one frame sits in LPS space."""

    position: NDArray[np.float64]  # ImagePositionPatient: centre of the first pixel
    row_dir: NDArray[np.float64]  # direction of increasing column index
    col_dir: NDArray[np.float64]  # direction of increasing row index
    pixel_spacing: tuple[float, float]  # (between rows, between columns)


def plane_geometry(ds: Dataset, frame: int | None = None) -> PlaneGeometry | None:
    """Geometry of a frame from the top-level tags or the functional groups; None if absent."""
    sources: list[Dataset] = [ds]
    if frame is not None:
        per = ds.get("PerFrameFunctionalGroupsSequence")
        shared = ds.get("SharedFunctionalGroupsSequence")
        for seq, idx in ((per, frame), (shared, 0)):
            for name in (
                "PlanePositionSequence",
                "PlaneOrientationSequence",
                "PixelMeasuresSequence",
            ):
                item = _functional_item(seq, idx, name)
                if item is not None:
                    sources.insert(0, item)
    ipp = iop = spacing = None
    for src in sources:
        ipp = ipp if ipp is not None else _vector(src.get("ImagePositionPatient", ()), 3)
        iop = iop if iop is not None else _vector(src.get("ImageOrientationPatient", ()), 6)
        spacing = spacing if spacing is not None else _vector(src.get("PixelSpacing", ()), 2)
    if ipp is None or iop is None:
        return None
    row_dir, col_dir = iop[:3], iop[3:]
    if not (
        np.isclose(np.linalg.norm(row_dir), 1, atol=1e-2)
        and np.isclose(np.linalg.norm(col_dir), 1, atol=1e-2)
    ):
        return None
    ps = (
        (float(spacing[0]), float(spacing[1]))
        if spacing is not None and np.all(spacing > 0)
        else (1.0, 1.0)
    )
    return PlaneGeometry(
        ipp, row_dir / np.linalg.norm(row_dir), col_dir / np.linalg.norm(col_dir), ps
    )


def projection_spacing(ds: Dataset) -> tuple[float, float]:
    """In-plane spacing for images without patient geometry (radiographs)."""
    for name in ("PixelSpacing", "ImagerPixelSpacing", "NominalScannedPixelSpacing"):
        vec = _vector(ds.get(name, ()), 2)
        if vec is not None and np.all(vec > 0):
            return float(vec[0]), float(vec[1])
    return 1.0, 1.0


def to_channels_first(frames: NDArray[Any]) -> NDArray[Any]:
    """(frames, rows, cols[, samples]) -> (C, frames, rows, cols)."""
    if frames.ndim == 4:
        return np.moveaxis(frames, -1, 0)
    return frames[None]


def read_dicom_file(path: str | Path) -> MedicalImage:
    """Read one DICOM instance.

    A single frame becomes a 2D image placed in LPS space by ImagePositionPatient /
    ImageOrientationPatient; a multi-frame instance with per-frame positions becomes a volume
    checked like a series; other multi-frame instances (cine, SEG) keep frames on the first axis.

    Example:
        >>> img = read_dicom_file("CT_small.dcm")  # doctest: +SKIP
        >>> img.meta.modality, img.spatial_shape
        ('CT', (128, 128))
    """
    path = Path(path)
    ds = load_dataset(path)
    with corrupt_file_guard(path):
        return _interpret(ds, path)


def _interpret(ds: Dataset, path: Path) -> MedicalImage:
    file_meta = getattr(ds, "file_meta", None)
    if (
        file_meta is not None
        and str(file_meta.get("MediaStorageSOPClassUID", "")) == _DICOMDIR_SOP_CLASS
    ):
        raise UnsupportedFormatError(
            "this is a DICOMDIR index, not an image", path=path, fix="pass the folder instead"
        )
    values, meta = pixel_values(ds, path)
    n_frames = values.shape[0]
    if n_frames > 1:
        from medlens.io.dicom_series import volume_from_frames

        return volume_from_frames(ds, path, values, meta)
    array = to_channels_first(values)[:, 0]
    geom = plane_geometry(ds, frame=0 if "PerFrameFunctionalGroupsSequence" in ds else None)
    if geom is None:
        return MedicalImage(array, spacing=projection_spacing(ds), meta=meta)
    direction = np.stack([geom.col_dir, geom.row_dir, np.cross(geom.col_dir, geom.row_dir)], axis=1)
    return MedicalImage(
        array,
        spacing=geom.pixel_spacing,
        origin=tuple(geom.position),
        direction=direction,
        meta=meta,
    )
