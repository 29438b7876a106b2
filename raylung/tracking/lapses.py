"""Logging never costs a run: a W&B call that fails is skipped, and said once per process.

A server gone mid-run, a full disk under the run files, a tracker hub that died: each lapse
drops what one call would have logged, never the training. The first lapse of a process is one
warning line naming where the run's files are and how to upload them later; the rest go to the
debug log, so a long run with a dead server does not drown its own progress.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

log = logging.getLogger(__name__)


class Lapses:
    """The W&B calls this process skipped; the first is a warning, the rest debug lines."""

    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()

    def report(
        self,
        what: str,
        folder: Path | None,
        error: BaseException | str,
        then: str = "logging skipped, training goes on",
    ) -> None:
        """`what` failed with `error`; `folder` holds the run's files (None when unknown)."""
        with self._lock:
            self.count += 1
            first = self.count == 1
        where = f"; its files so far are in {folder} (upload later: {sync_hint(folder)})" if folder else ""
        message = f"W&B {what} failed ({_short(error)}): {then}{where}"
        if first:
            log.warning("%s; further W&B lapses are logged at debug level", message)
        else:
            log.debug("%s", message)


def sync_hint(folder: Path) -> str:
    """The command that uploads what W&B wrote in `folder`: one run's folder, or the folder of
    several (wandb 0.31 syncs each run folder directly inside it; ``superseded/`` stays out)."""
    return f"wandb sync {folder}"


def _short(error: BaseException | str) -> str:
    """The error's first line, without W&B's or Ray's traceback."""
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0][:200]


LAPSES = Lapses()  # one per process: each process that logs says it once
