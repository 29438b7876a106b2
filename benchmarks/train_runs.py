"""What the training benchmarks share: the plan, the demo data, one timed ``fit``, and where
a run's wall time went.

A Ray run is ``raylung.train.launcher.fit`` as users call it, with two additions it offers for
this: a ``Timeline`` among its Ray Train callbacks (Ray's own phases) and ``TimelineHooks`` as
its phase hooks (the loop's phases, in every worker). Nothing of raylung is replaced.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from timeline import CpuMeter, Timeline, TimelineHooks, moment, ray_session_name, spans, total


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


def add_plan_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags both training benchmarks take (their own come on top)."""
    parser.add_argument("--quick", action="store_true", help="short runs (a few minutes in all)")
    parser.add_argument("--model", default=None)
    parser.add_argument("--image-size", type=int, nargs=2, metavar=("W", "H"), default=None)
    parser.add_argument("--batch-size", type=int, default=None, help="global batch (even)")
    parser.add_argument("--per-subclass", type=int, default=None, help="demo images per subclass")
    parser.add_argument("--keep", type=Path, default=None, help="keep data, runs and timeline in this folder")
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default benchmarks/results/)")


def plan_from_args(parser: argparse.ArgumentParser, args: argparse.Namespace, **fields: Any) -> Plan:
    plan = make_plan(
        args.quick,
        model=args.model,
        image_size=tuple(args.image_size) if args.image_size else None,
        batch_size=args.batch_size,
        per_subclass=args.per_subclass,
        **fields,
    )
    if plan.batch_size % 2:
        parser.error("--batch-size must be even (two workers split it)")
    return plan


# --- config and data --------------------------------------------------------------------------


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


# --- one Ray run ------------------------------------------------------------------------------


def connect_local_ray() -> float:
    """A local Ray in this process (never a shared cluster); returns ray.init's seconds.

    The timeline module travels by value, so Ray's workers need no path to ``benchmarks/``."""
    import ray.cloudpickle
    import timeline

    os.environ.pop("RAY_ADDRESS", None)
    ray.cloudpickle.register_pickle_by_value(timeline)
    from raylung.cluster.connect import RayTarget, connect

    start = time.perf_counter()
    connect(RayTarget(num_cpus=2))
    return time.perf_counter() - start


def ray_run(
    cfg, storage: Path, name: str, timeline: Path
) -> tuple[float, float, float | None, list[dict[str, float]]]:
    """One ``fit``, timed from the call to its return: (start, end, CPU seconds of the Ray
    processes, per-epoch history)."""
    from raylung.artifacts.checkpoint import load_state
    from raylung.train.launcher import RunLocation, fit

    callbacks = [Timeline(str(timeline))] if Timeline is not None else []
    with CpuMeter(ray_session_name()) as meter:
        start = time.time()
        result = fit(cfg, RunLocation(str(storage), name), callbacks=callbacks, hooks=TimelineHooks(timeline))
        end = time.time()
    with result.checkpoint.as_directory() as directory:  # every epoch's metrics, as workflows read them
        history = load_state(Path(directory)).history
    return start, end, meter.seconds, history


def steady_images_per_s(history: list[dict[str, float]]) -> float:
    """Training images/s over the epochs after the first (the first pays one-off warm-up)."""
    rows = history[1:] or history
    images = sum(r["images_per_s"] * r["epoch_time_s"] for r in rows)
    return images / sum(r["epoch_time_s"] for r in rows)


# --- where a run's time went ------------------------------------------------------------------


def _gap(later: float | None, earlier: float | None) -> float | None:
    return None if later is None or earlier is None else later - earlier


def summarize_run(events: list[dict], run: str, start: float, end: float) -> dict[str, Any]:
    """Where a run's wall time went (rank 0), from its timeline; Ray-only phases are 0 for a
    plain run. `start`/`end`: when the caller called and got the run back."""
    train = spans(events, run, "train_epoch")
    setup = spans(events, run, "setup")
    first_epoch = train[0][0] if train else end
    began = setup[0][0] if setup else start  # the training function's start
    reports = spans(events, run, "report")
    summary: dict[str, Any] = {
        "wall_s": end - start,
        "epochs": len(train),
        "startup_s": began - start,  # Ray Train: controller, worker actors, process group
        "setup_s": first_epoch - began,  # in the training process: data, model (DDP wrap), resume
        "train_s": total(train),
        "data_s": total(spans(events, run, "data")),  # of train_s: fetching batches
        "step_s": total(spans(events, run, "train_step")),  # of train_s: optimizer steps
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
