"""The demo dataset: PneumoniaMNIST from a local copy or a download, else built-in phantoms."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from medlens.data.medmnist import fetch_medmnist, find_local
from medlens.data.synthetic import write_chest_folder
from medlens.errors import DownloadError

log = logging.getLogger(__name__)

DEMO_DATASET = "pneumoniamnist"


@dataclass(frozen=True)
class DemoData:
    """Where the demo data is and how it was obtained (``local``, ``download`` or ``phantoms``)."""

    path: Path
    origin: str
    description: str


def prepare_demo_data(
    out: Path,
    *,
    search: Sequence[Path],
    cache_dir: Path,
    offline: bool = False,
    mirror: str | None = None,
) -> DemoData:
    """Find PneumoniaMNIST locally, else download it, else write 600 chest phantoms into ``out``."""
    local = find_local(DEMO_DATASET, 28, search)
    if local is not None:
        return DemoData(local, "local", f"PneumoniaMNIST (local copy, MD5 verified): {local}")
    if not offline:
        try:
            path = fetch_medmnist(DEMO_DATASET, cache_dir=cache_dir, mirror=mirror, timeout=10.0)
            return DemoData(path, "download", f"PneumoniaMNIST (downloaded, MD5 verified): {path}")
        except DownloadError as err:
            log.warning("PneumoniaMNIST download failed (%s); using the built-in phantoms", err)
    # nodules larger than the library default, so that a few minutes of training show a result
    folder = write_chest_folder(
        out / "chest_phantoms", 600, size=64, seed=0, nodule_radius=(0.05, 0.09)
    )
    return DemoData(
        folder,
        "phantoms",
        f"built-in chest phantoms (600 images, 64x64, offline fallback): {folder}",
    )
