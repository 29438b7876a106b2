"""Ray Train's cost on one training run, and scaling from one worker to two, side by side.

(a) Overhead. The same epochs of the same run -- model, data, loader, optimizer, validation
and a checkpoint every epoch -- once in a plain PyTorch loop built from raylung's parts
(``LungDataset``, ``build_model``, ``make_optimizer``, ``predict_split``, ``save_checkpoint``;
no Ray running) and once through ``raylung.train.launcher.fit`` (a ``TorchTrainer`` with one
worker), one torch thread each (see ``Plan``), both timed from the call to the end, set-up
included. Ray's overhead is measured three ways: the wall-time difference over the Ray run's
wall time; the Ray-only phases of a timeline over the Ray run's wall time; and the CPU-seconds
difference (every process of the run, Ray's daemons included) over the Ray run's CPU-seconds.
On a shared machine the first swings with other users' load (the two runs' compute differs
by tens of %), the other two hardly do. The timeline comes from Ray Train callbacks
(controller, worker group, train context, reports) and from timers wrapped around the loop's
phases inside the worker, so start-up (controller and worker actors, process group),
``ray.train.report`` (checkpoint sync, upload, hand-over) and teardown are measured, not
guessed. ``ray.init`` is timed on its own: a ``raylung train`` call pays it once per run.

(b) Scaling. ``fit`` with 1, 2, then 1 worker again (the mean of the 1-worker runs is the
base, so a drift in the machine's load cancels), one CPU and one torch thread each, same
global batch (each of 2 workers takes half): training images/s over the epochs after the
first (epoch time only, as raylung reports it) and the scaling efficiency. A step split
without Ray says why: two gloo processes take turns step by step between one process alone
(global and half batch), DDP with gradient sync and DDP under ``no_sync()``, timing data,
forward, backward (with the exposed allreduce), optimizer. Its factors multiply to the DDP
speed-up: batch effect (half vs global batch) x machine ceiling (two free-running processes
vs twice one: what this machine gives a second process now) x sync cost (DDP vs free-running) x 2.

Model: ``resnet_ours_tiny`` (0.53M parameters, 2 MB of fp32 gradients) at 160x120 images,
global batch 16. One step at batch 8 is ~0.13 s of one idle core, one gloo allreduce of 2 MB a
few ms: compute dominates. At 64x48 (the smoke size) a step is ~4x shorter while the
allreduce and per-step Python costs stay, so scaling there measures the framework.

    python benchmarks/train_overhead.py            # 20-epoch runs: ~10 min idle, ~20 min busy
    python benchmarks/train_overhead.py --quick    # ~2-4 minutes
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import print_table, save_json  # noqa: E402

os.environ.setdefault("COLUMNS", "160")  # rich tables are not cut to 80 columns in a pipe

TIMELINE_ENV = "RAYLUNG_BENCH_TIMELINE"  # where the Timeline callback appends its events
OVERHEAD_TARGET = 0.10
SPEEDUP_TARGET = 1.7
EFFICIENCY_TARGET = 0.85


@dataclass(frozen=True)
class Plan:
    """Sizes of one benchmark run."""

    model: str = "resnet_ours_tiny"
    image_size: tuple[int, int] = (160, 120)  # (width, height); the demo images are drawn at it
    batch_size: int = 16  # global: each of two workers takes 8
    per_subclass: int = 120  # demo images per subclass: 4x in train, 2x in validation
    overhead_epochs: int = 20  # the paper's epoch count
    # One thread: on this shared 2-core machine a 2-thread OpenMP region stalls whenever another
    # process holds a core (the same epoch measured 0.3 s at 1 thread, 1.7-19 s at 2 threads).
    overhead_threads: int = 1
    scaling_epochs: int = 6
    split_steps: int = 30  # timed steps per mode in the step split
    split_warmup: int = 3
    loader_workers: int = 0  # decode in the training thread: no extra processes on 2 cores

    @property
    def train_images(self) -> int:
        return 4 * self.per_subclass


QUICK = Plan(per_subclass=60, overhead_epochs=5, scaling_epochs=3, split_steps=10, split_warmup=2)


def make_plan(quick: bool, **overrides: Any) -> Plan:
    """The full or quick plan with the given fields replaced (None leaves a field as is)."""
    plan = QUICK if quick else Plan()
    return replace(plan, **{k: v for k, v in overrides.items() if v is not None})


# --- timeline ---------------------------------------------------------------------------------


def record(path: str | os.PathLike, event: str, phase: str = "at", **fields: Any) -> None:
    """Append one event as a JSON line: wall-clock time (comparable across processes) and the
    recording process's CPU time (so a span says how much of a core the process got)."""
    line = json.dumps(
        {
            "event": event,
            "phase": phase,
            "t": time.time(),
            "cpu": time.process_time(),
            "pid": os.getpid(),
            **fields,
        }
    )
    with open(path, "a") as handle:
        handle.write(line + "\n")


