"""Atomic file writing: a failed write never leaves a partial output behind."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(target: str | Path, *, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` only on success.

    The temporary file keeps the target's suffixes (writers such as nibabel choose the format
    from them), lives in the same folder (so the rename is atomic) and is removed on failure.

    Example:
        >>> with atomic_path("out.nii.gz") as tmp:  # doctest: +SKIP
        ...     nib.save(img, tmp)
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    suffix = suffix if suffix is not None else "".join(target.suffixes)
    fd, name = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=f".part{suffix}", dir=target.parent
    )
    os.close(fd)
    tmp = Path(name)
    tmp.chmod(0o666 & ~_umask())  # mkstemp creates 0600; outputs get the usual permissions
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def remove_partial_writes(folder: Path) -> list[Path]:
    """Delete the temporary files :func:`atomic_path` left in ``folder`` when its writer was
    killed mid-write (a checkpoint's is the size of the model and its optimiser state). Only
    for a folder with one writer, such as a run resuming: a live writer's file looks the same."""
    found = [p for p in folder.glob(".*.part*") if p.is_file()]
    for path in found:
        path.unlink(missing_ok=True)
    return found


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(target: str | Path, data: bytes) -> None:
    """Write ``data`` to ``target`` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(target: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``target`` atomically."""
    atomic_write_bytes(target, text.encode("utf-8"))
