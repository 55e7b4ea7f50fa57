"""DICOM series: scan a folder, group by SeriesInstanceUID, assemble a volume with checked geometry.

Slices are ordered by ImagePositionPatient projected on the slice normal (never by file name or
InstanceNumber). Uneven spacing, duplicate positions and gantry tilt are detected; they are refused
with an actionable error, or - when asked - resampled onto a regular orthogonal grid.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset
from scipy import ndimage

from medlens.errors import DataError, DicomSeriesError, ImageTooLargeError
from medlens.io.dicom import (
    PlaneGeometry,
    corrupt_file_guard,
    declared_values,
    decoded_values,
    has_dicom_preamble,
    load_dataset,
    pixel_values,
    plane_geometry,
    projection_spacing,
    to_channels_first,
)
from medlens.io.image import ImageMeta, MedicalImage

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]

_RAW_DICOM_SUFFIXES = {".dcm", ".dicom", ".ima", ""}
_REL_SPACING_TOLERANCE = 0.01  # gaps may differ from the median by 1 % (DS rounding, table jitter)
_TILT_TOLERANCE_PIXELS = 0.1  # lateral drift of the last slice allowed before calling it a tilt


@dataclass
class SeriesInfo:
    """One series found in a folder."""

    uid: str
    number: str | None
    description: str | None
    modality: str | None
    patient_id: str | None
    study_uid: str | None
    files: list[Path] = field(default_factory=list)
    #: each file's own PatientID (None where blank), in the order of ``files``
    patients: list[str | None] = field(default_factory=list)
    #: files skipped because an earlier file holds the same instance (SOPInstanceUID)
    duplicates: list[Path] = field(default_factory=list)
    instances: set[str] = field(default_factory=set, repr=False)

    def label(self) -> str:
        desc = self.description or "no description"
        return f"{self.uid} (#{self.number or '?'} {self.modality or '?'} '{desc}', {len(self.files)} files)"


def looks_like_dicom(path: Path) -> bool:
    """Cheap content check: DICM preamble, or a preamble-less dataset starting with group 0x0008."""
    try:
        with path.open("rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    if has_dicom_preamble(head):
        return True
    return path.suffix.lower() in _RAW_DICOM_SUFFIXES and head[:2] in (b"\x08\x00", b"\x02\x00")


#: modalities whose images are projections: several in one series are views, not slices
PROJECTION_MODALITIES = {"CR", "DX", "MG", "XA", "RF", "IO", "PX"}


def is_volume(info: SeriesInfo) -> bool:
    """Whether a series is read as one volume (its slices stacked) rather than image by image."""
    return len(info.files) > 1 and (info.modality or "").upper() not in PROJECTION_MODALITIES


def series_folder(info: SeriesInfo) -> Path:
    """The deepest folder holding every file of a series (what to read it from)."""
    return Path(os.path.commonpath([f.parent for f in info.files]))


def dicom_files(folder: Path) -> list[Path]:
    """All DICOM-looking files under ``folder`` (recursive, sorted for reproducibility)."""
    return [p for p in sorted(folder.rglob("*")) if p.is_file() and looks_like_dicom(p)]


def scan_series(folder: str | Path) -> dict[str, SeriesInfo]:
    """Group the DICOM files under ``folder`` by SeriesInstanceUID (headers only).

    Example:
        >>> for info in scan_series("study/").values():  # doctest: +SKIP
        ...     print(info.label())
    """
    return _scan(Path(folder), with_pixels=False)[0]


def _scan(folder: Path, *, with_pixels: bool) -> tuple[dict[str, SeriesInfo], dict[Path, Dataset]]:
    """One pass over the folder; with ``with_pixels`` the parsed datasets are kept for reuse."""
    series: dict[str, SeriesInfo] = {}
    datasets: dict[Path, Dataset] = {}
    for path in dicom_files(folder):
        ds = load_dataset(path, stop_before_pixels=not with_pixels, require_pixels=False)
        with corrupt_file_guard(path):
            _add_to_series(series, datasets, path, ds, with_pixels)
    for info in series.values():
        if info.duplicates:
            _warn_duplicates(info.uid, tuple(str(p) for p in info.duplicates))
    return series, datasets


# once per series and file set: predict scans a tree, then reads each series from its folder
@functools.lru_cache(maxsize=256)
def _warn_duplicates(uid: str, paths: tuple[str, ...]) -> None:
    names = ", ".join(Path(p).name for p in paths[:3]) + (" ..." if len(paths) > 3 else "")
    log.warning(
        "series %s: %d file(s) hold an instance already read (same SOPInstanceUID: a second copy "
        "or another transfer syntax) and were skipped: %s",
        uid,
        len(paths),
        names,
    )


def _add_to_series(
    series: dict[str, SeriesInfo],
    datasets: dict[Path, Dataset],
    path: Path,
    ds: Dataset,
    with_pixels: bool,
) -> None:
    if "Rows" not in ds or (with_pixels and "PixelData" not in ds and "FloatPixelData" not in ds):
        return  # reports, presentation states, DICOMDIR: not images
    uid = str(ds.get("SeriesInstanceUID", "") or "") or "unknown-series"
    info = series.get(uid)
    if info is None:
        info = series[uid] = SeriesInfo(
            uid=uid,
            number=str(ds.get("SeriesNumber", "") or "") or None,
            description=str(ds.get("SeriesDescription", "") or "") or None,
            modality=str(ds.get("Modality", "") or "") or None,
            patient_id=str(ds.get("PatientID", "") or "") or None,
            study_uid=str(ds.get("StudyInstanceUID", "") or "") or None,
        )
    instance = str(ds.get("SOPInstanceUID", "") or "")
    if instance in info.instances:
        info.duplicates.append(path)
        return
    if instance:
        info.instances.add(instance)
    info.files.append(path)
    info.patients.append(str(ds.get("PatientID", "") or "") or None)
    if with_pixels:
        datasets[path] = ds


def select_series(folder: Path, series: dict[str, SeriesInfo], wanted: str | None) -> SeriesInfo:
    """Pick one series by UID or SeriesNumber; refuse to guess when there are several."""
    if not series:
        raise DataError(
            "no DICOM image files found in this folder",
            path=folder,
            fix="point to a folder that contains .dcm files (sub-folders are searched)",
        )
    if wanted is None:
        if len(series) == 1:
            return next(iter(series.values()))
        listing = "; ".join(info.label() for info in series.values())
        raise DicomSeriesError(
            f"folder contains {len(series)} series, refusing to mix them: {listing}",
            path=folder,
            fix="choose one with series_uid=UID (CLI: --series UID or --series NUMBER)",
        )
    for info in series.values():
        if wanted in (info.uid, info.number):
            return info
    raise DicomSeriesError(
        f"series {wanted!r} not found; available: {', '.join(i.label() for i in series.values())}",
        path=folder,
    )


def _check_one_patient(info: SeriesInfo, folder: Path) -> None:
    """A series belongs to one patient; slices of several stacked into one volume would be one
    silently wrong image (UIDs copied or kept when the data were pseudonymised file by file)."""
    found = sorted({p for p in info.patients if p is not None})
    if len(found) > 1:
        shown = ", ".join(repr(p) for p in found[:3]) + (" ..." if len(found) > 3 else "")
        raise DicomSeriesError(
            f"series {info.uid} holds images of {len(found)} patients ({shown}); a series "
            "belongs to one patient, so its slices cannot be stacked into one volume",
            path=folder,
            fix="re-export the series with new SeriesInstanceUIDs per patient (the UIDs were "
            "probably kept when the data were pseudonymised), or read the files one by one",
        )


def _check_declared(
    info: SeriesInfo, datasets: dict[Path, Dataset], max_values: int, folder: Path
) -> None:
    declared = 0
    for path in info.files:
        with corrupt_file_guard(path):
            declared += declared_values(datasets[path])
        if declared > max_values:
            raise ImageTooLargeError(
                f"the series decodes to more than {max_values:,} values", path=folder
            )


def read_dicom_series(
    folder: str | Path,
    *,
    series_uid: str | None = None,
    resample_irregular: bool = False,
    progress: Progress | None = None,
    max_values: int | None = None,
) -> MedicalImage:
    """Read one DICOM series from a folder into a volume ``(C, slice, row, column)``.

    Args:
        folder: folder holding the series (searched recursively).
        series_uid: SeriesInstanceUID or SeriesNumber to pick when the folder holds several.
        resample_irregular: resample uneven spacing / gantry tilt onto a regular grid instead of
            raising :class:`DicomSeriesError`.
        progress: optional ``callback(done, total)``.
        max_values: refuse (:class:`ImageTooLargeError`) a series whose headers promise more
            decoded values than this, before any pixel is decoded (a decompression bomb).

    Example:
        >>> vol = read_dicom_series("dicom_mr_brain_sag_series")  # doctest: +SKIP
        >>> vol.spatial_shape
        (192, 256, 256)
    """
    folder = Path(folder)
    series, datasets = _scan(folder, with_pixels=True)
    info = select_series(folder, series, series_uid)
    _check_one_patient(info, folder)
    if max_values is not None:
        _check_declared(info, datasets, max_values, folder)
    planes: list[PlaneGeometry] = []
    frames: list[NDArray[Any]] = []
    meta: ImageMeta | None = None
    for i, path in enumerate(info.files):
        ds = datasets[path]
        with corrupt_file_guard(path):
            if meta is None:
                values, meta = pixel_values(ds, path)
            else:
                values = decoded_values(ds, path)
            per_frame = "PerFrameFunctionalGroupsSequence" in ds
            for f in range(values.shape[0]):
                geom = plane_geometry(ds, frame=f if per_frame else None)
                if geom is None:
                    raise DicomSeriesError(
                        "slice has no ImagePositionPatient/ImageOrientationPatient, so the series "
                        "cannot be assembled into a volume",
                        path=path,
                        fix="read the files one by one with read_image(file)",
                    )
                planes.append(geom)
                frames.append(values[f])
        if progress is not None:
            progress(i + 1, len(info.files))
    if meta is None:  # unreachable: select_series never returns an empty series
        raise DataError("series has no readable slices", path=folder)
    meta = meta.replace(source=str(folder))
    if len(frames) == 1:
        geom = planes[0]
        direction = np.stack([geom.col_dir, geom.row_dir, np.cross(geom.col_dir, geom.row_dir)], 1)
        return MedicalImage(
            to_channels_first(frames[0][None])[:, 0],
            spacing=geom.pixel_spacing,
            origin=tuple(geom.position),
            direction=direction,
            meta=meta,
        )
    return assemble_volume(
        planes, frames, meta, source=folder, resample_irregular=resample_irregular
    )


def volume_from_frames(
    ds: Dataset, path: Path, values: NDArray[Any], meta: ImageMeta
) -> MedicalImage:
    """A multi-frame instance: a checked volume when frames have distinct positions, else a stack."""
    n = values.shape[0]
    per_frame = "PerFrameFunctionalGroupsSequence" in ds
    planes = [plane_geometry(ds, frame=i) for i in range(n)] if per_frame else []
    if planes and all(p is not None for p in planes):
        complete = [p for p in planes if p is not None]
        try:
            return assemble_volume(complete, list(values), meta, source=path)
        except DicomSeriesError as err:
            log.info("%s: frames kept in file order (%s)", path, err)
    # Cine loops, SEG segments and frames without positions: keep file order, claim no geometry.
    row_spacing, col_spacing = projection_spacing(ds)
    meta = meta.replace(
        extra={**meta.extra, "frame_axis": "frames in file order, no slice geometry"}
    )
    return MedicalImage(
        to_channels_first(values), spacing=(1.0, row_spacing, col_spacing), meta=meta
    )


def assemble_volume(
    planes: list[PlaneGeometry],
    frames: list[NDArray[Any]],
    meta: ImageMeta,
    *,
    source: Path,
    resample_irregular: bool = False,
) -> MedicalImage:
    """Sort frames along the slice normal, check the spacing and tilt, and stack them."""
    ref = planes[0]
    shape = frames[0].shape
    for plane, frame in zip(planes, frames, strict=True):
        if not (
            np.allclose(plane.row_dir, ref.row_dir, atol=1e-3)
            and np.allclose(plane.col_dir, ref.col_dir, atol=1e-3)
        ):
            raise DicomSeriesError(
                "slices have different orientations (a localizer or a multi-planar series?)",
                path=source,
                fix="split the series by ImageOrientationPatient before reading it",
            )
        if frame.shape != shape or not np.allclose(
            plane.pixel_spacing, ref.pixel_spacing, rtol=1e-3
        ):
            raise DicomSeriesError(
                f"slices differ in size or pixel spacing ({frame.shape} vs {shape})", path=source
            )
    normal = np.cross(ref.row_dir, ref.col_dir)
    positions = np.stack([p.position for p in planes])
    z = positions @ normal
    order = np.argsort(z, kind="stable")
    z, positions = z[order], positions[order]
    gaps = np.diff(z)
    if np.any(gaps < 1e-3):
        dupes = int(np.sum(gaps < 1e-3))
        raise DicomSeriesError(
            f"{dupes} slices repeat a position already used (multiple echoes, phases or time "
            "points in one series)",
            path=source,
            fix="split the series by EchoTime/TemporalPositionIdentifier before reading it",
        )
    step = float(np.median(gaps))
    uneven = bool(np.max(np.abs(gaps - step)) > _REL_SPACING_TOLERANCE * step)
    lateral = (positions - positions[0]) - np.outer(z - z[0], normal)
    lateral_px = np.abs(
        np.stack(
            [
                lateral @ ref.col_dir / ref.pixel_spacing[0],
                lateral @ ref.row_dir / ref.pixel_spacing[1],
            ]
        )
    )
    tilted = bool(lateral_px.max() > _TILT_TOLERANCE_PIXELS)
    volume = np.stack([frames[i] for i in order])
    notes: list[str] = []
    if tilted or uneven:
        problem = _describe_irregularity(gaps, lateral, z, uneven, tilted)
        if not resample_irregular:
            raise DicomSeriesError(
                problem,
                path=source,
                fix="pass resample_irregular=True (CLI: --resample-irregular) to resample it "
                "onto a regular grid",
            )
        volume, step = _regularise(volume, z, lateral, ref, tilted, uneven, step)
        notes.append(f"resampled: {problem}")
    array = to_channels_first(volume)
    direction = np.stack([normal, ref.col_dir, ref.row_dir], axis=1)
    if notes:
        meta = meta.replace(extra={**meta.extra, "resampled": "; ".join(notes)})
    return MedicalImage(
        array,
        spacing=(step, *ref.pixel_spacing),
        origin=tuple(positions[0]),
        direction=direction,
        meta=meta,
    )


def _describe_irregularity(
    gaps: NDArray[np.float64],
    lateral: NDArray[np.float64],
    z: NDArray[np.float64],
    uneven: bool,
    tilted: bool,
) -> str:
    parts = []
    if uneven:
        parts.append(f"uneven slice spacing (gaps from {gaps.min():.3f} to {gaps.max():.3f} mm)")
    if tilted:
        angle = np.degrees(np.arctan2(np.linalg.norm(lateral[-1]), z[-1] - z[0]))
        parts.append(f"gantry tilt / sheared stack of {angle:.2f} degrees")
    return " and ".join(parts)


def _regularise(
    volume: NDArray[Any],
    z: NDArray[np.float64],
    lateral: NDArray[np.float64],
    ref: PlaneGeometry,
    tilted: bool,
    uneven: bool,
    step: float,
) -> tuple[NDArray[Any], float]:
    """Undo tilt by shifting each slice in-plane, then interpolate slices onto a uniform grid."""
    out = volume.astype(np.float32)
    if tilted:
        fill = float(out.min())
        for k in range(out.shape[0]):
            shift = [
                -(lateral[k] @ ref.col_dir) / ref.pixel_spacing[0],
                -(lateral[k] @ ref.row_dir) / ref.pixel_spacing[1],
            ]
            shift += [0.0] * (out.ndim - 3)  # colour samples are not shifted
            out[k] = ndimage.shift(out[k], shift, order=1, mode="constant", cval=fill)
    if uneven:
        step = float(np.min(np.diff(z)))
        count = int(np.floor((z[-1] - z[0]) / step + 1e-6)) + 1
        targets = z[0] + step * np.arange(count)
        lo = np.clip(np.searchsorted(z, targets, side="right") - 1, 0, len(z) - 2)
        w = ((targets - z[lo]) / (z[lo + 1] - z[lo])).astype(np.float32)
        w = w.reshape((-1,) + (1,) * (out.ndim - 1))
        out = out[lo] * (1 - w) + out[lo + 1] * w
    return out, step
