"""A run's timeline: phase events from every process of a run, in one JSON-lines file.

Three recorders append to the same file, each event tagged with its run and rank:

* ``TimelineHooks``: raylung's phase hooks (:mod:`raylung.train.hooks`). Passed to
  ``launcher.fit(hooks=...)`` (it rides in the loop config to every Ray Train worker) or to a
  plain run's ``run_epochs``: set-up, each epoch's training, data and steps, validation,
  checkpoint save, report.
* ``Timeline``: a Ray Train callback (controller, worker group, train context) for what only
  Ray does: start-up, checkpoint sync and upload inside ``ray.train.report``, teardown.
* ``record`` itself, for a driver's own marks.

Then ``spans``/``moment`` read phases back, and ``CpuMeter`` counts the CPU-seconds of a
process tree (this process, or a Ray session's daemons and workers) over a block.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

TIMELINE_ENV = "RAYLUNG_BENCH_TIMELINE"  # where a Timeline built without arguments appends


def record(path: str | os.PathLike, event: str, phase: str = "at", **fields: Any) -> None:
    """Append one event as a JSON line: wall-clock time (comparable across processes) and the
    recording process's CPU time (so a span says how much of a core the process got)."""
    line = json.dumps(
        {"event": event, "phase": phase, "t": time.time(), "cpu": time.process_time(), "pid": os.getpid()}
        | fields
    )
    with open(path, "a") as handle:
        handle.write(line + "\n")


_PROCESSES_SEEN: set[tuple[int, str]] = set()


def mark_process(path: str | os.PathLike | None, role: str) -> None:
    """Once per process and `role`: when the process was created (its spawn) and when it got
    here, i.e. unpickled a recorder (after its imports). In a Tune trial's actor the trial id
    names it; other processes are named by their later events' pid."""
    if not path or (os.getpid(), role) in _PROCESSES_SEEN:
        return
    _PROCESSES_SEEN.add((os.getpid(), role))
    try:
        import psutil

        created = psutil.Process().create_time()
    except Exception:  # noqa: BLE001 - no psutil: the spawn time is unknown
        created = None
    trial = None
    if role in ("hooks", "trainer"):
        try:
            from ray import tune

            trial = tune.get_context().get_trial_id()
        except Exception:  # noqa: BLE001 - not in a trial (a Train worker)
            trial = None
    record(path, "process_up", "up", role=role, created=created, trial=trial)


def read_events(path: str | os.PathLike) -> list[dict[str, Any]]:
    if not Path(path).is_file():
        return []
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


class TimelineHooks:
    """raylung's phase hooks, recording each span to the timeline file.

    Picklable (a path and two labels). In a Ray Train worker the run's name and the worker's
    rank are read from the train context at the first span; a plain run names them itself."""

    def __init__(self, path: str | os.PathLike, run: str | None = None, rank: int | None = None) -> None:
        self.path, self.run, self.rank = str(path), run, rank

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        mark_process(self.path, "hooks")  # a trial's actor or a Train worker, imports done

    @contextlib.contextmanager
    def span(self, phase: str) -> Iterator[None]:
        if self.run is None:
            import ray.train

            context = ray.train.get_context()
            self.run, self.rank = context.get_experiment_name(), context.get_world_rank()
        record(self.path, phase, "begin", run=self.run, rank=self.rank)
        try:
            yield
        finally:
            record(self.path, phase, "end", run=self.run, rank=self.rank)


try:  # Ray Train V2's callback interfaces (DeveloperAPI; private module path)
    from ray.train.v2._internal.execution.callback import (
        ControllerCallback,
        ReportCallback,
        TrainContextCallback,
        WorkerCallback,
        WorkerGroupCallback,
    )
except ImportError:  # pragma: no cover - Ray moved them: Ray's own phases go unrecorded
    Timeline = None
else:

    class Timeline(
        ControllerCallback, WorkerGroupCallback, WorkerCallback, TrainContextCallback, ReportCallback
    ):
        """Records a Ray Train run's own phases, from the controller and from every worker.

        Passed in ``RunConfig.callbacks`` (``launcher.fit(callbacks=...)``), or named in
        ``RAY_TRAIN_CALLBACKS`` (built without arguments; the path comes from
        ``RAYLUNG_BENCH_TIMELINE``); Ray copies it to the controller and to each worker."""

        def __init__(self, path: str | None = None) -> None:
            self.path = path or os.environ.get(TIMELINE_ENV)
            self.run = ""
            self.rank: int | None = None
            mark_process(self.path, "trainer")  # a trial's actor, its TorchTrainer fitting

        def __setstate__(self, state: dict[str, Any]) -> None:
            self.__dict__.update(state)
            mark_process(self.path, "callback")  # the Train controller or a worker, imports done

        def mark(self, event: str, phase: str = "at") -> None:
            if self.path:
                record(self.path, event, phase, run=self.run, rank=self.rank)

        @contextlib.contextmanager
        def _span(self, event: str) -> Iterator[None]:
            self.mark(event, "begin")
            try:
                yield
            finally:
                self.mark(event, "end")

        # controller process
        def after_controller_start(self, train_run_context) -> None:
            self.run = train_run_context.run_config.name
            self.mark("controller_start")

        def before_worker_group_start(self, worker_group_context) -> None:
            self.mark("worker_group_start")

        def before_init_train_context(self, workers) -> dict:
            self.mark("workers_created")  # placement group ready, worker actors started
            return {}

        def after_worker_group_start(self, worker_group) -> None:
            self.mark("worker_group_ready")  # after the torch backend set up the process group

        def after_worker_group_training_start(self, worker_group) -> None:
            self.mark("train_fn_launched")

        def before_worker_group_shutdown(self, worker_group) -> None:
            self.mark("worker_group_shutdown", "begin")

        def after_worker_group_shutdown(self, worker_group_context) -> None:
            self.mark("worker_group_shutdown", "end")

        def after_report(self, training_report, metrics) -> None:
            self.mark("report_consumed")

        def after_controller_finish(self, result) -> None:
            self.mark("controller_finish")

        # worker processes
        def after_init_train_context(self) -> None:
            import ray.train

            context = ray.train.get_context()
            self.run, self.rank = context.get_experiment_name(), context.get_world_rank()
            self.mark("train_context_ready")

        def on_checkpoint_sync(self):
            return self._span("checkpoint_sync")

        def on_checkpoint_transfer(self):
            return self._span("checkpoint_upload")


