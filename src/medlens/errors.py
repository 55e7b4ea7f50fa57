"""The medlens exception tree.

Every error a user can cause derives from :class:`MedlensError`. Messages name the file, say what was
found, what was expected and what to do; the CLI prints them on one line without a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class MedlensError(Exception):
    """Root of every error raised by medlens for bad input or configuration."""

    def __init__(self, message: str, *, path: str | Path | None = None, fix: str | None = None):
        self.message = message
        self.path = str(path) if path is not None else None
        self.fix = fix
        parts = [f"{self.path}: {message}" if self.path else message]
        if fix:
            parts.append(f"Fix: {fix}")
        super().__init__(" ".join(parts))

    def __reduce__(self) -> tuple[Any, ...]:
        # rebuilt from its parts, so an error raised in a worker process keeps path and fix
        return _rebuild, (type(self), self.message, self.path, self.fix)


def _rebuild(
    cls: type[MedlensError], message: str, path: str | None, fix: str | None
) -> MedlensError:
    return cls(message, path=path, fix=fix)


class DataError(MedlensError):
    """The content of a file or dataset is unusable (corrupt, empty, NaN voxels, bad labels...)."""


class UnsupportedFormatError(DataError):
    """The file is not in a format medlens can read or write, or its codec is unavailable."""


class ImageTooLargeError(DataError):
    """An image's headers promise more decoded values than the caller allows."""


class DicomSeriesError(DataError):
    """A DICOM folder cannot be assembled into one volume with trustworthy geometry."""


class ManifestError(DataError):
    """A manifest CSV has missing columns, missing files or inconsistent rows."""


class LeakageError(ManifestError):
    """Train/validation/test splits share patients (or studies)."""


class ConfigError(MedlensError):
    """An argument, option or setting is invalid."""


class DownloadError(MedlensError):
    """A download failed or its checksum does not match."""


class ArtifactError(MedlensError):
    """A model artifact or checkpoint is missing files, corrupt, or from an incompatible version."""
