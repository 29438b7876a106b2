"""Run the CPU benchmark suite with short settings and write one summary of it.

Each benchmark runs as its own subprocess (never on a shared Ray cluster: ``RAY_ADDRESS`` is
removed from its environment) with its quick flags, writing its JSON and log under
``benchmarks/results/suite/`` (so the full-length results beside it are not overwritten).
Then ``benchmarks/results/summary.json`` and ``summary.md`` collect a table and the headline
ratios of each benchmark and describe the machine. The suite takes about 10-15 minutes on
2 cores; ``benchmarks/gpu.py`` needs a GPU and is not part of it.

    python benchmarks/run_all.py
    python benchmarks/run_all.py --only train_overhead train_scaling tune_overhead
    python benchmarks/run_all.py --summary-only      # rebuild the summary from suite/*.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

from harness import RESULTS_DIR, describe_machine  # noqa: E402

# name -> the flags of its short run. model_step runs on one thread here: on a busy shared
# machine a 2-thread OpenMP region stalls whenever another process holds a core, which can
# make a step 10x slower and the suite overrun; the ratio between models is what it reports.
QUICK_FLAGS: dict[str, list[str]] = {
    "model_step": [
        "--models",
        "resnet_ours50",
        "resnet50",
        "--repeats",
        "3",
        "--warmup",
        "1",
        "--threads",
        "1",
    ],
    "data_loading": ["--images", "64", "--repeats", "1", "--step-repeats", "2"],
    "train_overhead": ["--quick"],
    "train_scaling": ["--quick"],
    "tune_overhead": ["--quick"],
}
TIMEOUT_S = 600


def command(name: str, out: Path) -> list[str]:
    return [sys.executable, str(BENCH_DIR / f"{name}.py"), *QUICK_FLAGS[name], "--out", str(out)]


def run_one(name: str, suite: Path, timeout_s: float) -> dict[str, Any]:
    """Run one benchmark; its JSON lands at suite/<name>.json, its output at suite/<name>.log."""
    out, log = suite / f"{name}.json", suite / f"{name}.log"
    out.unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONUNBUFFERED"] = "1"
    start = time.perf_counter()
    print(f"== {name}: {' '.join(command(name, out)[1:])}", flush=True)
    try:
        with log.open("w") as handle:
            done = subprocess.run(
                command(name, out),
                env=env,
                stdout=handle,
                stderr=subprocess.STDOUT,
                timeout=timeout_s,
                cwd=BENCH_DIR.parent,
            )
        status = "ok" if done.returncode == 0 and out.is_file() else f"failed (exit {done.returncode})"
    except subprocess.TimeoutExpired:
        status = f"timed out after {timeout_s:.0f} s"
    seconds = time.perf_counter() - start
    print(f"   {status} in {seconds:.0f} s (log {log})", flush=True)
    return {"status": status, "seconds": seconds, "json": str(out), "log": str(log)}


# --- one summary per benchmark: (columns, rows, ratios) -------------------------------------

Summary = tuple[list[str], list[list[Any]], dict[str, Any]]


def summarize_model_step(data: dict[str, Any]) -> Summary:
    results = data["results"]
    rows = [
        [
            name,
            r["params"] / 1e6,
            r["median_s"],
            r["ratio_to_resnet50"],
            data["config"]["batch_size"] / r["median_s"],
        ]
        for name, r in results.items()
    ]
    ratios = {
        f"{name} / resnet50 step time": r["ratio_to_resnet50"]
        for name, r in results.items()
        if name != "resnet50"
    }
    return ["model", "params (M)", "median step s", "x resnet50", "images/s"], rows, ratios


def summarize_data_loading(data: dict[str, Any]) -> Summary:
    rows = [
        [
            r["source"],
            "on" if r["cache"] else "off",
            r["workers"],
            r["images_per_s"],
            r["ratio_to_train_step"],
        ]
        for r in data["loader"]
    ]
    rows.append(
        [f"train step ({data['train_step']['model']})", "", "", data["train_step"]["images_per_s"], 1.0]
    )
    slowest = min(r["ratio_to_train_step"] for r in data["loader"])
    ratios = {"slowest loader / train step": slowest, "loader >= 3x train step everywhere": slowest >= 3}
    return ["source", "cache", "loader workers", "images/s", "x train step"], rows, ratios


def summarize_train_overhead(data: dict[str, Any]) -> Summary:
    o = data["overhead"]
    rows: list[list[Any]] = [
        ["(a) plain PyTorch wall s", o["plain"]["wall_s"]],
        ["(a) TorchTrainer 1 worker wall s", o["ray"]["wall_s"]],
        ["(a) Ray Train start-up s", o["ray"]["startup_s"]],
        ["(a) ray.train.report total s", o["ray"]["report_s"]],
        ["(a) teardown s", o["ray"]["teardown_s"]],
        ["(a) ray.init s", data.get("ray_init_s")],
    ]
    ratios = {
        "overhead (wall difference / Ray wall)": o["fraction_direct"],
        "overhead (CPU-seconds difference / Ray CPU-seconds)": o.get("fraction_cpu"),
        "overhead (Ray-only phases / Ray wall)": o["fraction_ray_only"],
        "largest Ray-only part": o["dominant"],
    }
    return ["measure", "value"], rows, ratios


def summarize_train_scaling(data: dict[str, Any]) -> Summary:
    rows: list[list[Any]] = []
    ratios: dict[str, Any] = {}
    if "scaling" in data:
        s = data["scaling"]
        rows += [[f"(b) {label}: train images/s", r["images_per_s"]] for label, r in s["runs"].items()]
        ratios.update(
            {
                "speedup 2 vs 1 worker": s["speedup"],
                "scaling efficiency": s["efficiency"],
                "work efficiency (images per CPU-second, 2 / 1 workers)": s.get("work_efficiency"),
                "projected speedup with two free cores": s.get("projected_speedup_two_free_cores"),
            }
        )
    if "step_split" in data:
        sp = data["step_split"]
        ratios.update(
            {
                "step split: machine ceiling": sp["machine_ceiling"],
                "step split: batch effect": sp["batch_effect"],
                "step split: sync cost": sp["sync_cost"],
            }
        )
    return ["measure", "value"], rows, ratios


def summarize_tune_overhead(data: dict[str, Any]) -> Summary:
    rows = [
        [
            label,
            r["n_trials"],
            r["tune_wall_s"],
            r["sum_train_s"],
            r["sum_validate_s"],
            r["mean"]["overhead_s"],
            r["mean"]["startup_s"],
            r["experiment_overhead_per_trial_s"],
        ]
        for label, r in data["settings"].items()
    ]
    ratios: dict[str, Any] = {}
    comparison = data.get("health_check") or {}
    for key in ("tune_wall_ratio", "tuner_run_ratio", "trial_overhead_s_saved", "trial_teardown_s_saved"):
        if key in comparison:
            ratios[f"2 s vs 0.25 s health check: {key}"] = comparison[key]
    return (
        [
            "setting",
            "trials",
            "tune wall s",
            "sum train s",
            "sum validate s",
            "overhead per trial s",
            "start-up per trial s",
            "experiment overhead per trial s",
        ],
        rows,
        ratios,
    )


SUMMARIZERS: dict[str, Callable[[dict[str, Any]], Summary]] = {
    "model_step": summarize_model_step,
    "data_loading": summarize_data_loading,
    "train_overhead": summarize_train_overhead,
    "train_scaling": summarize_train_scaling,
    "tune_overhead": summarize_tune_overhead,
}


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def markdown_table(columns: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def build_summary(runs: dict[str, dict[str, Any]], machine: dict[str, Any]) -> dict[str, Any]:
    """The summary of every benchmark whose JSON exists: its table and ratios, or why it is missing."""
    benchmarks: dict[str, Any] = {}
    for name, run in runs.items():
        entry = dict(run)
        path = Path(run["json"])
        if path.is_file():
            data = json.loads(path.read_text())
            try:
                columns, rows, ratios = SUMMARIZERS[name](data)
                entry.update(columns=columns, rows=rows, ratios=ratios)
            except (KeyError, TypeError, ZeroDivisionError) as exc:  # an older or partial JSON
                entry["summary_error"] = f"{type(exc).__name__}: {exc}"
        benchmarks[name] = entry
    return {
        "generated": dt.datetime.now().isoformat(timespec="seconds"),
        "machine": machine,
        "benchmarks": benchmarks,
    }


def render_markdown(summary: dict[str, Any]) -> str:
    machine = summary["machine"]
    parts = [
        "# raylung benchmark suite",
        "",
        f"Generated {summary['generated']} by `python benchmarks/run_all.py` (short settings; ratios are "
        "measured side by side within each benchmark on a shared machine).",
        "",
        "Machine: " + ", ".join(f"{k} {v}" for k, v in machine.items()),
    ]
    for name, entry in summary["benchmarks"].items():
        parts += [
            "",
            f"## {name}",
            "",
            f"Status: {entry.get('status', 'not run')}"
            + (f" in {entry['seconds']:.0f} s" if entry.get("seconds") is not None else ""),
        ]
        if "summary_error" in entry:
            parts.append(f"Could not summarise its JSON: {entry['summary_error']}")
        if entry.get("rows"):
            parts += ["", markdown_table(entry["columns"], entry["rows"])]
        if entry.get("ratios"):
            parts += ["", markdown_table(["ratio", "value"], [[k, v] for k, v in entry["ratios"].items()])]
    return "\n".join(parts) + "\n"


def write_summary(summary: dict[str, Any], results_dir: Path) -> tuple[Path, Path]:
    results_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = results_dir / "summary.json", results_dir / "summary.md"
    json_path.write_text(json.dumps(summary, indent=2, default=str))
    md_path.write_text(render_markdown(summary))
    return json_path, md_path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    parser.add_argument("--only", nargs="+", choices=list(QUICK_FLAGS), default=None)
    parser.add_argument("--skip", nargs="+", choices=list(QUICK_FLAGS), default=[])
    parser.add_argument(
        "--summary-only", action="store_true", help="do not run: summarise suite/*.json as they are"
    )
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--timeout", type=float, default=TIMEOUT_S, help="seconds per benchmark")
    args = parser.parse_args(argv)
    args.names = [n for n in (args.only or list(QUICK_FLAGS)) if n not in args.skip]
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    suite = args.results_dir / "suite"
    suite.mkdir(parents=True, exist_ok=True)
    runs: dict[str, dict[str, Any]] = {}
    start = time.perf_counter()
    for name in args.names:
        if args.summary_only:
            runs[name] = {
                "status": "not run (summary only)",
                "seconds": None,
                "json": str(suite / f"{name}.json"),
            }
        else:
            runs[name] = run_one(name, suite, args.timeout)
    summary = build_summary(runs, describe_machine())
    summary["suite_seconds"] = time.perf_counter() - start
    json_path, md_path = write_summary(summary, args.results_dir)
    print(f"saved {json_path} and {md_path}")
    return summary


if __name__ == "__main__":
    main()
