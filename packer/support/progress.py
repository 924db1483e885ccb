"""The one progress helper: a rich progress bar on stderr.

Silent when stderr is not a terminal, with ``SDPACK_NO_PROGRESS=1`` (the tests), and with
``HF_HUB_DISABLE_PROGRESS_BARS=1``: whoever turned the Hub client's bars off wants none of ours.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

_console = Console(stderr=True)


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _enabled() -> bool:
    return (
        sys.stderr.isatty()
        and not os.environ.get("SDPACK_NO_PROGRESS")
        and not _truthy("HF_HUB_DISABLE_PROGRESS_BARS")
    )


class _Task:
    def __init__(self, progress: Progress | None, task_id):
        self._progress, self._id = progress, task_id

    def advance(self, amount: float = 1) -> None:
        if self._progress is not None:
            self._progress.advance(self._id, amount)

    def describe(self, description: str, total: float | None = None) -> None:
        """Start the next phase of the same work on the same bar (from zero when ``total`` is given)."""
        if self._progress is not None:
            fields = {"total": total, "completed": 0} if total is not None else {}
            self._progress.update(self._id, description=description, **fields)


@contextlib.contextmanager
def task(description: str, total: float | None, *, bytes_: bool = False) -> Iterator[_Task]:
    """A progress bar for one long piece of work; ``bytes_`` shows sizes instead of counts."""
    if not _enabled():
        yield _Task(None, None)
        return
    columns = [TextColumn("{task.description}"), BarColumn()]
    columns += (
        [DownloadColumn()] if bytes_ else [TextColumn("{task.completed:.0f}/{task.total:.0f}")]
    )
    with Progress(*columns, TimeRemainingColumn(), console=_console, transient=True) as progress:
        yield _Task(progress, progress.add_task(description, total=total))


def status(message: str) -> None:
    """A one-line status message on stderr (only for the CLI's long-running verbs)."""
    if _enabled() or os.environ.get("SDPACK_VERBOSE"):
        _console.print(f"[dim]{message}[/dim]")
