"""Turning untrusted bytes into a `MedicalImage`, or a one-line refusal with an HTTP status.

Limits are checked before the expensive step they protect: the byte size before anything is
written, zip members (count, sizes, names, links) before extraction, and the pixel count from
the file *header* before any pixel is decoded, so a small compressed file that would decode to
gigabytes (a decompression bomb) is refused cheaply.
"""

from __future__ import annotations

import hashlib
import io
import re
import stat
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from medlens.errors import ImageTooLargeError, MedlensError
from medlens.io import detect_format, is_raster_bytes, read_image
from medlens.io.dicom import declared_values, load_dataset
from medlens.io.image import MedicalImage
from medlens.io.raster import read_raster


@dataclass(frozen=True)
class Limits:
    """Bounds on one request's input."""

    max_bytes: int = 256 * 2**20
    max_pixels: int = 128 * 2**20  # decoded values (voxels x channels)
    max_zip_members: int = 4096
    max_zip_bytes: int = 1024 * 2**20  # uncompressed total


class UploadError(Exception):
    """A refusal the client caused: an HTTP status and a one-line reason."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def _raster_pixels(source: Path | io.BytesIO) -> int:
    from PIL import Image

    with Image.open(source) as im:
        return im.width * im.height * len(im.getbands()) * getattr(im, "n_frames", 1)


def _header_pixels(path: Path) -> int | None:
    """Decoded value count from the header alone (None when the format has no cheap header)."""
    kind = detect_format(path)
    if kind == "raster":
        return _raster_pixels(path)
    if kind == "dicom":
        return declared_values(load_dataset(path, stop_before_pixels=True, require_pixels=False))
    if kind == "nifti":
        import nibabel as nib

        count = 1
        for n in nib.load(path).shape:  # type: ignore[attr-defined]  # header only
            count *= int(n)
        return count
    if kind == "itk":
        import SimpleITK as sitk

        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        try:
            reader.ReadImageInformation()
        except RuntimeError:  # unreadable: read_image says why, in one line
            return None
        count = int(reader.GetNumberOfComponents())
        for n in reader.GetSize():
            count *= int(n)
        return count
    return None


def check_pixels(paths: list[Path], limits: Limits, name: str) -> None:
    """Refuse (413) when the headers of ``paths`` promise more decoded values than allowed;
    files that are not images (a DICOMDIR's notes, say) count as nothing."""
    total = 0
    for path in paths:
        try:
            total += _header_pixels(path) or 0
        except MedlensError:
            continue
        _check_total(total, limits, name)


def _check_total(values: int, limits: Limits, name: str) -> None:
    if values > limits.max_pixels:
        raise UploadError(
            413,
            f"{name}: decodes to more than {limits.max_pixels:,} values "
            f"(limit of this server; a decompression bomb or a far too large image)",
        )


def _safe_member(name: str) -> bool:
    parts = PurePosixPath(name.replace("\\", "/"))
    return not (
        parts.is_absolute()
        or ".." in parts.parts
        or re.match(r"^[A-Za-z]:", name) is not None
        or "\x00" in name
    )


def extract_zip(data: bytes, folder: Path, limits: Limits, name: str) -> list[Path]:
    """Members of a zip into ``folder`` under flat generated names, after refusing traversal,
    links, too many members and too many (declared or actual) bytes."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise UploadError(400, f"{name}: corrupt zip archive") from None
    with archive:
        members = [m for m in archive.infolist() if not m.is_dir()]
        if len(members) > limits.max_zip_members:
            raise UploadError(413, f"{name}: more than {limits.max_zip_members} files in the zip")
        for member in archive.infolist():
            if not _safe_member(member.filename):
                raise UploadError(
                    400,
                    f"{name}: zip member {member.filename!r} points outside the archive (refused)",
                )
            if stat.S_ISLNK(member.external_attr >> 16):
                raise UploadError(
                    400, f"{name}: zip member {member.filename!r} is a link (refused)"
                )
        if sum(m.file_size for m in members) > limits.max_zip_bytes:
            raise UploadError(413, f"{name}: unpacks to more than {limits.max_zip_bytes:,} bytes")
        paths, budget = [], limits.max_zip_bytes
        for k, member in enumerate(members):
            target = folder / f"{k:05d}.dcm"
            with archive.open(member) as source, target.open("wb") as sink:
                while chunk := source.read(1 << 20):
                    budget -= len(chunk)
                    if budget < 0:  # the declared sizes lied
                        raise UploadError(413, f"{name}: unpacks to more than declared")
                    sink.write(chunk)
            paths.append(target)
    if not paths:
        raise UploadError(400, f"{name}: the zip is empty")
    return paths


def read_upload(data: bytes, filename: str, limits: Limits) -> MedicalImage:
    """The image in an upload (a file, or a zip of one DICOM series) within ``limits``.

    PNG/JPEG/GIF/TIFF/BMP bytes are decoded in memory (faster, and no copy of the image on
    disk); other formats, whose readers take paths, go through a private temporary folder."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(filename or "upload").name)[:80] or "upload"
    if not data:
        raise UploadError(400, f"{name}: empty upload")
    if len(data) > limits.max_bytes:
        raise UploadError(413, f"{name}: larger than {limits.max_bytes:,} bytes")
    if is_raster_bytes(data[:1024]):
        with _refusals(name):
            _check_total(_raster_pixels(io.BytesIO(data)), limits, name)
            image = read_raster(name, data)
    else:
        with (
            tempfile.TemporaryDirectory(prefix="medlens-upload-") as tmp,
            _refusals(name, Path(tmp)),
        ):
            image = _read_on_disk(data, name, Path(tmp), limits)
    if image.array.size > limits.max_pixels:
        raise UploadError(413, f"{name}: decodes to more than {limits.max_pixels:,} values")
    return image


def _read_on_disk(data: bytes, name: str, workdir: Path, limits: Limits) -> MedicalImage:
    if data.startswith(b"PK\x03\x04"):
        folder = workdir / "series"
        folder.mkdir()
        extract_zip(data, folder, limits, name)
        # the series reader checks the headers it parses anyway, before decoding any pixel
        return read_image(folder, max_values=limits.max_pixels)
    suffix = "".join(Path(name).suffixes[-2:]).lower()
    path = workdir / f"upload{suffix if re.fullmatch(r'[.a-z0-9]{0,12}', suffix) else ''}"
    path.write_bytes(data)
    if suffix not in KNOWN_SUFFIXES:  # a raw body or a renamed file: name it by its content
        path = path.rename(workdir / f"upload{_content_suffix(path, data)}")
    if detect_format(path) == "itk":
        _refuse_detached(data, name)
    check_pixels([path], limits, name)
    return read_image(path)


#: suffixes the NIfTI and ITK readers (which choose their decoder by name) understand
KNOWN_SUFFIXES = {".nii", ".nii.gz", ".hdr", ".img", ".nrrd", ".nhdr", ".mha", ".mhd"}


def _content_suffix(path: Path, data: bytes) -> str:
    """The suffix the readers need for a file of ``path``'s content ('' for DICOM and others
    that are recognised without one)."""
    kind = detect_format(path)
    if kind == "nifti":
        return ".nii.gz" if data.startswith(b"\x1f\x8b") else ".nii"
    if kind == "itk":
        return ".nrrd" if data.startswith(b"NRRD") else ".mha"
    return ""


def detached_file(header: bytes) -> str | None:
    """The separate data file a MetaImage/NRRD header names (None when the pixels follow the
    header): the reader opens that path, wherever it points."""
    if header.startswith(b"NRRD"):  # fields end at the first blank line
        for line in header[:65536].split(b"\n\n", 1)[0].splitlines():
            key, _, value = line.partition(b":")
            if key.strip().lower() in (b"data file", b"datafile"):
                return value.strip().decode(errors="replace")
        return None
    found = re.search(rb"^\s*ElementDataFile\s*=\s*(.+?)\s*$", header[:65536], re.M | re.I)
    if found is None or found.group(1).lower() == b"local":
        return None
    return found.group(1).decode(errors="replace")


def _refuse_detached(data: bytes, name: str) -> None:
    if detached_file(data) is not None:
        raise UploadError(
            400,
            f"{name}: the header names a separate data file (upload a single-file .mha or .nrrd)",
        )


def _check_detached(path: Path, allowed: list[Path]) -> None:
    """A referenced MetaImage/NRRD header may name a data file only inside ``allowed``."""
    with path.open("rb") as fh:
        named = detached_file(fh.read(65536))
    if named is None:
        return
    target = (path.parent / named).resolve()
    if named.split()[0] != named or not any(target.is_relative_to(d) for d in allowed):
        raise UploadError(
            403, f"{path.name}: its data file is outside the folders this server may read"
        )


@contextmanager
def _refusals(name: str, workdir: Path | None = None) -> Iterator[None]:
    """Reader and decoder failures as 422s (413: over the size limit) that name the client's
    file, never a server path."""
    try:
        yield
    except MedlensError as err:
        text = " ".join(str(err).split())
        if workdir is not None:
            text = re.sub(re.escape(str(workdir)) + r"[^\s:]*", name, text)
        status = 413 if isinstance(err, ImageTooLargeError) else 422
        raise UploadError(status, text if text.startswith(name) else f"{name}: {text}") from None
    except (OSError, ValueError, EOFError, SyntaxError) as err:  # decoder errors from libraries
        raise UploadError(422, f"{name}: unreadable image ({type(err).__name__})") from None


def read_reference(raw: str, allowed: list[Path], limits: Limits) -> tuple[MedicalImage, str]:
    """A server-side file or DICOM folder named by a client, if it lies inside ``allowed``
    (symbolic links resolved first), and the SHA-256 of its bytes."""
    if not allowed:
        raise UploadError(
            403, "reading files by reference is off (start the server with --allow-dir)"
        )
    try:
        resolved = Path(raw).expanduser().resolve(strict=True)
    except (OSError, RuntimeError):
        raise UploadError(404, "referenced file not found") from None
    if not any(resolved.is_relative_to(folder) for folder in allowed):
        raise UploadError(403, "referenced file is outside the folders this server may read")
    files = (
        sorted(p for p in resolved.rglob("*") if p.is_file()) if resolved.is_dir() else [resolved]
    )
    name = resolved.name
    if sum(p.stat().st_size for p in files) > limits.max_bytes:
        raise UploadError(413, f"{name}: larger than {limits.max_bytes:,} bytes")
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.read_bytes())
        if path.suffix.lower() in {".mhd", ".mha", ".nhdr", ".nrrd"}:
            _check_detached(path, allowed)
    if not resolved.is_dir():  # a DICOM folder's headers are checked as the series is read
        check_pixels(files, limits, name)
    try:
        image = read_image(resolved, max_values=limits.max_pixels)
    except ImageTooLargeError:
        raise UploadError(
            413, f"{name}: decodes to more than {limits.max_pixels:,} values"
        ) from None
    except MedlensError as err:
        raise UploadError(422, " ".join(str(err).split())) from None
    if image.array.size > limits.max_pixels:
        raise UploadError(413, f"{name}: decodes to more than {limits.max_pixels:,} values")
    return image, digest.hexdigest()
