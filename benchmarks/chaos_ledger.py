"""The chaos run's epoch ledger: every epoch actually trained, kept outside the experiment's storage.

A Ray Train callback, named in ``RAY_TRAIN_CALLBACKS`` in the environment of the chaos
cluster's ``ray start`` (so every trial's ``TorchTrainer``, first run or resumed, builds one
without raylung knowing), appends one JSON line per event to the file named by
``RAYLUNG_CHAOS_LEDGER``:

* ``epoch``: rank 0 of a worker group called ``ray.train.report`` for an epoch (the epoch was
  trained and validated; ``reported`` follows once the report returned, its checkpoint stored);
* ``worker_group_start``: a Train controller started a worker group (first start or a restart
  after a failure).

Each Train worker wraps ``ray.train.report`` once, when its train context is set up; the
epoch number is read from the reported metrics. A line is one ``write`` of an ``O_APPEND``
file, so processes on both nodes append without tearing each other's lines. Comparing the
ledger with what the trials kept tells epochs recomputed after a fault from epochs lost.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

from ray.train.v2._internal.execution.callback import ControllerCallback, WorkerCallback, WorkerGroupCallback

LEDGER_ENV = "RAYLUNG_CHAOS_LEDGER"
CALLBACK_PATH = "chaos_ledger.EpochLedger"  # the RAY_TRAIN_CALLBACKS entry (benchmarks/ on PYTHONPATH)


def append(path: str | os.PathLike, event: str, **fields: Any) -> None:
    line = json.dumps({"event": event, "t": time.time(), "pid": os.getpid()} | fields) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


class EpochLedger(ControllerCallback, WorkerGroupCallback, WorkerCallback):
    """Built without arguments by Ray Train (``RAY_TRAIN_CALLBACKS``); the path comes from the
    environment of the process that builds the trainer and travels with the pickled callback."""

    def __init__(self, path: str | None = None) -> None:
        self.path = path or os.environ.get(LEDGER_ENV)
        self.run = ""

    # controller
    def after_controller_start(self, train_run_context) -> None:
        self.run = train_run_context.run_config.name

    def after_worker_group_start(self, worker_group) -> None:
        if self.path:
            append(self.path, "worker_group_start", run=self.run)

    # each worker, before its training function starts
    def after_init_train_context(self) -> None:
        import ray.train

        context = ray.train.get_context()
        if self.path and context.get_world_rank() == 0:
            wrap_report(self.path, context.get_experiment_name())


def wrap_report(path: str, run: str) -> None:
    """Record each epoch rank 0 reports in this process (raylung calls ``ray.train.report``)."""
    import ray.train

    report = ray.train.report
    if getattr(report, "_chaos_ledger", False):
        return

    def recording_report(metrics: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        epoch = metrics.get("epoch")
        append(path, "epoch", run=run, epoch=epoch)
        result = report(metrics, *args, **kwargs)
        append(path, "reported", run=run, epoch=epoch)
        return result

    recording_report._chaos_ledger = True  # type: ignore[attr-defined]
    ray.train.report = recording_report


def read_ledger(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The ledger's events; a torn last line (a process killed mid-write) is skipped."""
    events = []
    if not Path(path).is_file():
        return events
    for line in Path(path).read_text().splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return events


def epochs_trained(events: list[dict[str, Any]]) -> Counter:
    """(run, epoch) -> how many times it was trained."""
    return Counter((e["run"], int(e["epoch"])) for e in events if e["event"] == "epoch" and e.get("epoch"))


def worker_group_starts(events: list[dict[str, Any]]) -> Counter:
    return Counter(e["run"] for e in events if e["event"] == "worker_group_start")
