"""The tracking seam: every command logs a run through a :class:`Tracker`.

A tracker starts a run, logs per-epoch metrics, tables, images and a summary, and finishes.
W&B is the backend (offline unless credentials exist, see :mod:`.wandb_mode`); with W&B
disabled the same calls record nothing, so callers never branch on the mode. What an epoch
logs is decided once, in :func:`epoch_metrics`, for a plain ``train`` and a tune trial alike.

Logging never costs a run: a run W&B cannot start online starts offline (the same id, to sync
later), and a call that fails is skipped and reported once (:mod:`.lapses`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from raylung.tracking.lapses import LAPSES

log = logging.getLogger(__name__)

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
        self._folder = Path(run.dir).parent if run is not None else None

    @classmethod
    def start(cls, init: Mapping[str, Any] | None) -> Tracker:
        """Start the run `init` describes (``wandb.init`` keywords from :func:`.init_kwargs`).

        Online but W&B cannot start it (the server went away since the command's probe): the
        run starts offline instead, under its id + ``-offline`` (W&B holds the failed run's id
        in this process until it ends), to upload later with ``wandb sync``.
        """
        if not init or init.get("mode") == "disabled":
            return cls(None)
        import wandb

        folder = Path(init["dir"]) / "wandb" if "dir" in init else None
        try:
            return cls(wandb.init(**init))
        except Exception as exc:  # noqa: BLE001 - logging must never stop training
            if init.get("mode") != "online":
                LAPSES.report("run start", folder, exc)
                return cls(None)
            LAPSES.report("online run start", folder, exc, then="the run logs offline instead")
        offline = {**init, "mode": "offline"}
        if init.get("id"):
            offline["id"] = f"{init['id']}-offline"
        try:
            return cls(wandb.init(**offline))
        except Exception as exc:  # noqa: BLE001
            LAPSES.report("offline run start", folder, exc)
            return cls(None)

    @property
    def active(self) -> bool:
        return self._run is not None

    @contextlib.contextmanager
    def _lapse(self, what: str) -> Iterator[None]:
        try:
            yield
        except Exception as exc:  # noqa: BLE001 - a lost record, not a lost run
            LAPSES.report(what, self._folder, exc)

    def log_epoch(self, report: Mapping[str, Any]) -> None:
        """Log one epoch's report at step = its epoch, so a resumed run continues its curves."""
        if self._run is None:
            return
        values = epoch_metrics(report)
        epoch = report.get("epoch")
        with self._lapse("log"):
            self._run.log(values, step=int(epoch) if isinstance(epoch, int | float) else None)

    def log_table(self, name: str, rows: Sequence[Mapping[str, Any]]) -> None:
        if self._run is None or not rows:
            return
        import wandb

        columns = list(rows[0])
        data = [[_cell(row.get(column)) for column in columns] for row in rows]
        with self._lapse("table"):
            self._run.log({name: wandb.Table(columns=columns, data=data, allow_mixed_types=True)})

    def log_images(self, images: Mapping[str, Path]) -> None:
        if self._run is None or not images:
            return
        import wandb

        with self._lapse("images"):
            self._run.log({name: wandb.Image(str(path)) for name, path in images.items()})

    def summary(self, values: Mapping[str, Any]) -> None:
        if self._run is not None:
            with self._lapse("summary"):
                self._run.summary.update(dict(values))

    def finish(self) -> Path | None:
        """End the run; returns its folder of run files (None when nothing was logged).

        A server gone mid-run holds this no longer than W&B's finish timeout (see
        :func:`.init_kwargs`); what did not reach it stays in the folder for ``wandb sync``.
        """
        if self._run is None:
            return None
        run, self._run = self._run, None
        with self._lapse("finish"):
            run.finish()
        return self._folder


def teardown() -> None:
    """Wait for W&B's service process to write every run out (before this process ends)."""
    import sys

    if "wandb" in sys.modules:
        sys.modules["wandb"].teardown()


def _cell(value: Any) -> Any:
    return value if isinstance(value, int | float | str) or value is None else str(value)
