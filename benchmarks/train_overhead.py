"""Ray Train's cost on one training run: the same epochs with and without Ray, side by side.

The same run -- model, data, loader, optimizer, validation and a checkpoint every epoch -- once
in this process without Ray (raylung's own ``build_run`` and ``run_epochs``, the code every
Ray Train worker runs, minus Ray's wrapping and report) and once through
``raylung.train.launcher.fit`` (a ``TorchTrainer`` with one worker), one torch thread each
(see ``Plan``), both timed from the call to the end, set-up included. Ray's overhead is
measured three ways: the wall-time difference over the Ray run's wall time; the Ray-only
phases of a timeline over the Ray run's wall time; and the CPU-seconds difference (every
process of the run, Ray's daemons included) over the Ray run's CPU-seconds. On a shared
machine the first swings with other users' load (the two runs' compute differs by tens of %),
the other two hardly do. The timeline comes from the loop's phase hooks (set-up, epochs,
data, steps, validation, checkpoint save, report; ``raylung.train.hooks``) and from a Ray Train
callback (controller, worker group, checkpoint sync and upload), so start-up,
``ray.train.report`` and teardown are measured, not guessed. ``ray.init`` is timed on its own:
a ``raylung train`` call pays it once per run.

Model: ``resnet_ours_tiny`` (0.53M parameters) at 160x120 images, global batch 16. Scaling
from one worker to two is ``train_scaling.py``.

    python benchmarks/train_overhead.py            # 20-epoch runs: ~6 min idle, ~12 min busy
    python benchmarks/train_overhead.py --quick    # ~2 minutes
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import print_table, save_json  # noqa: E402
from timeline import CpuMeter, TimelineHooks, read_events  # noqa: E402
from train_runs import (  # noqa: E402
    Plan,
    add_plan_arguments,
    connect_local_ray,
    plan_from_args,
    prepare_data,
    ray_run,
    steady_images_per_s,
    summarize_run,
    with_run,
)

os.environ.setdefault("COLUMNS", "160")  # rich tables are not cut to 80 columns in a pipe

OVERHEAD_TARGET = 0.10
RAY_ONLY = ("startup_s", "report_s", "teardown_s")


def plain_run(cfg, timeline: Path) -> list[dict[str, float]]:
    """raylung's training loop without Ray, in this process: the worker's own parts and epoch
    loop; the report does nothing (the checkpoint is still written, as rank 0 writes it)."""
    import torch

    from raylung.artifacts.checkpoint import TrainState
    from raylung.train.epochs import run_epochs
    from raylung.train.hooks import SETUP
    from raylung.train.host_memory import keep_freed_memory
    from raylung.train.parts import build_run

    hooks = TimelineHooks(timeline, run="plain", rank=0)
    with hooks.span(SETUP):
        keep_freed_memory()  # as every Ray Train worker does (raylung.train.loop)
        parts = build_run(cfg, torch.device("cpu"))
    state = run_epochs(parts, TrainState(), lambda metrics, checkpoint: None, hooks=hooks)
    return state.history


def overhead(plain: dict[str, Any], ray_run: dict[str, Any], ray_init_s: float) -> dict[str, Any]:
    """Ray's overhead two ways: the wall-time difference (noisy on a shared machine: the
    compute of two runs differs by a few %), and the phases only a Ray run has."""
    ray_only = sum(ray_run[k] - plain.get(k, 0.0) for k in RAY_ONLY)
    ray_only += max(0.0, ray_run["setup_s"] - plain["setup_s"])
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


def run_benchmark(plan: Plan, work: Path) -> dict[str, Any]:
    import ray

    timeline = work / "timeline.jsonl"
    cfg = with_run(
        prepare_data(plan, work), plan, epochs=plan.overhead_epochs, workers=1, threads=plan.overhead_threads
    )
    payload: dict[str, Any] = {
        "plan": {**asdict(plan), "train_images": plan.train_images},
        "timeline": str(timeline),
    }
    with CpuMeter() as meter:  # the plain run first, with no Ray processes on the machine
        start = time.time()
        plain_history = plain_run(cfg, timeline)
        end = time.time()
    plain = summarize_run(read_events(timeline), "plain", start, end)
    plain["cpu_s"] = meter.seconds
    plain["images_per_s"] = steady_images_per_s(plain_history)
    print(f"plain loop: {plain['wall_s']:.1f} s", flush=True)
    payload["ray_init_s"] = ray_init_s = connect_local_ray()
    try:
        start, end, cpu, history = ray_run(cfg, work / "runs", "overhead-1w", timeline)
    finally:
        ray.shutdown()
    ray_summary = {
        **summarize_run(read_events(timeline), "overhead-1w", start, end),
        "cpu_s": cpu,
        "images_per_s": steady_images_per_s(history),
    }
    print(f"TorchTrainer, 1 worker: {ray_summary['wall_s']:.1f} s", flush=True)
    payload["overhead"] = {"plain": plain, "ray": ray_summary, **overhead(plain, ray_summary, ray_init_s)}
    return payload


def _met(value: float | None, target: float) -> str:
    return "" if value is None else "yes" if value <= target else "NO"


PHASE_ROWS = (
    ("Ray Train start-up", "startup_s"),
    ("set-up in the training process", "setup_s"),
    ("training epochs", "train_s"),
    ("  of which data (fetching batches)", "data_s"),
    ("  of which optimizer steps", "step_s"),
    ("validation", "validate_s"),
    ("checkpoint save", "checkpoint_save_s"),
    ("report (ray.train.report; nothing in the plain run)", "report_s"),
    ("  of which checkpoint sync", "report_sync_s"),
    ("  of which checkpoint upload", "report_upload_s"),
    ("  of which hand-over wait", "report_wait_s"),
    ("teardown (last report -> fit returns)", "teardown_s"),
    ("other", "other_s"),
    ("wall", "wall_s"),
    ("CPU seconds (all processes of the run)", "cpu_s"),
)


def report(payload: dict[str, Any]) -> None:
    plan, o = payload["plan"], payload["overhead"]
    plain, ray_ = o["plain"], o["ray"]

    def row(label: str, key: str) -> list[Any]:
        a, b = plain.get(key), ray_.get(key)
        return [label, a, b, b - a if None not in (a, b) else "n/a"]

    rows = [row(label, key) for label, key in PHASE_ROWS]
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
        phases = ray_.get(key) or {}
        print_table(
            f"(a) Ray Train {title}, seconds",
            ["phase", "s"],
            [[k, v if v is not None else "n/a"] for k, v in phases.items()],
        )
    cpu = o["fraction_cpu"]
    print_table(
        "(a) Ray's overhead",
        ["measure", "value", "target", "met"],
        [
            [
                "wall difference / Ray wall",
                o["fraction_direct"],
                f"<= {OVERHEAD_TARGET}",
                _met(o["fraction_direct"], OVERHEAD_TARGET),
            ],
            [
                "Ray-only phases / Ray wall",
                o["fraction_ray_only"],
                f"<= {OVERHEAD_TARGET}",
                _met(o["fraction_ray_only"], OVERHEAD_TARGET),
            ],
            [
                "CPU-seconds difference / Ray CPU-seconds",
                cpu if cpu is not None else "n/a",
                f"<= {OVERHEAD_TARGET}",
                _met(cpu, OVERHEAD_TARGET),
            ],
            ["difference incl. ray.init / wall incl. ray.init", o["fraction_with_ray_init"], "", ""],
            ["compute (train+validation) Ray / plain", o["compute_ratio"], "~1 (noise check)", ""],
            ["largest Ray-only part", o["dominant"], "", ""],
        ],
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    add_plan_arguments(parser)
    parser.add_argument("--epochs", type=int, default=None, help="epochs of each run")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (and CPUs) of each run")
    args = parser.parse_args(argv)
    args.plan = plan_from_args(parser, args, overhead_epochs=args.epochs, overhead_threads=args.threads)
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    with contextlib.ExitStack() as stack:
        work = args.keep or Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="raylung-train-overhead-"))
        )
        work.mkdir(parents=True, exist_ok=True)
        payload = run_benchmark(args.plan, work)
    report(payload)
    payload["config"] = {"quick": args.quick}
    save_json("train_overhead", payload, args.out)
    return payload


if __name__ == "__main__":
    main()
