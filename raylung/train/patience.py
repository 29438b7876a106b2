"""Riding out a storage outage: retry a storage write for a bounded time instead of failing.

Shared storage flakes (an NFS server restarting, an object store throttling, a volume remounted
read-only for seconds). Ray Train retries a failed worker group at once, so a few seconds of
refused writes used up ``train.max_failures`` and errored the trial. A write raylung makes, or
asks Ray Train to make (a checkpoint's upload), is retried here with growing pauses for up to
:data:`STORAGE_PATIENCE_S`; the first refusal in a process is one warning, and a write still
refused after that raises as before.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

# How long a write keeps trying: outages of a minute or two are ridden out; a storage that stays
# unwritable longer fails the run with its own error (and the checkpoints so far are kept).
STORAGE_PATIENCE_S = float(os.environ.get("RAYLUNG_STORAGE_PATIENCE_S", "120"))
_warned = False


def patiently(write: Callable[[], T], what: str, patience_s: float | None = None) -> T:
    """`write()`, retried on ``OSError`` (refused, read-only, unreachable) for up to `patience_s`."""
    global _warned
    deadline = time.monotonic() + (STORAGE_PATIENCE_S if patience_s is None else patience_s)
    pause = 0.5
    while True:
        try:
            return write()
        except OSError as exc:
            if time.monotonic() + pause > deadline:
                raise
            if not _warned:
                log.warning(
                    "storage refused %s (%s): retrying for up to %.0f s",
                    what,
                    exc,
                    deadline - time.monotonic(),
                )
                _warned = True
            time.sleep(pause)
            pause = min(pause * 2, 8.0)


def patient_checkpoint_upload(checkpoint, checkpoint_dir_name: str):
    """Ray Train's ``checkpoint_upload_fn``: its own upload, retried through a storage outage."""
    import ray.train

    storage = ray.train.get_context().get_storage()
    return patiently(
        lambda: storage.persist_current_checkpoint(checkpoint, checkpoint_dir_name),
        f"checkpoint {checkpoint_dir_name}",
    )


# What a storage refusal looks like inside Ray's error text: Ray Train's controller writes a
# marker into the run's folder as it starts, and a refusal there reaches the caller of
# ``trainer.fit`` only as the text of an ``ActorDiedError`` (its creation task failed).
_CONTROLLER_START = "TrainController.__init__"
_REFUSALS = ("PermissionError", "Read-only file system", "Operation not permitted", "OSError")


def refused_at_controller_start(exc: BaseException) -> bool:
    """Did Ray Train's controller die as it started because storage refused its first write?"""
    text = str(exc)
    return _CONTROLLER_START in text and any(sign in text for sign in _REFUSALS)


def start_patiently(start: Callable[[], T], probe: Callable[[], object], what: str) -> T:
    """`start()` (a ``trainer.fit``), started again once storage takes writes, when Ray Train's
    controller died on a refused write as it started.

    Nothing has run at that point (no worker group, no epoch), so starting again loses nothing.
    `probe` writes to the run's folder; it is retried like any write here. Other failures, and a
    refusal that outlasts :data:`STORAGE_PATIENCE_S`, raise as they are.
    """
    deadline = time.monotonic() + STORAGE_PATIENCE_S
    while True:
        try:
            return start()
        except Exception as exc:
            if not refused_at_controller_start(exc) or time.monotonic() >= deadline:
                raise
            log.warning(
                "storage refused %s as its Train run started: starting it again once storage takes writes",
                what,
            )
            patiently(probe, f"{what} (storage probe)", max(deadline - time.monotonic(), 0.0))