def read_events(path: str | os.PathLike) -> list[dict[str, Any]]:
    if not Path(path).is_file():
        return []
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


# raylung.train.loop's names wrapped by instrument_loop -> the event each call records.
# quiet_ray_train_reports is the first call of train_loop_per_worker: its start is the
# training function's start.
LOOP_PHASES = {
    "quiet_ray_train_reports": "train_fn_start",
    "train_one_epoch": "train_epoch",
    "predict_split": "validate",
    "save_checkpoint": "checkpoint_save",
}


def instrument_loop(mark: Callable[[str, str], None], loop: Any = None) -> None:
    """Time the phases of raylung's training loop in this process (a Ray Train worker).

    ``train_loop_per_worker`` looks these functions up in its module at call time, so wrapping
    the module attributes times them without touching raylung's code."""
    if loop is None:
        import raylung.train.loop as loop

    loop._bench_mark = mark  # the latest run's callback records
    if getattr(loop, "_bench_instrumented", False):
        return

    def timed(fn: Callable, event: str) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            loop._bench_mark(event, "begin")
            try:
                return fn(*args, **kwargs)
            finally:
                loop._bench_mark(event, "end")

        return wrapper

    for name, event in LOOP_PHASES.items():
        setattr(loop, name, timed(getattr(loop, name), event))
    loop._bench_instrumented = True


try:  # Ray Train V2's callback interfaces (DeveloperAPI; private module path)
    from ray.train.v2._internal.execution.callback import (
        ControllerCallback,
        ReportCallback,
        TrainContextCallback,
        WorkerCallback,
        WorkerGroupCallback,
    )
except ImportError:  # pragma: no cover - Ray moved them: runs go untimed inside
    Timeline = None
else:

    class Timeline(
        ControllerCallback, WorkerGroupCallback, WorkerCallback, TrainContextCallback, ReportCallback
    ):
        """Records a Ray Train run's phases to a JSON-lines file, from every process it runs in.

        Passed in ``RunConfig.callbacks`` (or named in ``RAY_TRAIN_CALLBACKS``, built without
        arguments, reading the path from ``RAYLUNG_BENCH_TIMELINE``); Ray copies it to the
        controller and to each worker."""

        def __init__(self, path: str | None = None) -> None:
            self.path = path or os.environ.get(TIMELINE_ENV)
            self.run = ""
            self.rank: int | None = None

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
            instrument_loop(self.mark)

        def on_report(self):
            return self._span("report")

        def on_checkpoint_sync(self):
            return self._span("checkpoint_sync")

        def on_checkpoint_transfer(self):
            return self._span("checkpoint_upload")


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
        import threading

        try:
            self._start = _process_tree(self.marker)
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


def _gap(later: float | None, earlier: float | None) -> float | None:
    return None if later is None or earlier is None else later - earlier


def summarize_run(events: list[dict], run: str, start: float, end: float) -> dict[str, Any]:
    """Where a run's wall time went, from its timeline; Ray-only phases are 0 for a plain run."""
    train = spans(events, run, "train_epoch")
    fn_start = spans(events, run, "train_fn_start")
    first_epoch = train[0][0] if train else end
    began = fn_start[0][0] if fn_start else start
    reports = spans(events, run, "report")
    summary: dict[str, Any] = {
        "wall_s": end - start,
        "epochs": len(train),
        "startup_s": began - start,  # Ray Train: controller, worker actors, process group
        "setup_s": first_epoch - began,  # in the training process: data, model (DDP wrap)
        "train_s": total(train),
        "validate_s": total(spans(events, run, "validate")),
        "checkpoint_save_s": total(spans(events, run, "checkpoint_save")),
        "report_s": total(reports),
        "report_sync_s": total(spans(events, run, "checkpoint_sync")),
        "report_upload_s": total(spans(events, run, "checkpoint_upload")),
        "teardown_s": end - reports[-1][1] if reports else 0.0,
        "epoch_train_s": [b - a for a, b in train],
    }
    summary["report_wait_s"] = summary["report_s"] - summary["report_sync_s"] - summary["report_upload_s"]
    named = ("startup_s", "setup_s", "train_s", "validate_s", "checkpoint_save_s", "report_s", "teardown_s")
    summary["other_s"] = summary["wall_s"] - sum(summary[k] for k in named)
    controller = moment(events, run, "controller_start")
    if controller is not None:  # the start-up and teardown of a Ray run, phase by phase
        ready = moment(events, run, "train_context_ready")
        shutdown = spans(events, run, "worker_group_shutdown", rank=None)
        created = moment(events, run, "workers_created")
        group_start = moment(events, run, "worker_group_start")
        summary["startup_phases_s"] = {
            "controller actor starts": controller - start,
            "controller prepares the worker group": _gap(group_start, controller),
            "placement group, worker actors created": _gap(created, group_start),
            "worker process up, train context set": _gap(ready, created),
            "torch process group (+ other callbacks)": _gap(moment(events, run, "worker_group_ready"), ready),
            "train fn launched": _gap(began, moment(events, run, "worker_group_ready")),
        }
        finish = moment(events, run, "controller_finish")
        summary["teardown_phases_s"] = {
            "until the controller sees the end": _gap(shutdown[0][0], reports[-1][1])
            if shutdown and reports
            else None,
            "worker group shutdown": shutdown[0][1] - shutdown[0][0] if shutdown else None,
            "controller finish": _gap(finish, shutdown[0][1]) if shutdown else None,
            "driver gets the Result": _gap(end, finish),
        }
    return summary


