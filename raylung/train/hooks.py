"""Phase hooks: how a caller times the training loop without reaching into it.

The loop enters ``hooks.span(PHASE)`` around each of its phases -- set-up, every epoch's
training, each batch's data fetch and optimizer step, validation, the checkpoint write and
the report. By default that is a shared no-op (``NO_HOOKS``), so a user's run pays nothing; a
benchmark passes an object of its own (``launcher.fit(..., hooks=...)``, or the ``hooks`` key
of the loop config) and records when each phase began and ended, in the same code path users
run. The object travels inside the loop config to every Ray Train worker, so it must pickle.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Protocol, runtime_checkable

__all__ = [
    "CHECKPOINT_SAVE",
    "DATA",
    "NO_HOOKS",
    "PHASES",
    "REPORT",
    "SETUP",
    "TRAIN_EPOCH",
    "TRAIN_STEP",
    "VALIDATE",
    "NoHooks",
    "PhaseHooks",
]

SETUP = "setup"  # from the training function's start to its first epoch: data, model, resume
TRAIN_EPOCH = "train_epoch"  # one pass over this worker's training shard
DATA = "data"  # fetching one batch from the loader (decode, augment, collate, device copy)
TRAIN_STEP = "train_step"  # one optimizer step on a batch, up to its loss on the host
VALIDATE = "validate"  # predictions over the whole validation split and their metrics
CHECKPOINT_SAVE = "checkpoint_save"  # rank 0 writes the epoch's checkpoint to a local folder
REPORT = "report"  # handing metrics and checkpoint over (``ray.train.report`` in a Ray run)
PHASES = (SETUP, TRAIN_EPOCH, DATA, TRAIN_STEP, VALIDATE, CHECKPOINT_SAVE, REPORT)


@runtime_checkable
class PhaseHooks(Protocol):
    """What the loop needs of a timer: a context manager per phase, entered and left in order."""

    def span(self, phase: str) -> AbstractContextManager[None]: ...


class NoHooks:
    """The default: every span is the same reusable ``nullcontext`` (no allocation per step)."""

    _NULL = nullcontext()

    def span(self, phase: str) -> AbstractContextManager[None]:
        return self._NULL


NO_HOOKS = NoHooks()
