"""Console, settings from the environment (read only here), progress bars and error reporting."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console()
err_console = Console(stderr=True)


def cache_dir() -> Path:
    """``MEDLENS_CACHE`` or ``~/.cache/medlens``."""
    return Path(os.environ.get("MEDLENS_CACHE", "~/.cache/medlens")).expanduser()


def data_dirs() -> list[Path]:
    """Where local copies of datasets are looked for: ``MEDLENS_DATA`` then ``../shared/data``."""
    dirs = [Path(p) for p in os.environ.get("MEDLENS_DATA", "").split(os.pathsep) if p]
    here = Path.cwd()
    dirs += [here / "../shared/data", here / "shared/data"]
    return [d.resolve() for d in dirs if d.is_dir()]


@contextlib.contextmanager
def progress_bar(description: str) -> Iterator[Callable[[int, int], None]]:
    """A transient rich progress bar on stderr (terminals only); yields ``update(done, total)``."""
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(
        *columns, console=err_console, transient=True, disable=not err_console.is_terminal
    ) as bar:
        task = bar.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total or None)

        yield update


def mask_id(value: str | None, show: bool) -> str:
    """Patient/study identifiers are masked unless the user asks to see them."""
    if not value:
        return "-"
    if show:
        return value
    return f"{value[:2]}***" if len(value) > 4 else "***"