RAY_ONLY = ("startup_s", "report_s", "teardown_s")


def overhead(plain: dict[str, Any], ray_run: dict[str, Any], ray_init_s: float) -> dict[str, Any]:
    """Ray's overhead two ways: the wall-time difference (noisy on a shared machine: the
    compute of two runs differs by a few %), and the phases only a Ray run has."""
    ray_only = sum(ray_run[k] for k in RAY_ONLY) + max(0.0, ray_run["setup_s"] - plain["setup_s"])
    parts = {
        "start-up": ray_run["startup_s"],
        "ray.train.report (sync + upload + hand-over)": ray_run["report_s"],
        "teardown": ray_run["teardown_s"],
        "extra set-up in the worker": ray_run["setup_s"] - plain["setup_s"],
    }
    cpu = None
    if plain.get("cpu_s") and ray_run.get("cpu_s"):
        cpu = (ray_run["cpu_s"] - plain["cpu_s"]) / ray_run["cpu_s"]
    return {
        "fraction_cpu": cpu,
        "difference_s": ray_run["wall_s"] - plain["wall_s"],
        "fraction_direct": (ray_run["wall_s"] - plain["wall_s"]) / ray_run["wall_s"],
        "ray_only_s": ray_only,
        "fraction_ray_only": ray_only / ray_run["wall_s"],
        "fraction_with_ray_init": (ray_run["wall_s"] + ray_init_s - plain["wall_s"])
        / (ray_run["wall_s"] + ray_init_s),
        "compute_ratio": (ray_run["train_s"] + ray_run["validate_s"])
        / max(plain["train_s"] + plain["validate_s"], 1e-9),
        "parts_s": parts,
        "dominant": max(parts, key=lambda k: parts[k]),
    }


# --- runs -------------------------------------------------------------------------------------


def make_config(plan: Plan, root: Path, storage: Path, *, epochs: int, workers: int, threads: int):
    from raylung.config import RaylungConfig

    return RaylungConfig.model_validate(
        {
            "experiment": {"name": "train-overhead", "storage": str(storage)},
            "data": {
                "root": str(root),
                "image_size": list(plan.image_size),
                "loader_workers": plan.loader_workers,
                "cache_dir": str(storage / "cache"),
            },
            "model": {"name": plan.model},
            "train": {
                "epochs": epochs,
                "batch_size": plan.batch_size,
                "lr": 3e-3,
                "patience": None,
                "num_threads": threads,
            },
            "resources": {"num_workers": workers, "cpus_per_worker": threads, "use_gpu": False},
            "wandb": {"mode": "disabled"},
        }
    )


def prepare_data(plan: Plan, work: Path):
    """Demo data drawn at the plan's size, its split fixed and its cache built (untimed)."""
    from raylung.data import LungDataset, SplitSet, make_demo_dataset
    from raylung.train.launcher import prepare_splits

    root = make_demo_dataset(work / "data", per_subclass=plan.per_subclass, size=plan.image_size)
    cfg = prepare_splits(make_config(plan, root, work, epochs=1, workers=1, threads=1), str(work / "split"))
    splits = SplitSet.load(cfg.data.splits_file)
    LungDataset(splits["train"], cfg.data, train=True)
    LungDataset(splits["validation"], cfg.data, train=False)
    return cfg


def with_run(cfg, plan: Plan, *, epochs: int, workers: int, threads: int):
    train = cfg.train.model_copy(
        update={"epochs": epochs, "num_threads": threads, "batch_size": plan.batch_size}
    )
    resources = cfg.resources.model_copy(update={"num_workers": workers, "cpus_per_worker": threads})
    return cfg.model_copy(update={"train": train, "resources": resources})


