"""Experiment tracking: one seam (:class:`Tracker`) for every command, W&B behind it.

:mod:`.wandb_mode` decides online/offline/disabled and describes a run; :mod:`.tracker` logs
it; :mod:`.reachability` probes the server once per command, :mod:`.lapses` keeps a failing
W&B call from costing the run; :mod:`.hub` carries Ray Train's per-epoch reports to the runs,
held on the driver.
"""

from raylung.tracking.reachability import Reachability, check_server
from raylung.tracking.tracker import Tracker, Tracking, epoch_metrics, teardown
from raylung.tracking.wandb_mode import (
    Mode,
    ModeDecision,
    decide_mode,
    has_credentials,
    init_kwargs,
    offline_run_dirs,
    resolve_mode,
)

__all__ = [
    "Mode",
    "ModeDecision",
    "Reachability",
    "Tracker",
    "Tracking",
    "check_server",
    "decide_mode",
    "epoch_metrics",
    "has_credentials",
    "init_kwargs",
    "offline_run_dirs",
    "resolve_mode",
    "teardown",
]
