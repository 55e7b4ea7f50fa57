"""Turn what a user types as DATA into a manifest: a path, or ``medmnist:NAME[:SIZE]``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from medlens.cli.common import cache_dir, data_dirs
from medlens.errors import ConfigError

if TYPE_CHECKING:
    from medlens.data import Manifest


def resolve_data(source: str, *, patient_regex: str | None = None) -> Manifest:
    """``medmnist:pneumoniamnist`` (local copy in the data folders, else downloaded) or a path;
    ``patient_regex`` reads patient ids from the file names of a class folder."""
    from medlens.data import load_manifest
    from medlens.data.medmnist import fetch_medmnist, find_local

    if source.startswith("medmnist:"):
        name, _, size_text = source.removeprefix("medmnist:").partition(":")
        try:
            size = int(size_text or 28)
        except ValueError:
            raise ConfigError(f"{source!r}: the size after the name must be a number") from None
        path = find_local(name, size, data_dirs()) or fetch_medmnist(
            name, size=size, cache_dir=cache_dir() / "medmnist"
        )
        return load_manifest(path)
    return load_manifest(source, patient_regex=patient_regex)