def plain_run(cfg, mark: Callable[[str, str], None]) -> list[dict[str, float]]:
    """raylung's training loop without Ray: same parts, same order, one process."""
    import torch
    from torch.utils.data import DataLoader

    from raylung.artifacts.checkpoint import TrainState, save_checkpoint
    from raylung.artifacts.inference import predict_split
    from raylung.artifacts.precision import resolve_precision
    from raylung.config.model_build import build_model
    from raylung.data import LungDataset, SplitSet, worker_init_fn
    from raylung.train.loop import make_optimizer, positive_weight, seed_everything, train_step

    torch.set_num_threads(cfg.train.num_threads)
    seed_everything(cfg.train.seed)
    precision = resolve_precision(cfg.train, torch.device("cpu"))
    splits = SplitSet.load(cfg.data.splits_file)
    train_set = LungDataset(splits["train"], cfg.data, train=True, seed=cfg.train.seed)
    val_set = LungDataset(splits["validation"], cfg.data, train=False)
    workers = cfg.data.loader_workers
    common = {
        "num_workers": workers,
        "persistent_workers": workers > 0,
        "worker_init_fn": worker_init_fn if workers > 0 else None,
    }
    train_loader = DataLoader(
        train_set,
        batch_size=cfg.train.batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(cfg.train.seed),
        **common,
    )
    val_loader = DataLoader(val_set, batch_size=cfg.train.batch_size * 2, **common)
    model = build_model(cfg.model, cfg.data.in_chans)
    optimizer = make_optimizer(cfg, model)
    scaler = precision.make_scaler()
    pos_weight = positive_weight(cfg, splits)
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(pos_weight) if pos_weight else None)
    state = TrainState()
    for epoch in range(cfg.train.epochs):
        train_set.set_epoch(epoch)
        mark("train_epoch", "begin")
        model.train()
        seen, loss_sum, start = 0, 0.0, time.perf_counter()
        for images, labels, _ in train_loader:  # raylung's own step, without Ray around it
            loss = train_step(model, images, labels, optimizer, scaler, loss_fn, precision)
            loss_sum += loss.item() * images.shape[0]
            seen += images.shape[0]
        seconds = time.perf_counter() - start
        mark("train_epoch", "end")
        mark("validate", "begin")
        metrics = predict_split(model, val_loader, precision).metrics(pos_weight=pos_weight)
        mark("validate", "end")
        state.update(metrics[cfg.train.monitor], cfg.train.monitor_mode, cfg.train.patience)
        metrics.update(
            epoch=state.epoch, train_loss=loss_sum / seen, images_per_s=seen / seconds, epoch_time_s=seconds
        )
        state.history.append(metrics)
        mark("checkpoint_save", "begin")
        with tempfile.TemporaryDirectory() as tmp:  # as the Ray loop does before it reports
            save_checkpoint(Path(tmp), model, optimizer, scaler, state, cfg)
        mark("checkpoint_save", "end")
    return state.history


def ray_run(
    cfg, storage: Path, name: str, timeline: Path
) -> tuple[float, float, float | None, list[dict[str, float]]]:
    """One ``fit`` with the Timeline callback: (start, end, CPU seconds of the Ray processes,
    per-epoch history)."""
    from raylung.artifacts.checkpoint import load_state
    from raylung.train.launcher import RunLocation, fit

    callbacks = [Timeline(str(timeline))] if Timeline is not None else []
    with CpuMeter(ray_session_name()) as meter:
        start = time.time()
        result = fit(cfg, RunLocation(str(storage), name), callbacks=callbacks)
        end = time.time()
    with result.checkpoint.as_directory() as directory:  # every epoch's metrics (workflow._history)
        history = load_state(Path(directory)).history
    return start, end, meter.seconds, history


def connect_local_ray() -> float:
    """A local Ray in this process (never a shared cluster); returns ray.init's seconds."""
    os.environ.pop("RAY_ADDRESS", None)
    if __name__ != "__main__":  # imported (run_all, tune_overhead): ship Timeline by value
        import cloudpickle

        cloudpickle.register_pickle_by_value(sys.modules[__name__])
    from raylung.cluster.connect import RayTarget, connect

    start = time.perf_counter()
    connect(RayTarget(num_cpus=2))
    return time.perf_counter() - start


def steady_images_per_s(history: list[dict[str, float]]) -> float:
    """Training images/s over the epochs after the first (the first pays one-off warm-up)."""
    rows = history[1:] or history
    images = sum(r["images_per_s"] * r["epoch_time_s"] for r in rows)
    return images / sum(r["epoch_time_s"] for r in rows)


def scaling(one: dict[str, Any], two: dict[str, Any]) -> dict[str, Any]:
    speedup = two["images_per_s"] / one["images_per_s"]
    return {
        "speedup": speedup,
        "efficiency": speedup / 2,
        "met": speedup >= SPEEDUP_TARGET and speedup / 2 >= EFFICIENCY_TARGET,
    }


# --- step split (no Ray) ----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


SOLO_FULL, SOLO_HALF, DDP_SYNC, DDP_NO_SYNC = (
    "1 process, global batch",
    "1 process, half batch",
    "ddp sync",
    "ddp no_sync",
)
SPLIT_MODES = (SOLO_FULL, SOLO_HALF, DDP_SYNC, DDP_NO_SYNC)


