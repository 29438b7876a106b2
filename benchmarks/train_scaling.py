"""Scaling one training run from one Ray Train worker to two, and a step split that says why.

``raylung.train.launcher.fit`` with 1, 2, then 1 worker again (the mean of the 1-worker runs
is the base, so a drift in the machine's load cancels), one CPU and one torch thread each,
same global batch (each of 2 workers takes half): training images/s over the epochs after
the first (epoch time only, as raylung reports it) and the scaling efficiency. The loop's
phase hooks record every rank's epochs, so the CPU each worker got while training and the
images trained per CPU-second are measured too. The step split (``step_split.py``, no Ray)
then breaks a DDP step into data, forward, backward with the exposed allreduce, and optimizer.

Model: ``resnet_ours_tiny`` (0.53M parameters, 2 MB of fp32 gradients) at 160x120 images,
global batch 16. One step at batch 8 is ~0.13 s of one idle core, one gloo allreduce of 2 MB a
few ms: compute dominates. At 64x48 (the smoke size) a step is ~4x shorter while the
allreduce and per-step Python costs stay, so scaling there measures the framework.

    python benchmarks/train_scaling.py            # 6-epoch runs: ~5 min idle
    python benchmarks/train_scaling.py --quick    # ~2 minutes
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import print_table, save_json  # noqa: E402
from step_split import report_split, split_processes, summarize_split  # noqa: E402
from timeline import read_events, span_cpu, spans, total  # noqa: E402
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

SPEEDUP_TARGET = 1.7
EFFICIENCY_TARGET = 0.85
SCALING_ORDER = (("1 worker (first)", 1), ("2 workers", 2), ("1 worker (last)", 1))  # A-B-A: drift cancels


def scaling(one: dict[str, Any], two: dict[str, Any]) -> dict[str, Any]:
    speedup = two["images_per_s"] / one["images_per_s"]
    return {
        "speedup": speedup,
        "efficiency": speedup / 2,
        "met": speedup >= SPEEDUP_TARGET and speedup / 2 >= EFFICIENCY_TARGET,
    }


def summarize_scaling_run(
    events: list[dict],
    name: str,
    workers: int,
    start: float,
    end: float,
    history: list[dict],
    cpu_s: float | None = None,
) -> dict[str, Any]:
    """One run of the series: its images/s, where its time went, and the CPU its ranks got
    (`cpu_s`: every process of the run, as ``ray_run`` measured it)."""
    steady = [span_cpu(events, name, "train_epoch", rank, skip=1) for rank in range(workers)]
    images = sum(r["images_per_s"] * r["epoch_time_s"] for r in history[1:])
    return {
        **summarize_run(events, name, start, end),
        "workers": workers,
        "cpu_s": cpu_s,
        "images_per_s": steady_images_per_s(history),
        "images_per_s_by_epoch": [r["images_per_s"] for r in history],
        "rank_train_s": {rank: total(spans(events, name, "train_epoch", rank)) for rank in range(workers)},
        # cores the workers kept busy while training (epochs 2+; below 1 per worker when the
        # machine gives less or a worker waits for the other), and the images trained per
        # CPU-second of all workers: the work it took, apart from what the machine gave
        "cores_granted": sum(cpu_s / wall for wall, cpu_s in steady if wall > 0),
        "images_per_cpu_s": images / max(sum(cpu_s for _, cpu_s in steady), 1e-9),
    }


def combine(runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The series' means per worker count, the speed-up and the work efficiency."""

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
        runs[label] = summarize_scaling_run(read_events(timeline), name, workers, start, end, history, cpu)
        print(f"{label}: {runs[label]['images_per_s']:.1f} images/s", flush=True)
    return combine(runs)


def run_benchmark(plan: Plan, work: Path, skip: list[str]) -> dict[str, Any]:
    import ray

    timeline = work / "timeline.jsonl"
    cfg = prepare_data(plan, work)
    payload: dict[str, Any] = {
        "plan": {**asdict(plan), "train_images": plan.train_images},
        "timeline": str(timeline),
    }
    if "scaling" not in skip:
        payload["ray_init_s"] = connect_local_ray()
        try:
            payload["scaling"] = scaling_runs(cfg, plan, work, timeline)
        finally:
            ray.shutdown()
    if "split" not in skip:
        split_cfg = with_run(cfg, plan, epochs=1, workers=2, threads=1)
        payload["step_split"] = summarize_split(
            split_processes(split_cfg, plan.split_steps, plan.split_warmup), plan.batch_size
        )
    return payload


def _met(value: float, target: float) -> str:
    return "yes" if value >= target else "NO"


def report(payload: dict[str, Any]) -> None:
    plan = payload["plan"]
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
        projected = s["projected_speedup_two_free_cores"]
        cores = s["cores_granted"]
        speedup, efficiency = f">= {SPEEDUP_TARGET}", f">= {EFFICIENCY_TARGET}"
        print_table(
            "(b) scaling",
            ["measure", "value", "target", "met"],
            [
                ["speedup 2 vs 1 worker", s["speedup"], speedup, _met(s["speedup"], SPEEDUP_TARGET)],
                ["efficiency", s["efficiency"], efficiency, _met(s["efficiency"], EFFICIENCY_TARGET)],
                ["cores busy while training (CPU-s / wall-s), 1 worker", cores["1 worker"], "1 if free", ""],
                ["cores busy while training, 2 workers (sum)", cores["2 workers"], "2 if free", ""],
                ["work efficiency (images per CPU-second, 2 / 1)", s["work_efficiency"], "", ""],
                [
                    "projected speedup, a free core per worker (2 x work efficiency)",
                    projected,
                    speedup,
                    _met(projected, SPEEDUP_TARGET),
                ],
            ],
        )
    if "step_split" in payload:
        report_split(payload["step_split"])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    add_plan_arguments(parser)
    parser.add_argument("--epochs", type=int, default=None, help="epochs of each scaling run")
    parser.add_argument(
        "--split-steps", type=int, default=None, help="timed steps per mode in the step split"
    )
    parser.add_argument("--skip", nargs="*", default=[], choices=["scaling", "split"])
    args = parser.parse_args(argv)
    args.plan = plan_from_args(parser, args, scaling_epochs=args.epochs, split_steps=args.split_steps)
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    with contextlib.ExitStack() as stack:
        work = args.keep or Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="raylung-train-scaling-"))
        )
        work.mkdir(parents=True, exist_ok=True)
        payload = run_benchmark(args.plan, work, args.skip)
    report(payload)
    payload["config"] = {"quick": args.quick, "skip": args.skip}
    save_json("train_scaling", payload, args.out)
    return payload


if __name__ == "__main__":
    main()
