"""Train-step throughput and model FLOP utilisation of ResNet-ours(50) vs ResNet-50 on one CUDA GPU.

One step is forward + backward + ``Adam.step`` (lr 1e-4, raylung's ``build_optimizer``: fused,
as in training; ``benchmarks/reference`` was measured with PyTorch's default, foreach) on a batch
of random images at the paper's input (3x240x320, one logit, ``BCEWithLogitsLoss``); no data
loading, so this is the model's ceiling. Swept: batch size x fp32 / bf16 autocast x contiguous /
channels_last, eager; and ``torch.compile`` (mode default) at ``--compile-batches``, with its
compile time reported apart from the steps.

MFU = achieved FLOP/s / the GPU's peak dense bf16 FLOP/s (also for the fp32 rows, so rows
compare), where FLOPs per image = 3 x ``raylung.models.complexity.gflops`` (the forward pass;
backward ~ 2x forward). Peaks are the vendor's dense figures (no 2:4 sparsity), looked up by
device name; ``--peak-tflops`` overrides. Cases run most useful first (eager bf16
channels_last, the fp32 baseline, the other layouts, then compile) and stop at
``--max-minutes``; the rest are listed as skipped. cuDNN autotuning stays off as in raylung
(``--cudnn-benchmark`` turns it on); TF32 settings are PyTorch's defaults and are recorded.

    python benchmarks/gpu.py                               # about 5 minutes on one H100
    python benchmarks/gpu.py --batches 32 128 --max-minutes 3
    python benchmarks/gpu.py --dry-run                     # on CPU, tiny: checks plan and code path

JSON goes to ``$OUT/gpu.json`` when ``OUT`` is set, else ``benchmarks/results/gpu.json``.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_cases import (  # noqa: E402
    DEFAULT_BATCHES,
    DEFAULT_COMPILE_BATCHES,
    DEFAULT_MODELS,
    build_plan,
    may_start,
    mfu,
    peak_tflops,
    run_case,
    summarize,
    train_gflops,
)
from harness import print_table, save_json  # noqa: E402

os.environ.setdefault("COLUMNS", "160")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    parser.add_argument("--models", nargs="+", default=None, help=f"default {' '.join(DEFAULT_MODELS)}")
    parser.add_argument("--batches", type=int, nargs="+", default=None, help="default 8 32 64 128")
    parser.add_argument("--compile-batches", type=int, nargs="*", default=None, help="default 64")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--height", type=int, default=None, help="default 240 (32 with --dry-run)")
    parser.add_argument("--width", type=int, default=None, help="default 320 (48 with --dry-run)")
    parser.add_argument(
        "--steps", type=int, default=20, help="timed steps per case (more while under --min-time)"
    )
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps after the first")
    parser.add_argument(
        "--min-time", type=float, default=1.0, help="seconds of timed steps per case, at least"
    )
    parser.add_argument("--max-minutes", type=float, default=5.0, help="stop starting cases after this")
    parser.add_argument("--peak-tflops", type=float, default=None, help="peak dense bf16 TFLOP/s of the GPU")
    parser.add_argument("--cudnn-benchmark", action="store_true", help="let cuDNN autotune convolutions")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="no GPU: run the plan's eager cases on CPU at tiny size, one step each",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="JSON path (default $OUT/gpu.json or benchmarks/results/)"
    )
    args = parser.parse_args(argv)
    args.models = args.models or list(DEFAULT_MODELS)
    args.batches = args.batches or ([2] if args.dry_run else list(DEFAULT_BATCHES))
    if args.compile_batches is None:
        args.compile_batches = [min(args.batches)] if args.dry_run else list(DEFAULT_COMPILE_BATCHES)
    args.height = args.height or (32 if args.dry_run else 240)
    args.width = args.width or (48 if args.dry_run else 320)
    if args.dry_run:
        args.steps, args.warmup, args.min_time = 1, 0, 0.0
        args.peak_tflops = args.peak_tflops or 1.0  # a made-up peak: exercises the MFU arithmetic
    if args.out is None and os.environ.get("OUT"):
        args.out = Path(os.environ["OUT"]) / "gpu.json"
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        sys.exit(
            "benchmarks/gpu.py needs a CUDA GPU and torch.cuda.is_available() is False here; "
            "run it on a GPU machine, or check the plan on CPU with --dry-run"
        )
    threads = torch.get_num_threads()
    if args.dry_run:  # checks code paths, not speed: one thread stays quick on a busy CPU
        torch.set_num_threads(1)
    try:
        return _run(args, torch)
    finally:
        torch.set_num_threads(threads)


def _run(args: argparse.Namespace, torch) -> dict[str, Any]:
    device = torch.device("cpu" if args.dry_run else "cuda")
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu (dry run)"
    peak, peak_source = peak_tflops(name, args.peak_tflops)
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    plan = build_plan(args.models, args.batches, args.compile_batches, args.compile)
    flops = {m: train_gflops(m, args.height, args.width) for m in args.models}
    budget_s, start = args.max_minutes * 60, time.monotonic()
    rows = []
    for case in plan:
        row: dict[str, Any] = {**asdict(case), "train_gflops_per_image": flops[case.model]}
        if args.dry_run and case.mode == "compile":
            row.update(status="skipped: no compile in --dry-run")
        elif not may_start(case, time.monotonic() - start, budget_s):
            row.update(status="skipped: --max-minutes")
        else:
            try:
                row.update(
                    run_case(case, args.height, args.width, device, args.steps, args.warmup, args.min_time)
                )
                row["tflops"] = row["images_per_s"] * flops[case.model] / 1e3
                row["mfu"] = mfu(row["images_per_s"], flops[case.model], peak)
            except torch.OutOfMemoryError:
                row.update(status="out of memory")
            except Exception as exc:  # noqa: BLE001 - e.g. a compiler error: keep the other cases
                first_line = str(exc).splitlines()[0][:160] if str(exc) else ""
                row.update(status=f"error: {type(exc).__name__}: {first_line}")
            if case.mode == "compile":
                torch._dynamo.reset()
            if device.type == "cuda":  # after the except block, whose traceback held the tensors
                gc.collect()
                torch.cuda.empty_cache()
        rows.append(row)
        print(
            f"{case.label}: {row['status']}"
            + (f", {row['images_per_s']:.1f} images/s" if row["status"] == "ok" else ""),
            flush=True,
        )
    summary = summarize(rows)
    table = [
        [
            r["model"],
            r["batch"],
            r["precision"],
            r["layout"],
            r["mode"],
            *(
                (
                    r["step_s"] * 1e3,
                    r["images_per_s"],
                    r["tflops"],
                    f"{100 * r['mfu']:.1f}%" if r.get("mfu") is not None else "n/a",
                    r["peak_memory_gb"] if r["peak_memory_gb"] is not None else "n/a",
                    r["compile_s"] if r["compile_s"] is not None else "",
                )
                if r["status"] == "ok"
                else ("", "", "", "", "", r["status"])
            ),
        ]
        for r in rows
    ]
    print_table(
        f"train step, 3x{args.height}x{args.width}, {name}, peak {peak} TFLOP/s bf16 ({peak_source})",
        [
            "model",
            "batch",
            "precision",
            "layout",
            "mode",
            "step ms",
            "images/s",
            "TFLOP/s",
            "MFU",
            "peak mem GB",
            "compile s / status",
        ],
        table,
    )
    print_table(
        "speed-ups",
        ["model", "batch", "switch", "ratio"],
        [[s["model"], s["batch"], s["switch"], s["ratio"]] for s in summary["speedups"]],
    )
    settings = {
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
    }
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    payload = {
        "config": config,
        "device": name,
        "peak_bf16_tflops": peak,
        "peak_source": peak_source,
        "settings": settings,
        "elapsed_s": time.monotonic() - start,
        "rows": rows,
        "summary": summary,
    }
    save_json("gpu", payload, args.out)
    return payload


if __name__ == "__main__":
    main()