def _split_worker(rank: int, world: int, cfg_json: str, steps: int, warmup: int, port: int, out: str) -> None:
    """Time each phase of training steps in one of two gloo processes (1 thread each).

    Four modes take turns step by step, so a change in the machine's load hits them alike:
    rank 0 alone at the global batch and at half of it (rank 1 waits at a barrier, asleep),
    then both ranks with DDP at half the batch each, with gradient sync and under
    ``no_sync()``. Every step starts at a barrier, so a synced step's extra backward time is
    the exposed allreduce plus waiting for the slower rank."""
    import torch
    import torch.distributed as dist
    from torch.utils.data import DataLoader, DistributedSampler

    from raylung.config import RaylungConfig
    from raylung.config.model_build import build_model
    from raylung.data import LungDataset, SplitSet
    from raylung.train.loop import make_optimizer, seed_everything

    torch.set_num_threads(1)
    cfg = RaylungConfig.model_validate_json(cfg_json)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    seed_everything(cfg.train.seed)
    dataset = LungDataset(SplitSet.load(cfg.data.splits_file)["train"], cfg.data, train=True, prepare=False)

    def batches(batch: int, replicas: int) -> Iterator:
        sampler = DistributedSampler(dataset, num_replicas=replicas, rank=rank if replicas > 1 else 0, seed=0)
        loader = DataLoader(dataset, batch_size=batch, sampler=sampler, drop_last=True)
        for epoch in range(10**6):
            sampler.set_epoch(epoch)
            yield from loader

    solo = build_model(cfg.model, cfg.data.in_chans)
    ddp = torch.nn.parallel.DistributedDataParallel(build_model(cfg.model, cfg.data.in_chans))
    params = sum(p.numel() for p in solo.parameters())
    half = cfg.train.batch_size // world
    shared = batches(half, world)
    setups = {
        SOLO_FULL: (solo, batches(cfg.train.batch_size, 1)),
        SOLO_HALF: (solo, batches(half, 1)),
        DDP_SYNC: (ddp, shared),
        DDP_NO_SYNC: (ddp, shared),
    }
    optimizers = {id(solo): make_optimizer(cfg, solo), id(ddp): make_optimizer(cfg, ddp)}
    loss_fn = torch.nn.BCEWithLogitsLoss()
    rows = []
    for i in range((warmup + steps) * len(SPLIT_MODES)):
        mode = SPLIT_MODES[i % len(SPLIT_MODES)]
        dist.barrier()
        if mode in (SOLO_FULL, SOLO_HALF) and rank != 0:
            continue
        model, source = setups[mode]
        optimizer = optimizers[id(model)]
        t0 = time.perf_counter()
        images, labels, _ = next(source)
        t1 = time.perf_counter()
        with ddp.no_sync() if mode == DDP_NO_SYNC else contextlib.nullcontext():
            loss = loss_fn(model(images).reshape(-1), labels)
            t2 = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            t3 = time.perf_counter()
        optimizer.step()
        loss.item()
        t4 = time.perf_counter()
        if i >= warmup * len(SPLIT_MODES):
            rows.append(
                {
                    "mode": mode,
                    "rank": rank,
                    "images": int(images.shape[0]),
                    "data": t1 - t0,
                    "forward": t2 - t1,
                    "backward": t3 - t2,
                    "optimizer": t4 - t3,
                    "step": t4 - t0,
                }
            )
    flat, allreduce = torch.zeros(params), []  # one allreduce of all gradients, as DDP's buckets add up to
    for _ in range(12):
        dist.barrier()
        t0 = time.perf_counter()
        dist.all_reduce(flat)
        allreduce.append(time.perf_counter() - t0)
    dist.destroy_process_group()
    Path(out, f"rank{rank}.json").write_text(
        json.dumps({"rows": rows, "allreduce_s": allreduce[2:], "params": params})
    )


def split_processes(cfg, steps: int, warmup: int) -> dict[int, dict[str, Any]]:
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as out:
        mp.spawn(
            _split_worker,
            args=(2, cfg.model_dump_json(), steps, warmup, free_port(), out),
            nprocs=2,
            join=True,
        )
        return {rank: json.loads(Path(out, f"rank{rank}.json").read_text()) for rank in range(2)}


