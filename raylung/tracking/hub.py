"""Per-epoch metrics take one route to the tracker: Ray Train's report -> the driver's hub.

Every training, a plain ``raylung train`` or one trial of a search, reports each epoch with
``ray.train.report``. :class:`EpochLogger`, a Ray Train callback, hands rank 0's report to the
:class:`TrackerHub`, a small actor the command's driver starts on its own node, which holds
the W&B runs. So a change to what an epoch logs is made once, the run files land next to the
experiment on the driver's machine even when rank 0 trains on another node, and a trial that
the scheduler stops (its actors killed mid-epoch) never takes its run's last records with it:
the driver finishes the run, and the hub waits for W&B to write everything before it goes.

The W&B key never travels with the hub: a runtime environment is readable by anyone who can
see the dashboard or the cluster's state. The hub finds the key where the driver does, on the
driver's node: a local Ray started by the driver passes the driver's environment (a
``WANDB_API_KEY`` included) on to every actor, and a cluster node has its own netrc file
(``NETRC``, set for ``ray start`` by the cluster configs; see docs/cluster.md).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from ray.train.v2.api.callback import UserCallback

from raylung.errors import ConfigError, RaylungError
from raylung.tracking.tracker import Tracker, teardown
from raylung.tracking.wandb_mode import base_url, has_credentials

log = logging.getLogger(__name__)


class _Hub:
    """The actor's body: open runs by key (a run name or a trial id)."""

    def __init__(self) -> None:
        self._runs: dict[str, Tracker] = {}
        # Its own W&B service, which dies with it: one inherited from whoever started Ray would
        # outlive a killed driver and keep its runs open ("run ID ... is in use" on resume).
        os.environ.pop("WANDB_SERVICE", None)

    def start(self, key: str, init: Mapping[str, Any], history: Sequence[Mapping[str, Any]] = ()) -> None:
        if init.get("mode") == "online" and not has_credentials():
            # The driver found a key (in its shell, say) that this node does not have.
            raise ConfigError(
                f"W&B is online, but the node that logs the runs ({socket.gethostname()}) has no "
                f"W&B key for {base_url()}: on a Ray cluster every node reads it from its own netrc "
                "file (NETRC or ~/.netrc; docs/cluster.md), never from the driver's shell; or set "
                "wandb.mode: offline"
            )
        if key in self._runs:  # a restarted trial: its earlier run is done
            self._runs.pop(key).finish()
        self._runs[key] = Tracker.start(init, history)

    def log_epoch(self, key: str, report: Mapping[str, Any]) -> None:
        if key in self._runs:  # a report after the run finished (a stopped trial) is dropped
            self._runs[key].log_epoch(report)

    def log_table(self, key: str, name: str, rows: Sequence[Mapping[str, Any]]) -> None:
        if key in self._runs:
            self._runs[key].log_table(name, rows)

    def log_images(self, key: str, images: Mapping[str, Path]) -> None:
        if key in self._runs:
            self._runs[key].log_images(images)

    def summary(self, key: str, values: Mapping[str, Any]) -> None:
        if key in self._runs:
            self._runs[key].summary(values)

    def finish(self, key: str) -> str | None:
        tracker = self._runs.pop(key, None)
        folder = tracker.finish() if tracker is not None else None
        return str(folder) if folder else None

    def close(self) -> None:
        for key in list(self._runs):
            self.finish(key)
        teardown()


@contextlib.contextmanager
def tracker_hub(enabled: bool = True, name: str | None = None) -> Iterator[Any]:
    """Start the hub on this (the driver's) node for the block; None when W&B is disabled.

    On the way out every run still open is finished and W&B's service has written them all.
    `name` makes the hub findable (``ray.get_actor``) by callbacks that outlive a process.
    """
    if not enabled:
        yield None
        return
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    # The server, not a secret: the hub logs where the driver checked for credentials.
    env = {"WANDB_BASE_URL": os.environ["WANDB_BASE_URL"]} if "WANDB_BASE_URL" in os.environ else {}
    hub = (
        ray.remote(_Hub)
        .options(
            num_cpus=0,
            scheduling_strategy=here,
            runtime_env={"env_vars": env} if env else None,
            name=name,
        )
        .remote()
    )
    try:
        yield hub
    finally:
        try:
            ray.get(hub.close.remote(), timeout=120)
        except Exception:  # noqa: BLE001 - the runs' files are what is left; say so, go on
            log.warning("W&B runs could not all be closed cleanly", exc_info=True)
        ray.kill(hub)


class HubRun:
    """One run held by the hub, used from the driver like a local :class:`Tracker`; `history`:
    the epochs a resumed run's checkpoint kept (:meth:`Tracker.start`)."""

    def __init__(
        self, hub: Any, key: str, init: Mapping[str, Any] | None, history: Sequence[Mapping[str, Any]] = ()
    ) -> None:
        self.hub, self.key = hub, key
        if hub is not None and init is not None:
            _call(hub.start, key, dict(init), [dict(row) for row in history])

    def report_callbacks(self) -> list[UserCallback]:
        """The Ray Train callbacks that bring this run its per-epoch metrics."""
        return [EpochLogger(self.hub, self.key)] if self.hub is not None else []

    def log_epoch(self, report: Mapping[str, Any]) -> None:
        if self.hub is not None:
            _call(self.hub.log_epoch, self.key, dict(report))

    def log_table(self, name: str, rows: Sequence[Mapping[str, Any]]) -> None:
        if self.hub is not None:
            _call(self.hub.log_table, self.key, name, [dict(row) for row in rows])

    def log_images(self, images: Mapping[str, Path]) -> None:
        if self.hub is not None:
            _call(self.hub.log_images, self.key, dict(images))

    def summary(self, values: Mapping[str, Any]) -> None:
        if self.hub is not None:
            _call(self.hub.summary, self.key, dict(values))

    def finish(self) -> Path | None:
        if self.hub is None:
            return None
        folder = _call(self.hub.finish, self.key)
        return Path(folder) if folder else None


class EpochLogger(UserCallback):
    """Ray Train callback: each report's rank-0 metrics go to the hub before training goes on.

    Waiting for the hub keeps the order a user sees: an epoch is in the run before anything
    downstream (Tune, a scheduler) acts on it.
    """

    def __init__(self, hub: Any, key: str) -> None:
        self.hub, self.key = hub, key

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
        _call(self.hub.log_epoch, self.key, dict(metrics[0]))


def _call(method: Any, *args: Any) -> Any:
    import ray

    try:
        return ray.get(method.remote(*args))
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, RaylungError):  # raylung's own message, without the actor's traceback
            raise exc.cause from None
        raise
