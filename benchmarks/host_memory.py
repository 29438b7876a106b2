"""A train step with and without raylung's malloc settings, each model in a fresh process.

raylung's training workers keep freed memory in the process (:mod:`raylung.train.host_memory`:
glibc's mmap and trim thresholds at 1 GiB). What that saves is the page faults a fresh process
pays on every step; in a process that has already run other models the heap is warm and hides
them, so every measurement here is its own ``benchmarks/model_step.py`` process with one model,
as a Ray Train worker trains one model. The settings alternate (on first in even rounds, off
first in odd ones) and every process warms up before its timed steps. The table gives, per
model and setting, the median over rounds of each process's median step, CPU seconds and minor
page faults per step, its peak resident memory (what keeping freed memory costs), the speed-up
from keeping freed memory, and ResNet-ours(50)'s ratio to ResNet-50 under each setting.

    python benchmarks/host_memory.py                                   # 2 models, 3 rounds
    python benchmarks/host_memory.py --models resnet50 --rounds 1 --repeats 2 --height 96 --width 128
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import print_table, save_json  # noqa: E402

from raylung.train.host_memory import KEEP_FREED_MEMORY_ENV  # noqa: E402

MODEL_STEP = Path(__file__).resolve().parent / "model_step.py"
SETTINGS = {"kept": "1", "glibc default": "0"}


def measure(model: str, setting: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """One fresh process: `model`'s step under `setting`; model_step.py's figures for it."""
    out = workdir / f"{model}-{SETTINGS[setting]}.json"
    command = [sys.executable, str(MODEL_STEP), "--models", model, "--repeats", str(args.repeats)]
    command += ["--warmup", str(args.warmup), "--batch-size", str(args.batch_size)]
    command += ["--height", str(args.height), "--width", str(args.width), "--out", str(out)]
    if args.threads:
        command += ["--threads", str(args.threads)]
    env = {**os.environ, KEEP_FREED_MEMORY_ENV: SETTINGS[setting]}
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
    result = json.loads(out.read_text())
    assert result["config"]["keep_freed_memory"] == (SETTINGS[setting] == "1")
    return {**result["results"][model], "peak_rss_mb": result["config"]["peak_rss_mb"]}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=["resnet_ours50", "resnet50"])
    parser.add_argument("--rounds", type=int, default=3, help="fresh processes per model and setting")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per process")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default benchmarks/results/)")
    args = parser.parse_args(argv)

    runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            order = list(SETTINGS) if round_ % 2 == 0 else list(reversed(SETTINGS))
            for model in args.models:
                for setting in order:
                    print(f"round {round_ + 1}/{args.rounds}: {model}, {setting}", flush=True)
                    runs.setdefault((model, setting), []).append(measure(model, setting, args, Path(tmp)))

    def median_of(model: str, setting: str, key: str) -> float:
        return statistics.median(run[key] for run in runs[model, setting])

    rows, results = [], {}
    for model in args.models:
        for setting in SETTINGS:
            step, cpu = median_of(model, setting, "median_s"), median_of(model, setting, "cpu_median_s")
            faults = median_of(model, setting, "minor_faults_median")
            rss = median_of(model, setting, "peak_rss_mb")
            speedup = median_of(model, "glibc default", "median_s") / step
            rows.append([model, setting, step, cpu, int(faults), round(rss), speedup])
            results[f"{model}, {setting}"] = {
                "median_s": step,
                "cpu_median_s": cpu,
                "minor_faults_per_step": faults,
                "peak_rss_mb": rss,
                "speedup_over_glibc_default": speedup,
                "runs": runs[model, setting],
            }
    ratios = {}
    if {"resnet_ours50", "resnet50"} <= set(args.models):
        for setting in SETTINGS:
            ours, base = (median_of(m, setting, "median_s") for m in ("resnet_ours50", "resnet50"))
            ratios[f"resnet_ours50 / resnet50, {setting}"] = ours / base
    title = (
        f"train step, batch {args.batch_size}, 3x{args.height}x{args.width}, one model per process, "
        f"median of {args.rounds} processes x {args.repeats} steps"
    )
    columns = ["model", "freed memory", "median s", "CPU s", "page faults", "peak RSS MB", "x faster"]
    print_table(title, columns, rows)
    for name, ratio in ratios.items():
        print(f"{name}: {ratio:.2f}")
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    payload = {"config": config, "results": results, "ratios": ratios}
    save_json("host_memory", payload, args.out)
    return payload


if __name__ == "__main__":
    main()