def summarize_split(ranks: dict[int, dict], global_batch: int) -> dict[str, Any]:
    """Median phase times per mode and rank, images/s, and the factors of the DDP speed-up:
    batch effect x machine ceiling x sync cost x 2."""
    phases = ("data", "forward", "backward", "optimizer", "step")
    modes: dict[str, dict[str, float]] = {}
    for rank, data in sorted(ranks.items()):
        for mode in SPLIT_MODES:
            rows = [r for r in data["rows"] if r["mode"] == mode]
            if rows:
                key = mode if mode in (SOLO_FULL, SOLO_HALF) else f"{mode} (rank {rank})"
                modes[key] = {p: statistics.median(r[p] for r in rows) for p in phases}
                modes[key]["images_per_s"] = rows[0]["images"] / modes[key]["step"]
    full, half = modes[SOLO_FULL]["images_per_s"], modes[SOLO_HALF]["images_per_s"]
    sync_step = max(modes[f"{DDP_SYNC} (rank {r})"]["step"] for r in ranks)
    ddp = global_batch / sync_step
    ceiling = sum(modes[f"{DDP_NO_SYNC} (rank {r})"]["images_per_s"] for r in ranks)
    exposed = statistics.mean(
        modes[f"{DDP_SYNC} (rank {r})"]["backward"] - modes[f"{DDP_NO_SYNC} (rank {r})"]["backward"]
        for r in ranks
    )
    first = ranks[min(ranks)]
    return {
        "modes": modes,
        "params": first["params"],
        "allreduce_flat_s": statistics.median(first["allreduce_s"]) if first["allreduce_s"] else None,
        "exposed_allreduce_s": exposed,
        "exposed_allreduce_fraction": exposed / sync_step,
        "speedup_ddp": ddp / full,
        "batch_effect": half / full,  # images/s at the per-worker batch vs the global batch
        "machine_ceiling": ceiling / (2 * half),  # two free-running processes vs twice one
        "sync_cost": ddp / ceiling,  # what gradient sync and lock-step leave of the ceiling
    }


# --- main -------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    parser.add_argument("--quick", action="store_true", help="short runs (about 2 minutes in all)")
    parser.add_argument("--model", default=None)
    parser.add_argument("--image-size", type=int, nargs=2, metavar=("W", "H"), default=None)
    parser.add_argument("--batch-size", type=int, default=None, help="global batch")
    parser.add_argument("--per-subclass", type=int, default=None, help="demo images per subclass")
    parser.add_argument("--epochs", type=int, default=None, help="epochs of the overhead runs")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (and CPUs) of the overhead runs"
    )
    parser.add_argument("--scaling-epochs", type=int, default=None)
    parser.add_argument(
        "--split-steps", type=int, default=None, help="timed steps per mode in the step split"
    )
    parser.add_argument("--skip", nargs="*", default=[], choices=["overhead", "scaling", "split"])
    parser.add_argument("--keep", type=Path, default=None, help="keep data, runs and timeline in this folder")
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default benchmarks/results/)")
    args = parser.parse_args(argv)
    args.plan = make_plan(
        args.quick,
        model=args.model,
        image_size=tuple(args.image_size) if args.image_size else None,
        batch_size=args.batch_size,
        per_subclass=args.per_subclass,
        overhead_epochs=args.epochs,
        overhead_threads=args.threads,
        scaling_epochs=args.scaling_epochs,
        split_steps=args.split_steps,
    )
    if args.plan.batch_size % 2:
        parser.error("--batch-size must be even (two workers split it)")
    return args


def run_benchmark(plan: Plan, work: Path, skip: list[str]) -> dict[str, Any]:
    import ray

    timeline = work / "timeline.jsonl"
    cfg = prepare_data(plan, work)
    payload: dict[str, Any] = {
        "plan": {**asdict(plan), "train_images": plan.train_images},
        "timeline": str(timeline),
    }
    if "overhead" not in skip:  # the plain run first, with no Ray processes on the machine
        plain_cfg = with_run(cfg, plan, epochs=plan.overhead_epochs, workers=1, threads=plan.overhead_threads)
        with CpuMeter() as meter:
            start = time.time()
            plain_history = plain_run(
                plain_cfg, lambda event, phase: record(timeline, event, phase, run="plain", rank=0)
            )
            end = time.time()
        plain = summarize_run(read_events(timeline), "plain", start, end)
        plain["cpu_s"] = meter.seconds
        plain["images_per_s"] = steady_images_per_s(plain_history)
        print(f"plain loop: {plain['wall_s']:.1f} s", flush=True)
    ray_init_s = connect_local_ray()
    payload["ray_init_s"] = ray_init_s
    try:
        if "overhead" not in skip:
            ray_cfg = with_run(
                cfg, plan, epochs=plan.overhead_epochs, workers=1, threads=plan.overhead_threads
            )
            start, end, cpu, history = ray_run(ray_cfg, work / "runs", "overhead-1w", timeline)
            ray_summary = {
                **summarize_run(read_events(timeline), "overhead-1w", start, end),
                "cpu_s": cpu,
                "images_per_s": steady_images_per_s(history),
            }
            print(f"TorchTrainer, 1 worker: {ray_summary['wall_s']:.1f} s", flush=True)
            payload["overhead"] = {
                "plain": plain,
                "ray": ray_summary,
                **overhead(plain, ray_summary, ray_init_s),
            }
        if "scaling" not in skip:
            payload["scaling"] = scaling_runs(cfg, plan, work, timeline)
    finally:
        ray.shutdown()
    if "split" not in skip:
        split_cfg = cfg.model_copy(
            update={"train": cfg.train.model_copy(update={"batch_size": plan.batch_size})}
        )
        payload["step_split"] = summarize_split(
            split_processes(split_cfg, plan.split_steps, plan.split_warmup), plan.batch_size
        )
    return payload


