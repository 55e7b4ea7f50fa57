"""Fake DICOM series written with pydicom, with the traps real archives have.

Shuffled file names and InstanceNumbers, rescale slope/intercept, oblique orientation,
MONOCHROME1, gantry tilt, uneven spacing, RLE compression. The writer returns the ground truth
volume as a :class:`MedicalImage`, so reader tests compare against known geometry.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, RLELossless, generate_uid

from medlens.data.synthetic import rotation_matrix
from medlens.io.image import ImageMeta, MedicalImage


@dataclass(frozen=True)
class SeriesSpec:
    """How to write a fake series. ``slice_offsets`` overrides the regular slice positions (mm)."""

    spacing: tuple[float, float, float] = (2.5, 0.8, 0.8)  # (slice, row, column) mm
    origin: tuple[float, float, float] = (-100.0, -120.0, 50.0)
    rotation_deg: tuple[float, float, float] = (0.0, 0.0, 0.0)
    rescale: tuple[float, float] = (1.0, -1024.0)  # slope, intercept
    monochrome1: bool = False
    tilt_deg: float = 0.0
    slice_offsets: Sequence[float] | None = None
    shuffle_seed: int | None = 0
    compress_rle: bool = False
    modality: str = "CT"
    patient_id: str = "FAKE-PATIENT-1"
    study_uid: str = field(default_factory=generate_uid)
    series_uid: str = field(default_factory=generate_uid)
    series_number: int = 1
    description: str = "synthetic series"


def write_dicom_series(
    volume: NDArray[Any], folder: str | Path, spec: SeriesSpec | None = None
) -> MedicalImage:
    """Write ``volume`` (D, H, W) of real values (e.g. HU) as one DICOM file per slice.

    Returns the ground truth: the values and LPS geometry a correct reader must produce
    (slices ordered along the slice normal).
    """
    spec = spec or SeriesSpec()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    depth = volume.shape[0]
    rot = rotation_matrix(spec.rotation_deg)
    row_dir, col_dir, normal = rot[:, 0], rot[:, 1], rot[:, 2]
    offsets = np.asarray(
        spec.slice_offsets
        if spec.slice_offsets is not None
        else np.arange(depth) * spec.spacing[0],
        dtype=np.float64,
    )
    shear = np.tan(np.radians(spec.tilt_deg))
    positions = [np.asarray(spec.origin) + normal * z + col_dir * (shear * z) for z in offsets]
    slope, intercept = spec.rescale
    stored = np.round((volume.astype(np.float64) - intercept) / slope).astype(np.int16)
    order = np.arange(depth)
    if spec.shuffle_seed is not None:
        order = np.random.default_rng(spec.shuffle_seed).permutation(depth)
    for file_index, k in enumerate(order):
        ds = _slice_dataset(
            spec, stored[k], positions[k], row_dir, col_dir, instance=int(depth - k)
        )
        name = f"IM{file_index:04d}_{ds.SOPInstanceUID[-6:]}.dcm"
        ds.save_as(folder / name, enforce_file_format=True)
    meta = ImageMeta(
        modality=spec.modality,
        patient_id=spec.patient_id,
        study_uid=spec.study_uid,
        series_uid=spec.series_uid,
        series_description=spec.description,
    )
    truth = (slope * stored.astype(np.float64) + intercept)[None]
    return MedicalImage(
        truth,
        spacing=spec.spacing,
        origin=tuple(positions[0]),
        direction=np.stack([normal, col_dir, row_dir], axis=1),
        meta=meta,
    )


def _slice_dataset(
    spec: SeriesSpec,
    stored: NDArray[np.int16],
    position: NDArray[np.float64],
    row_dir: NDArray[np.float64],
    col_dir: NDArray[np.float64],
    instance: int,
) -> Dataset:
    file_meta = FileMetaDataset()
    file_meta.MediaStorageSOPClassUID = CTImageStorage
    file_meta.MediaStorageSOPInstanceUID = generate_uid()
    file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = file_meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = file_meta.MediaStorageSOPInstanceUID
    ds.PatientID = spec.patient_id
    ds.PatientName = "Fake^Patient"
    ds.StudyInstanceUID = spec.study_uid
    ds.SeriesInstanceUID = spec.series_uid
    ds.SeriesNumber = spec.series_number
    ds.SeriesDescription = spec.description
    ds.Modality = spec.modality
    ds.InstanceNumber = instance
    ds.ImagePositionPatient = [f"{v:.6f}" for v in position]
    ds.ImageOrientationPatient = [f"{v:.8f}" for v in (*row_dir, *col_dir)]
    ds.PixelSpacing = [f"{spec.spacing[1]:.6f}", f"{spec.spacing[2]:.6f}"]
    ds.SliceThickness = f"{spec.spacing[0]:.6f}"
    ds.GantryDetectorTilt = f"{spec.tilt_deg:.3f}"
    ds.RescaleSlope = f"{spec.rescale[0]:g}"
    ds.RescaleIntercept = f"{spec.rescale[1]:g}"
    ds.WindowCenter = "40"
    ds.WindowWidth = "400"
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel = 1
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    pixels = stored
    if spec.monochrome1:
        pixels = (-1 - stored.astype(np.int32)).astype(np.int16)  # signed inversion: v -> -1 - v
        ds.PhotometricInterpretation = "MONOCHROME1"
    else:
        ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = np.ascontiguousarray(pixels).astype("<i2").tobytes()
    if spec.compress_rle:
        ds.compress(RLELossless)
    return ds
