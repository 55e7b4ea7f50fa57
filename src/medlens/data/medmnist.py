"""MedMNIST files: the official URLs and MD5 checksums (as listed by the ``medmnist`` package),
local copies, and a cached, verified, resumable download."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from medlens.errors import ConfigError, DownloadError

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
_CHUNK = 1 << 16


@lru_cache(maxsize=1)
def medmnist_info() -> dict[str, Any]:
    """Dataset name -> task, labels, sample counts and files per size."""
    text = (
        resources.files("medlens.data").joinpath("medmnist_files.json").read_text(encoding="utf-8")
    )
    info: dict[str, Any] = json.loads(text)
    return info


@lru_cache(maxsize=1)
def published_results() -> dict[str, Any]:
    """Published MedMNIST v2 test AUC / ACC per dataset and method (for side-by-side tables)."""
    text = (
        resources.files("medlens.data")
        .joinpath("medmnist_published.json")
        .read_text(encoding="utf-8")
    )
    results: dict[str, Any] = json.loads(text)
    return results


def file_name(name: str, size: int = 28) -> str:
    """``pneumoniamnist_64.npz`` (size 28 has no suffix, as in the official release)."""
    return f"{name}.npz" if size == 28 else f"{name}_{size}.npz"


def _entry(name: str, size: int) -> dict[str, str]:
    info = medmnist_info()
    if name not in info:
        import difflib

        close = difflib.get_close_matches(name, list(info), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown MedMNIST dataset {name!r}{hint}")
    files = info[name]["files"]
    if str(size) not in files:
        raise ConfigError(f"{name} has no size {size} (available: {', '.join(files)})")
    entry: dict[str, str] = files[str(size)]
    return entry


def md5sum(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def find_local(name: str, size: int, search: Sequence[Path]) -> Path | None:
    """A verified local copy in ``search`` (each folder, or its ``<name>/`` sub-folder)."""
    target, md5 = file_name(name, size), _entry(name, size)["md5"]
    for folder in search:
        for candidate in (folder / target, folder / name / target):
            if candidate.is_file() and md5sum(candidate) == md5:
                return candidate
    return None


def fetch_medmnist(
    name: str,
    *,
    size: int = 28,
    cache_dir: str | Path,
    mirror: str | None = None,
    timeout: float = 30.0,
    progress: Progress | None = None,
) -> Path:
    """Download (or reuse) a MedMNIST file into ``cache_dir`` and verify its MD5.

    An interrupted download resumes from its ``.part`` file with an HTTP Range request.
    ``mirror`` replaces the official host: ``{mirror}/{file name}``.

    Example:
        >>> fetch_medmnist("pneumoniamnist", cache_dir="~/.cache/medlens")  # doctest: +SKIP
    """
    entry = _entry(name, size)
    cache_dir = Path(cache_dir).expanduser()
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_dir / file_name(name, size)
    if target.is_file() and md5sum(target) == entry["md5"]:
        return target
    url = f"{mirror.rstrip('/')}/{file_name(name, size)}" if mirror else entry["url"]
    part = target.with_name(target.name + ".part")
    _download(url, part, timeout=timeout, progress=progress)
    actual = md5sum(part)
    if actual != entry["md5"]:
        part.unlink(missing_ok=True)
        raise DownloadError(
            f"checksum mismatch for {url}: md5 {actual}, expected {entry['md5']}",
            path=target,
            fix="retry; if it persists the mirror serves a different file",
        )
    os.replace(part, target)
    return target


def _download(url: str, part: Path, *, timeout: float, progress: Progress | None) -> None:
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status = getattr(response, "status", 200)
            if status == 200 and have:
                have = 0  # server ignored the Range header: start over
            total = int(response.headers.get("Content-Length", 0) or 0) + have
            with part.open("ab" if have else "wb") as fh:
                while chunk := response.read(_CHUNK):
                    fh.write(chunk)
                    have += len(chunk)
                    if progress is not None:
                        progress(have, total)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:  # already complete
            return
        raise DownloadError(f"download of {url} failed: HTTP {err.code}", path=part) from err
    except (urllib.error.URLError, OSError, TimeoutError) as err:
        raise DownloadError(
            f"download of {url} failed ({err}); the partial file is kept for resuming",
            path=part,
            fix="retry when the network is back, or pass a local copy",
        ) from err
