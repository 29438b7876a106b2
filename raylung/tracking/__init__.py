"""Experiment tracking: one seam (:class:`Tracker`) for every command, W&B behind it.

:mod:`.wandb_mode` decides online/offline/disabled and describes a run; :mod:`.tracker` logs
it; :mod:`.hub` carries Ray Train's per-epoch reports to the runs, held on the driver.
"""

from raylung.tracking.tracker import Tracker, Tracking, epoch_metrics, teardown
from raylung.tracking.wandb_mode import has_credentials, init_kwargs, offline_run_dirs, resolve_mode

__all__ = [
    "Tracker",
    "Tracking",
    "epoch_metrics",
    "has_credentials",
    "init_kwargs",
    "offline_run_dirs",
    "resolve_mode",
    "teardown",
]