SCALING_ORDER = (("1 worker (first)", 1), ("2 workers", 2), ("1 worker (last)", 1))  # A-B-A: drift cancels


def scaling_runs(cfg, plan: Plan, work: Path, timeline: Path) -> dict[str, Any]:
    runs = {}
    for label, workers in SCALING_ORDER:
        name = f"scaling-{len(runs)}-{workers}w"
        start, end, cpu, history = ray_run(
            with_run(cfg, plan, epochs=plan.scaling_epochs, workers=workers, threads=1),
            work / "runs",
            name,
            timeline,
        )
        events = read_events(timeline)
        steady = [span_cpu(events, name, "train_epoch", rank, skip=1) for rank in range(workers)]
        images = sum(r["images_per_s"] * r["epoch_time_s"] for r in history[1:])
        runs[label] = {
            **summarize_run(events, name, start, end),
            "workers": workers,
            "cpu_s": cpu,
            "images_per_s": steady_images_per_s(history),
            "images_per_s_by_epoch": [r["images_per_s"] for r in history],
            "rank_train_s": {
                rank: total(spans(events, name, "train_epoch", rank)) for rank in range(workers)
            },
            # cores the workers kept busy while training (epochs 2+; below 1 per worker when the
            # machine gives less or a worker waits for the other), and the images trained per
            # CPU-second of all workers: the work it took, apart from what the machine gave
            "cores_granted": sum(cpu_s / wall for wall, cpu_s in steady if wall > 0),
            "images_per_cpu_s": images / max(sum(cpu_s for _, cpu_s in steady), 1e-9),
        }
        print(f"{label}: {runs[label]['images_per_s']:.1f} images/s", flush=True)

    def mean(workers: int, key: str) -> float:
        return statistics.mean(r[key] for r in runs.values() if r["workers"] == workers)

    work = mean(2, "images_per_cpu_s") / mean(1, "images_per_cpu_s")
    return {
        "runs": runs,
        "one_worker_images_per_s": mean(1, "images_per_s"),
        "two_workers_images_per_s": mean(2, "images_per_s"),
        "cores_granted": {"1 worker": mean(1, "cores_granted"), "2 workers": mean(2, "cores_granted")},
        "work_efficiency": work,  # images per CPU-second, 2 workers over 1
        "projected_speedup_two_free_cores": 2 * work,
        **scaling({"images_per_s": mean(1, "images_per_s")}, {"images_per_s": mean(2, "images_per_s")}),
    }


