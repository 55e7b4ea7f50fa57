"""PNG / JPEG / BMP / TIFF / GIF via Pillow (tifffile for TIFFs Pillow cannot decode).

Arrays keep their stored orientation: ``(C, row, column)``, never transposed. PNGs written by
medlens carry their geometry and metadata in a ``medlens`` text chunk, so a round trip keeps them.
"""

from __future__ import annotations

import io
import json
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageOps, PngImagePlugin

from medlens._fs import atomic_path
from medlens.errors import ConfigError, DataError
from medlens.io.image import ImageMeta, MedicalImage

log = logging.getLogger(__name__)

MAX_PIXELS = 256 * 1024 * 1024  # larger images are refused as probable decompression bombs
_MODE_DTYPES = {
    "I;16": np.uint16,
    "I;16B": np.uint16,
    "I;16L": np.uint16,
    "I": np.int32,
    "F": np.float32,
}
_GEOMETRY_KEY = "medlens"
_SIXTEEN_BIT_FORMATS = {".png", ".tif", ".tiff"}


#: EXIF tag of the camera's orientation (1: as stored)
EXIF_ORIENTATION = 0x0112


def _upright(im: Image.Image) -> Image.Image:
    """A photograph (a JPEG of a skin lesion or a slide, say) turned the way its EXIF
    orientation says, as every viewer shows it; pixels are stored as the sensor read them."""
    if im.getexif().get(EXIF_ORIENTATION, 1) in (0, 1):
        return im
    return ImageOps.exif_transpose(im)


def _pil_to_array(im: Image.Image) -> NDArray[Any]:
    mode = im.mode
    if mode == "P":
        palette = im.convert("RGB")
        rgb = np.asarray(palette)
        if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2]):
            return rgb[..., 0]
        return rgb
    if mode in ("1", "L"):
        return np.asarray(im, dtype=np.uint8) * (255 if mode == "1" else 1)
    if mode == "LA":
        return np.asarray(im.convert("L"))
    if mode in _MODE_DTYPES:
        return np.asarray(im).astype(_MODE_DTYPES[mode], copy=False)
    return np.asarray(im.convert("RGB"))


def _to_channels_first(arr: NDArray[Any]) -> NDArray[Any]:
    return np.moveaxis(arr, -1, 0) if arr.ndim == 3 else arr[None]


def read_raster(path: str | Path, data: bytes | None = None) -> MedicalImage:
    """Read a 2D raster image (multi-page TIFF / animated GIF become a stack on the first axis).

    ``data`` decodes these bytes instead of reading ``path``, which then only names the image
    (an upload decoded in memory never touches the disk)."""
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            Image.MAX_IMAGE_PIXELS = MAX_PIXELS
            with Image.open(path if data is None else io.BytesIO(data)) as im:
                info = dict(im.info)
                frames = []
                for index in range(getattr(im, "n_frames", 1)):
                    im.seek(index)
                    frames.append(_pil_to_array(_upright(im)))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise DataError(
            f"image is larger than {MAX_PIXELS} pixels (possible decompression bomb)",
            path=path,
            fix="downsample it with another tool first",
        ) from err
    except Exception as err:  # Pillow raises OSError/SyntaxError/ValueError... on corrupt files
        tiff = data[:4] in (b"II*\x00", b"MM\x00*") if data is not None else False
        if tiff or path.suffix.lower() in (".tif", ".tiff"):
            return _read_tiff_fallback(path, err, data)
        raise DataError(
            f"corrupt or unsupported raster image ({type(err).__name__}: {err})", path=path
        ) from err
    if len({f.shape for f in frames}) != 1:
        frames = frames[:1]
    if len(frames) == 1:
        array = _to_channels_first(frames[0])
    else:
        array = np.stack([_to_channels_first(f) for f in frames], axis=1)
    return _with_geometry(array, info, path)


def _read_tiff_fallback(path: Path, first_error: Exception, raw: bytes | None) -> MedicalImage:
    try:
        import tifffile

        data = np.asarray(tifffile.imread(path if raw is None else io.BytesIO(raw)))
    except Exception as err:
        raise DataError(f"corrupt or unsupported TIFF ({first_error})", path=path) from err
    if data.ndim == 3 and data.shape[-1] in (3, 4):
        data = data[..., :3]
    return _with_geometry(_to_channels_first(data) if data.ndim <= 3 else data, {}, path)


