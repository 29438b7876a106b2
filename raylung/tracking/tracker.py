"""The tracking seam: every command logs a run through a :class:`Tracker`.

A tracker starts a run, logs per-epoch metrics, tables, images and a summary, and finishes.
W&B is the backend (offline unless credentials exist, see :mod:`.wandb_mode`); with W&B
disabled the same calls record nothing, so callers never branch on the mode. What an epoch
logs is decided once, in :func:`epoch_metrics`, for a plain ``train`` and a tune trial alike.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from raylung.tracking.segments import supersede

log = logging.getLogger(__name__)

FLUSH_INTERVAL_S = 1.0

# Ray bookkeeping that travels with a report but is not a metric of the model.
NOT_METRICS = frozenset({"checkpoint_path", "checkpoint_dir_name"})


def epoch_metrics(report: Mapping[str, Any]) -> dict[str, float]:
    """The numbers of one epoch's report that a run logs: scalars, bookkeeping left out."""
    values: dict[str, float] = {}
    for key, value in report.items():
        if key in NOT_METRICS or isinstance(value, bool | str) or not isinstance(value, int | float):
            continue
        values[key] = value
    return values


class Tracking(Protocol):
    """What every command can do with a run (a local :class:`Tracker` or a hub's run)."""

    def log_epoch(self, report: Mapping[str, Any]) -> None: ...
    def log_table(self, name: str, rows: Sequence[Mapping[str, Any]]) -> None: ...
    def log_images(self, images: Mapping[str, Path]) -> None: ...
    def summary(self, values: Mapping[str, Any]) -> None: ...
    def finish(self) -> Path | None: ...


class Tracker:
    """One W&B run in this process, or nothing at all when `init` is None (W&B disabled)."""

    def __init__(self, run: Any = None) -> None:
        self._run = run
        self._held_below = 0  # steps W&B had before this process opened the run
        self._logged: set[int] = set()

    @classmethod
    def start(cls, init: Mapping[str, Any] | None, history: Sequence[Mapping[str, Any]] = ()) -> Tracker:
        """Start the run `init` describes (``wandb.init`` keywords from :func:`.init_kwargs`).

        `history` is the per-epoch reports a resumed run's checkpoint kept: they are logged first,
        except the epochs W&B already holds (an online run resumes at its server's next step),
        so the run's newest folder holds the whole history (see :mod:`.segments`).
        """
        if not init or init.get("mode") == "disabled":
            return cls(None)
        import wandb

        run = wandb.init(**{**init, "settings": _flushing(init.get("settings"))})
        tracker = cls(run)
        tracker._held_below = run.step
        for report in history:
            tracker.log_epoch(report)
        return tracker

    @property
    def active(self) -> bool:
        return self._run is not None

    def log_epoch(self, report: Mapping[str, Any]) -> None:
        """Log one epoch's report at step = its epoch, so a resumed run continues its curves.

        An epoch the run already holds is skipped: a worker group that Ray Train restarts, or a
        trial that Tune restarts, reports again from its checkpoint, never twice into W&B."""
        if self._run is None:
            return
        epoch = report.get("epoch")
        if not isinstance(epoch, int | float):
            self._run.log(epoch_metrics(report))
            return
        step = int(epoch)
        if step in self._logged or step < self._held_below:
            return
        self._logged.add(step)
        self._run.log(epoch_metrics(report), step=step, commit=True)  # on disk now, not at the next step

    def log_table(self, name: str, rows: Sequence[Mapping[str, Any]]) -> None:
        if self._run is None or not rows:
            return
        import wandb

        columns = list(rows[0])
        data = [[_cell(row.get(column)) for column in columns] for row in rows]
        self._run.log({name: wandb.Table(columns=columns, data=data, allow_mixed_types=True)})

    def log_images(self, images: Mapping[str, Path]) -> None:
        if self._run is None or not images:
            return
        import wandb

        self._run.log({name: wandb.Image(str(path)) for name, path in images.items()})

    def summary(self, values: Mapping[str, Any]) -> None:
        if self._run is not None:
            self._run.summary.update(dict(values))

    def finish(self) -> Path | None:
        """End the run; returns its folder of run files (None when nothing was logged).

        The run's folders of earlier processes (a crash, a resume) move to ``superseded/``: this
        one holds their epochs, and ``wandb sync`` would stop at a folder torn by the crash."""
        if self._run is None:
            return None
        folder = Path(self._run.dir).parent
        self._run.finish()
        self._run = None
        supersede(folder, holds=self._logged)
        return folder


def teardown() -> None:
    """Wait for W&B's service process to write every run out (before this process ends)."""
    import sys

    if "wandb" in sys.modules:
        sys.modules["wandb"].teardown()


def _flushing(settings: Any) -> Any:
    """The run's settings, writing its .wandb file every second rather than every 15 s
    (wandb 0.31's default): a killed process loses at most the last second of its run."""
    import wandb

    if settings is None:
        return wandb.Settings(x_transaction_log_flush_interval=FLUSH_INTERVAL_S)
    if isinstance(settings, Mapping):
        return {**settings, "x_transaction_log_flush_interval": FLUSH_INTERVAL_S}
    return settings.model_copy(update={"x_transaction_log_flush_interval": FLUSH_INTERVAL_S})


def _cell(value: Any) -> Any:
    return value if isinstance(value, int | float | str) or value is None else str(value)