def report(payload: dict[str, Any]) -> None:
    plan = payload["plan"]
    if "overhead" in payload:
        o = payload["overhead"]
        plain, ray_run_ = o["plain"], o["ray"]
        rows = [
            [
                label,
                plain.get(key),
                ray_run_.get(key),
                ray_run_[key] - plain[key] if None not in (plain.get(key), ray_run_.get(key)) else "n/a",
            ]
            for label, key in (
                ("Ray Train start-up", "startup_s"),
                ("set-up in the training process", "setup_s"),
                ("training epochs", "train_s"),
                ("validation", "validate_s"),
                ("checkpoint save", "checkpoint_save_s"),
                ("ray.train.report", "report_s"),
                ("  of which checkpoint sync", "report_sync_s"),
                ("  of which checkpoint upload", "report_upload_s"),
                ("  of which hand-over wait", "report_wait_s"),
                ("teardown (last report -> fit returns)", "teardown_s"),
                ("other", "other_s"),
                ("wall", "wall_s"),
                ("CPU seconds (all processes of the run)", "cpu_s"),
            )
        ]
        rows.append(["ray.init (once per process)", 0.0, payload["ray_init_s"], payload["ray_init_s"]])
        print_table(
            f"(a) {plan['overhead_epochs']} epochs, {plan['model']} "
            f"{plan['image_size'][0]}x{plan['image_size'][1]}, batch {plan['batch_size']}, "
            f"{plan['train_images']} train images, {plan['overhead_threads']} threads: "
            "plain PyTorch vs TorchTrainer (1 worker), seconds",
            ["phase", "plain", "Ray", "Ray - plain"],
            rows,
        )
        for title, key in (("start-up", "startup_phases_s"), ("teardown", "teardown_phases_s")):
            phases = ray_run_.get(key) or {}
            print_table(
                f"(a) Ray Train {title}, seconds",
                ["phase", "s"],
                [[k, v if v is not None else "n/a"] for k, v in phases.items()],
            )
        print_table(
            "(a) Ray's overhead",
            ["measure", "value", "target", "met"],
            [
                [
                    "wall difference / Ray wall",
                    o["fraction_direct"],
                    f"<= {OVERHEAD_TARGET}",
                    "yes" if o["fraction_direct"] <= OVERHEAD_TARGET else "NO",
                ],
                [
                    "Ray-only phases / Ray wall",
                    o["fraction_ray_only"],
                    f"<= {OVERHEAD_TARGET}",
                    "yes" if o["fraction_ray_only"] <= OVERHEAD_TARGET else "NO",
                ],
                [
                    "CPU-seconds difference / Ray CPU-seconds",
                    o["fraction_cpu"] if o["fraction_cpu"] is not None else "n/a",
                    f"<= {OVERHEAD_TARGET}",
                    ""
                    if o["fraction_cpu"] is None
                    else "yes"
                    if o["fraction_cpu"] <= OVERHEAD_TARGET
                    else "NO",
                ],
                ["difference incl. ray.init / wall incl. ray.init", o["fraction_with_ray_init"], "", ""],
                ["compute (train+validation) Ray / plain", o["compute_ratio"], "~1 (noise check)", ""],
                ["largest Ray-only part", o["dominant"], "", ""],
            ],
        )
    if "scaling" in payload:
        s = payload["scaling"]
        rows = [
            [
                label,
                r["images_per_s"],
                r["wall_s"],
                r["startup_s"],
                r["train_s"],
                " / ".join(f"{v:.1f}" for v in r["rank_train_s"].values()),
                r["cores_granted"],
                r["images_per_cpu_s"],
            ]
            for label, r in s["runs"].items()
        ]
        print_table(
            f"(b) {plan['scaling_epochs']} epochs, 1 CPU + 1 thread per worker, "
            f"global batch {plan['batch_size']}",
            [
                "run",
                "train images/s (epochs 2+)",
                "wall s",
                "start-up s",
                "train s (rank 0)",
                "train s per rank",
                "cores busy",
                "images per CPU-s",
            ],
            rows,
        )
        print_table(
            "(b) scaling",
            ["measure", "value", "target", "met"],
            [
                [
                    "speedup 2 vs 1 worker",
                    s["speedup"],
                    f">= {SPEEDUP_TARGET}",
                    "yes" if s["speedup"] >= SPEEDUP_TARGET else "NO",
                ],
                [
                    "efficiency",
                    s["efficiency"],
                    f">= {EFFICIENCY_TARGET}",
                    "yes" if s["efficiency"] >= EFFICIENCY_TARGET else "NO",
                ],
                [
                    "cores busy while training (CPU-s / wall-s), 1 worker",
                    s["cores_granted"]["1 worker"],
                    "1 if free",
                    "",
                ],
                [
                    "cores busy while training, 2 workers (sum)",
                    s["cores_granted"]["2 workers"],
                    "2 if free",
                    "",
                ],
                ["work efficiency (images per CPU-second, 2 / 1)", s["work_efficiency"], "", ""],
                [
                    "projected speedup, a free core per worker (2 x work efficiency)",
                    s["projected_speedup_two_free_cores"],
                    f">= {SPEEDUP_TARGET}",
                    "yes" if s["projected_speedup_two_free_cores"] >= SPEEDUP_TARGET else "NO",
                ],
            ],
        )
    if "step_split" in payload:
        sp = payload["step_split"]
        rows = [
            [
                mode,
                v["data"] * 1e3,
                v["forward"] * 1e3,
                v["backward"] * 1e3,
                v["optimizer"] * 1e3,
                v["step"] * 1e3,
                v["images_per_s"],
            ]
            for mode, v in sp["modes"].items()
        ]
        print_table(
            "(b) step split without Ray (median ms per step, 1 thread per process)",
            ["mode", "data", "forward", "backward", "optimizer", "step", "images/s"],
            rows,
        )
        print_table(
            "(b) what the step split predicts",
            ["measure", "value"],
            [
                ["gradient size (MB)", sp["params"] * 4 / 1e6],
                [
                    "one allreduce of all gradients (ms)",
                    sp["allreduce_flat_s"] * 1e3 if sp["allreduce_flat_s"] else "n/a",
                ],
                ["exposed allreduce + wait per synced step (ms)", sp["exposed_allreduce_s"] * 1e3],
                ["  as a fraction of the step", sp["exposed_allreduce_fraction"]],
                ["batch effect (half batch / global batch, images/s)", sp["batch_effect"]],
                ["machine ceiling (2 free processes / 2x one)", sp["machine_ceiling"]],
                ["sync cost (DDP / free processes)", sp["sync_cost"]],
                ["speedup DDP 2 procs vs 1 (product of the above x2)", sp["speedup_ddp"]],
            ],
        )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    with contextlib.ExitStack() as stack:
        work = args.keep or Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="raylung-train-overhead-"))
        )
        work.mkdir(parents=True, exist_ok=True)
        payload = run_benchmark(args.plan, work, args.skip)
    report(payload)
    payload["config"] = {"quick": args.quick, "skip": args.skip}
    save_json("train_overhead", payload, args.out)
    return payload


if __name__ == "__main__":
    main()