# --- reading phases back ----------------------------------------------------------------------


def span_events(events: list[dict], run: str, event: str, rank: int | None = 0) -> list[tuple[dict, dict]]:
    """(begin, end) event pairs of `event` in `run` on `rank`, in order."""
    begins: list[dict] = []
    pairs = []
    for e in events:
        if e.get("run") != run or e["event"] != event or e.get("rank") != rank:
            continue
        if e["phase"] == "begin":
            begins.append(e)
        elif e["phase"] == "end" and begins:
            pairs.append((begins.pop(0), e))
    return pairs


def spans(events: list[dict], run: str, event: str, rank: int | None = 0) -> list[tuple[float, float]]:
    """(begin, end) times of `event` in `run` on `rank`, in order."""
    return [(b["t"], e["t"]) for b, e in span_events(events, run, event, rank)]


def span_cpu(
    events: list[dict], run: str, event: str, rank: int | None = 0, skip: int = 0
) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the recording process) summed over the spans after the first `skip`."""
    pairs = span_events(events, run, event, rank)[skip:]
    return (
        sum(e["t"] - b["t"] for b, e in pairs),
        sum(e.get("cpu", 0.0) - b.get("cpu", 0.0) for b, e in pairs),
    )


def moment(events: list[dict], run: str, event: str, last: bool = False) -> float | None:
    times = [e["t"] for e in events if e.get("run") == run and e["event"] == event and e["phase"] == "at"]
    return (max(times) if last else min(times)) if times else None


def total(pairs: list[tuple[float, float]]) -> float:
    return sum(end - begin for begin, end in pairs)


# --- CPU seconds of a process tree ------------------------------------------------------------


def ray_session_name() -> str | None:
    """The session name of the Ray this process started (it is on its daemons' command lines)."""
    try:
        from ray._private import worker
    except ImportError:
        return None
    node = getattr(worker, "_global_node", None)
    return getattr(node, "session_name", None)


def _process_tree(marker: str | None) -> dict[int, float]:
    """{pid: own CPU seconds} of this process, the processes whose command line holds `marker`
    (a Ray session's GCS, raylet, agents) and all their descendants (Ray's workers)."""
    tick = os.sysconf("SC_CLK_TCK")
    parents, used, roots = {}, {}, {os.getpid()}
    for pid in (int(e) for e in os.listdir("/proc") if e.isdigit()):
        try:  # fields after "(comm)": state ppid ... utime stime at 11, 12
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            if marker and marker.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                roots.add(pid)
        except (OSError, IndexError):
            continue
        parents[pid] = int(fields[1])
        used[pid] = (int(fields[11]) + int(fields[12])) / tick
    tree, grew = set(roots), True
    while grew:
        children = {pid for pid, ppid in parents.items() if ppid in tree} - tree
        tree |= children
        grew = bool(children)
    return {pid: used[pid] for pid in tree if pid in used}


class CpuMeter:
    """CPU seconds of a process tree over a block (Linux), sampled every `interval_s` so that
    processes which exit inside the block count too (the raylet does not leave its exited
    workers' time in its own cutime). A process that lives under `interval_s` is missed.

    CPU time grows far less than wall time when other users' processes take the cores, which
    makes it the steadier measure of extra work on a shared machine."""

    def __init__(self, marker: str | None = None, interval_s: float = 0.5) -> None:
        self.marker, self.interval_s = marker, interval_s
        self.seconds: float | None = None

    def __enter__(self) -> CpuMeter:
        try:
            self._start: dict[int, float] | None = _process_tree(self.marker)
        except (OSError, ValueError, AttributeError):  # no /proc: not measured
            self._start = None
            return self
        self._last = dict(self._start)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._last.update(_process_tree(self.marker))

    def __exit__(self, *exc: Any) -> None:
        if self._start is None:
            return
        self._stop.set()
        self._thread.join()
        self._last.update(_process_tree(self.marker))
        self.seconds = sum(used - self._start.get(pid, 0.0) for pid, used in self._last.items())
