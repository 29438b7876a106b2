"""Progress bars for raylung's long commands: items done of the total and time left, on stderr.

Every command builds its bar with :func:`progress_bar`, so they look and behave alike. The
environment variable ``RAYLUNG_PROGRESS`` decides how they show:

- ``auto`` (default): an animated bar when stderr is an interactive terminal; otherwise (a log
  file, a pipe, a test's captured output) no animation, and each task states itself once when
  its bar closes, e.g. ``decoding images: 1000/1000 in 3.2 s``.
- ``always``: the animated bar even when stderr is not a terminal (rich's forced terminal); its
  last frame stays in the output.
- ``never``: nothing.

Inside a Ray worker process a bar draws and states nothing whatever the setting: Ray forwards a
worker's output to the driver line by line, where every frame would become a line. A bar
opened while another is live joins that display (rich >= 14 nests live displays; older rich
makes the inner bar state its tasks instead).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from types import TracebackType

from rich.console import Console
from rich.errors import LiveError
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeRemainingColumn,
)

__all__ = ["ENV_VAR", "MODES", "Bar", "in_ray_worker", "progress_bar", "progress_mode", "summary_line"]

log = logging.getLogger(__name__)

ENV_VAR = "RAYLUNG_PROGRESS"
MODES = ("auto", "always", "never")
_RAY_WORKER_MODE = 1  # ray._private.worker.WORKER_MODE: a task or actor process, not a driver
_open_consoles: list[Console] = []  # the consoles of the bars open now, innermost last


def progress_mode() -> str:
    """``RAYLUNG_PROGRESS`` as one of :data:`MODES`; an unknown value warns and means ``auto``
    (a typo should not stop a long command halfway, where its first bar opens)."""
    value = os.environ.get(ENV_VAR, "").strip().lower() or "auto"
    if value not in MODES:
        log.warning("%s=%r is not one of %s; using auto", ENV_VAR, value, ", ".join(MODES))
        return "auto"
    return value


def in_ray_worker() -> bool:
    """Whether this process is a Ray worker, judged without importing Ray (False if it is not loaded)."""
    worker = sys.modules.get("ray._private.worker")
    return getattr(getattr(worker, "global_worker", None), "mode", None) == _RAY_WORKER_MODE


def summary_line(task: Task) -> str:
    """One task in words: ``<description>: <done>/<total> in <seconds> s``."""
    total = f"/{task.total:g}" if task.total is not None else ""
    seconds = task.finished_time if task.finished_time is not None else (task.elapsed or 0.0)
    return f"{task.description}: {task.completed:g}{total} in {seconds:.1f} s"


def default_columns() -> tuple[ProgressColumn, ...]:
    """What the task is, the bar, done/total, and time left (time taken once it is done)."""
    return (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(elapsed_when_finished=True),
    )


class Bar(Progress):
    """A rich :class:`~rich.progress.Progress` that, when it is not animated, prints one
    :func:`summary_line` per task still shown when it closes without an error."""

    def __init__(self, *columns: str | ProgressColumn, summarize: bool = False, **kwargs) -> None:
        super().__init__(*columns, **kwargs)
        self.summarize = summarize

    def __enter__(self) -> Bar:
        try:
            super().__enter__()
        except LiveError:  # rich < 14 cannot nest live displays: this bar states its tasks instead
            self.disable, self.summarize = True, True
        _open_consoles.append(self.console)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            super().__exit__(exc_type, exc, tb)
        finally:
            _open_consoles.remove(self.console)  # nested bars share one console: any copy will do
        if self.summarize and exc_type is None:
            for task in self.tasks:
                self.console.print(summary_line(task), markup=False, highlight=False, soft_wrap=True)


def progress_bar(
    enabled: bool = True,
    *,
    columns: Sequence[str | ProgressColumn] = (),
    console: Console | None = None,
) -> Bar:
    """A progress display on stderr (or `console`), shown as ``RAYLUNG_PROGRESS`` says.

    Args:
        enabled: False draws and states nothing (the caller's ``progress=False``).
        columns: rich progress columns (default: :func:`default_columns`).
        console: where to draw (default: the open bar's console, else a new one on stderr).

    Use it as a context manager; tasks are added and advanced as on any rich ``Progress``, and
    keep counting when nothing is drawn.
    """
    mode = "never" if not enabled or in_ray_worker() else progress_mode()
    if console is None:
        console = (
            _open_consoles[-1]
            if _open_consoles
            else Console(stderr=True, force_terminal=True if mode == "always" else None)
        )
    interactive = console.is_jupyter or (console.is_terminal and not console.is_dumb_terminal)
    animated = mode == "always" or (mode == "auto" and interactive)
    return Bar(
        *(columns or default_columns()),
        console=console,
        transient=False,
        disable=not animated,
        summarize=mode == "auto" and not animated,
    )