def _with_geometry(array: NDArray[Any], info: dict[Any, Any], path: Path) -> MedicalImage:
    text = info.get(_GEOMETRY_KEY)
    if isinstance(text, str):
        try:
            geo = json.loads(text)
            meta = ImageMeta.from_json(json.dumps(geo["meta"])).replace(source=str(path))
            return MedicalImage(
                array,
                spacing=tuple(geo["spacing"]),
                origin=tuple(geo["origin"]),
                direction=np.asarray(geo["direction"]),
                meta=meta,
            )
        except (ValueError, KeyError, TypeError, DataError):
            log.warning("%s: ignoring unreadable medlens geometry chunk", path)
    spacing = (1.0,) * (array.ndim - 1)
    dpi = info.get("dpi")
    if (
        array.ndim == 3
        and isinstance(dpi, tuple)
        and len(dpi) == 2
        and all(float(d) > 1 for d in dpi)
    ):
        spacing = (25.4 / float(dpi[1]), 25.4 / float(dpi[0]))  # (rows, columns) in mm
    return MedicalImage(array, spacing=spacing, meta=ImageMeta(modality="OT", source=str(path)))


def apply_window(values: NDArray[Any], center: float, width: float) -> NDArray[np.uint8]:
    """Map ``[center - width/2, center + width/2]`` linearly to 0..255 (DICOM-style window)."""
    if width <= 0:
        raise ConfigError(f"window width must be positive, got {width}")
    low = center - width / 2.0
    scaled = (values.astype(np.float64) - low) / width
    return (np.clip(scaled, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _displayable(
    image: MedicalImage, suffix: str, window: tuple[float, float] | None
) -> NDArray[Any]:
    """(rows, cols[, 3]) array in a dtype the format stores."""
    array = image.array
    if window is not None:
        out: NDArray[Any] = apply_window(array, *window)
    elif array.dtype == np.uint8 or (array.dtype == np.uint16 and suffix in _SIXTEEN_BIT_FORMATS):
        out = array
    elif array.dtype == np.bool_:
        out = array.astype(np.uint8) * 255
    elif (
        array.dtype.kind in "iu"
        and suffix in _SIXTEEN_BIT_FORMATS
        and image.channels == 1
        and array.min() >= 0
        and array.max() <= 65535
    ):
        out = array.astype(np.uint16)
    elif image.meta.window_center is not None and image.meta.window_width:
        out = apply_window(array, image.meta.window_center, image.meta.window_width)
    else:
        low, high = float(array.min()), float(array.max())
        log.info("%s: no window given; mapping %g..%g to 0..255", suffix, low, high)
        out = apply_window(array, (low + high) / 2.0, max(high - low, 1e-12))
    return out[0] if image.channels == 1 else np.moveaxis(out, 0, -1)


def write_raster(
    image: MedicalImage, path: str | Path, *, window: tuple[float, float] | None = None
) -> Path:
    """Write a 2D image as PNG/JPEG/BMP/TIFF, optionally through a ``(center, width)`` window.

    uint8 (and uint16 for PNG/TIFF) values are stored exactly; other values need a window (the
    argument, else the image's own DICOM window, else its min..max). PNGs keep the geometry.
    """
    path = Path(path)
    if image.spatial_dims != 2:
        raise ConfigError(
            f"{path.suffix} holds 2D images but this image is 3D {image.spatial_shape}",
            fix="write NIfTI (.nii.gz) instead, or pick a slice first",
        )
    if image.channels not in (1, 3):
        raise ConfigError(f"{path.suffix} needs 1 or 3 channels, got {image.channels}")
    suffix = path.suffix.lower()
    data = _displayable(image, suffix, window)
    if data.dtype == np.uint16 and suffix not in _SIXTEEN_BIT_FORMATS:
        data = apply_window(data, 32767.5, 65535)
    pil = Image.fromarray(np.ascontiguousarray(data))
    params: dict[str, Any] = {}
    if suffix == ".png":
        chunk = PngImagePlugin.PngInfo()
        geometry = {
            "spacing": list(image.spacing),
            "origin": list(image.origin),
            "direction": image.direction.tolist(),
            "meta": json.loads(image.meta.replace(source=None).to_json()),
        }
        chunk.add_text(_GEOMETRY_KEY, json.dumps(geometry))
        params["pnginfo"] = chunk
    elif suffix in (".jpg", ".jpeg"):
        params["quality"] = 95
    if suffix in (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp"):
        params["dpi"] = (25.4 / image.spacing[1], 25.4 / image.spacing[0])
    with atomic_path(path) as tmp:
        pil.save(tmp, format=Image.registered_extensions().get(suffix), **params)
    return path
