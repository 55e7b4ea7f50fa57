"""NumPy ``.npz``: medlens image files (geometry-preserving) and MedMNIST dataset files."""

from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from medlens._fs import atomic_path
from medlens.errors import DataError
from medlens.io.image import ImageMeta, MedicalImage

MEDMNIST_SPLITS = ("train", "val", "test")


def _open(path: Path) -> Any:
    try:
        return np.load(path, allow_pickle=False)
    except Exception as err:  # zipfile.BadZipFile, ValueError, OSError, EOFError...
        raise DataError(
            f"corrupt or unreadable .npz file ({type(err).__name__}: {err})", path=path
        ) from err


def is_medmnist(path: str | Path) -> bool:
    """True when the archive has the MedMNIST keys (``train_images``, ``train_labels``...)."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
    except (zipfile.BadZipFile, OSError):
        return False
    return any(f"{s}_images.npy" in names for s in MEDMNIST_SPLITS)


def write_npz(image: MedicalImage, path: str | Path) -> Path:
    """Write a medlens ``.npz`` with the array, the geometry and the metadata (atomically)."""
    path = Path(path)
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez_compressed(
            tmp,
            image=image.array,
            spacing=np.asarray(image.spacing),
            origin=np.asarray(image.origin),
            direction=image.direction,
            meta=np.asarray(image.meta.replace(source=None).to_json()),
        )
    return path


def read_npz(path: str | Path, selector: str | None = None) -> MedicalImage:
    """Read a medlens ``.npz`` image, or one image of a MedMNIST file with ``selector="train/12"``."""
    path = Path(path)
    with _open(path) as data:
        keys = set(data.files)
        if "image" in keys and selector is None:
            try:
                meta = ImageMeta.from_json(str(data["meta"])) if "meta" in keys else ImageMeta()
                return MedicalImage(
                    data["image"],
                    spacing=tuple(data["spacing"]) if "spacing" in keys else (),
                    origin=tuple(data["origin"]) if "origin" in keys else (0.0, 0.0, 0.0),
                    direction=data["direction"] if "direction" in keys else np.eye(3),
                    meta=meta.replace(source=str(path)),
                )
            except (ValueError, KeyError) as err:
                raise DataError(
                    f"medlens .npz with inconsistent content ({err})", path=path
                ) from err
    if selector is None:
        raise DataError(
            "this .npz is a dataset, not one image",
            path=path,
            fix=f"select an image as '{path}#train/0', or build a manifest with `medlens data split`",
        )
    split, _, index_text = selector.partition("/")
    arrays = read_medmnist(path)
    if split not in arrays:
        raise DataError(f"no split {split!r} (have {', '.join(arrays)})", path=path)
    images, _labels = arrays[split]
    try:
        index = int(index_text)
        item = images[index]
    except (ValueError, IndexError) as err:
        raise DataError(
            f"bad selector {selector!r}: index must be 0..{len(images) - 1}", path=path
        ) from err
    return medmnist_image(item, source=f"{path}#{selector}")


#: The DICOM modality of each MedMNIST collection's source images (MedMNIST v2, Yang et al.
#: 2023), by file name: the files carry no metadata, and the plan treats projection radiographs
#: (DX) differently from calibrated values (CT). Microscopy is SM, fundus OP, dermoscopy XC.
MEDMNIST_MODALITIES = {
    "chestmnist": "DX",
    "pneumoniamnist": "DX",
    "breastmnist": "US",
    "octmnist": "OPT",
    "retinamnist": "OP",
    "dermamnist": "XC",
    "pathmnist": "SM",
    "bloodmnist": "SM",
    "tissuemnist": "SM",
    "organamnist": "CT",
    "organcmnist": "CT",
    "organsmnist": "CT",
    "organmnist3d": "CT",
    "nodulemnist3d": "CT",
    "fracturemnist3d": "CT",
    "adrenalmnist3d": "CT",
    "vesselmnist3d": "MR",
}


def medmnist_modality(source: str) -> str:
    """``.../pneumoniamnist_64.npz#train/3`` -> ``DX``; ``OT`` for a file of another name."""
    stem = Path(source.split("#")[0]).stem.lower()
    return MEDMNIST_MODALITIES.get(re.sub(r"_(28|64|128|224)$", "", stem), "OT")


def medmnist_image(item: NDArray[Any], source: str) -> MedicalImage:
    """One MedMNIST sample as a MedicalImage: (H, W), (H, W, 3) or (D, H, W)."""
    array = np.moveaxis(item, -1, 0) if item.ndim == 3 and item.shape[-1] == 3 else item[None]
    return MedicalImage(array, meta=ImageMeta(modality=medmnist_modality(source), source=source))


@dataclass(frozen=True)
class MedMNISTSplit:
    """Images ``(N, ...)`` and labels ``(N, K)`` of one split."""

    images: NDArray[Any]
    labels: NDArray[Any]

    def __iter__(self) -> Any:
        return iter((self.images, self.labels))

    def __len__(self) -> int:
        return int(self.images.shape[0])


def read_medmnist(path: str | Path) -> dict[str, MedMNISTSplit]:
    """All splits of a MedMNIST ``.npz`` (2D, 2D RGB or 3D), checked for consistency."""
    path = Path(path)
    out: dict[str, MedMNISTSplit] = {}
    with _open(path) as data:
        for split in MEDMNIST_SPLITS:
            if f"{split}_images" not in data.files:
                continue
            try:
                images, labels = data[f"{split}_images"], data[f"{split}_labels"]
            except Exception as err:
                raise DataError(
                    f"cannot read split {split!r} ({type(err).__name__}: {err})", path=path
                ) from err
            if labels.ndim == 1:
                labels = labels[:, None]
            if images.shape[0] != labels.shape[0] or images.ndim not in (3, 4):
                raise DataError(
                    f"split {split!r}: {images.shape[0]} images of shape {images.shape[1:]} but "
                    f"{labels.shape[0]} labels",
                    path=path,
                )
            out[split] = MedMNISTSplit(images, labels)
    if not out:
        raise DataError("no MedMNIST splits (train_images/val_images/test_images) found", path=path)
    return out
