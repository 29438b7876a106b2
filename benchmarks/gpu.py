"""Train-step throughput and model FLOP utilisation of ResNet-ours(50) vs ResNet-50 on one CUDA GPU.

One step is forward + backward + ``Adam.step`` (lr 1e-4, PyTorch's default CUDA implementation,
as raylung's ``make_optimizer``) on a batch of random images at the paper's input (3x240x320,
one logit, ``BCEWithLogitsLoss``); no data loading, so this is the model's ceiling. Swept:
batch size x fp32 / bf16 autocast x contiguous / channels_last, eager; and ``torch.compile``
(mode default) at ``--compile-batches``, with its compile time reported apart from the steps.

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
import contextlib
import gc
import os
import re
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import print_table, save_json  # noqa: E402

os.environ.setdefault("COLUMNS", "160")

# Dense bf16 tensor-core peaks in TFLOP/s from the vendor datasheets (no sparsity), most
# specific pattern first. A10G: NVIDIA publishes no datasheet; 70 is the figure usually quoted
# for AWS's part (the A10's datasheet says 125) -- pass --peak-tflops where it matters.
PEAK_BF16_TFLOPS: tuple[tuple[str, float], ...] = (
    (r"H100.*NVL", 835.0),
    (r"H100.*PCIe", 756.0),
    (r"H100", 989.0),  # SXM5 ("NVIDIA H100 80GB HBM3")
    (r"H200.*NVL", 835.0),
    (r"H200", 989.0),  # SXM
    (r"A100", 312.0),
    (r"A10G", 70.0),
    (r"\bA10\b", 125.0),
    (r"\bL4\b", 121.0),
)

DEFAULT_MODELS = ("resnet_ours50", "resnet50")
DEFAULT_BATCHES = (8, 32, 64, 128)
DEFAULT_COMPILE_BATCHES = (64,)
COMPILE_RESERVE_S = 75.0  # do not start a compile case with less budget left than this


@dataclass(frozen=True)
class Case:
    model: str
    batch: int
    precision: str  # fp32 | bf16
    layout: str  # contiguous | channels_last
    mode: str  # eager | compile | plain (eager with raylung's eager-training kernels off)

    @property
    def label(self) -> str:
        return f"{self.model} b{self.batch} {self.precision} {self.layout} {self.mode}"


def peak_tflops(device_name: str, override: float | None = None) -> tuple[float | None, str]:
    """(peak dense bf16 TFLOP/s, where it came from) for a CUDA device name."""
    if override is not None:
        return override, "--peak-tflops"
    for pattern, value in PEAK_BF16_TFLOPS:
        if re.search(pattern, device_name, flags=re.IGNORECASE):
            return value, f"table ({pattern})"
    return None, "unknown device: pass --peak-tflops"


def build_plan(
    models: list[str],
    batches: list[int],
    compile_batches: list[int],
    compile_: bool = True,
) -> list[Case]:
    """Every case, most useful first; models alternate so a cut-off budget keeps both.

    The fp32 channels_last eager case of each ResNet-ours model is repeated with raylung's
    eager-training kernels off ("plain"): autocast bypasses those kernels, fp32 does not.
    """
    eager_order = (
        ("bf16", "channels_last"),
        ("fp32", "contiguous"),
        ("bf16", "contiguous"),
        ("fp32", "channels_last"),
    )
    plan = [Case(m, b, p, layout, "eager") for p, layout in eager_order for b in batches for m in models]
    ours = [m for m in models if m.startswith("resnet_ours")]
    plan += [Case(m, b, "fp32", "channels_last", "plain") for b in compile_batches for m in ours]
    if compile_:
        plan += [Case(m, b, "bf16", "channels_last", "compile") for b in compile_batches for m in models]
    return plan


def may_start(case: Case, elapsed_s: float, budget_s: float, reserve_s: float = COMPILE_RESERVE_S) -> bool:
    """Whether `case` starts within the budget (a compile needs `reserve_s` left)."""
    left = budget_s - elapsed_s
    return left > (reserve_s if case.mode == "compile" else 0.0)


def mfu(images_per_s: float, train_gflops_per_image: float, peak: float | None) -> float | None:
    """Achieved FLOP/s over peak FLOP/s (peak in TFLOP/s)."""
    if not peak:
        return None
    return images_per_s * train_gflops_per_image * 1e9 / (peak * 1e12)


def train_gflops(model_name: str, height: int, width: int) -> float:
    """GFLOPs of one training step per image: 3x the forward pass, counted on the meta device."""
    import torch

    from raylung.models import create_model
    from raylung.models.complexity import gflops

    with torch.device("meta"):
        model = create_model(model_name)
    return 3.0 * gflops(model, (1, 3, height, width))


def run_case(
    case: Case, height: int, width: int, device, steps: int, warmup: int, min_time_s: float
) -> dict[str, Any]:
    """Time `case`'s training step; compile time is the first step's excess over a steady one."""
    import torch
    from torch import nn

    from raylung.models import create_model
    from raylung.models.kernels import eager_kernels

    cuda = device.type == "cuda"
    sync: Callable[[], None] = torch.cuda.synchronize if cuda else (lambda: None)
    torch.manual_seed(0)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    memory_format = torch.channels_last if case.layout == "channels_last" else torch.contiguous_format
    model = create_model(case.model).to(device).train().to(memory_format=memory_format)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    loss_fn = nn.BCEWithLogitsLoss()
    images = torch.randn(case.batch, 3, height, width, device=device).contiguous(memory_format=memory_format)
    labels = torch.randint(0, 2, (case.batch,), device=device).float()
    forward = torch.compile(model) if case.mode == "compile" else model

    def autocast():
        if case.precision == "bf16":
            return torch.autocast(device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def step() -> None:
        with autocast(), eager_kernels(case.mode != "plain"):
            logits = forward(images).reshape(-1)
            loss = loss_fn(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    start = time.perf_counter()
    step()
    sync()
    first_s = time.perf_counter() - start
    for _ in range(warmup):
        step()
    sync()
    done, start = 0, time.perf_counter()
    while done < steps or (time.perf_counter() - start < min_time_s and done < 10 * steps):
        step()
        done += 1
        if done >= steps:
            sync()
    sync()
    step_s = (time.perf_counter() - start) / done
    result = {
        "status": "ok",
        "step_s": step_s,
        "steps": done,
        "images_per_s": case.batch / step_s,
        "first_step_s": first_s,
        "compile_s": max(0.0, first_s - step_s) if case.mode == "compile" else None,
        "peak_memory_gb": torch.cuda.max_memory_allocated() / 1e9 if cuda else None,
    }
    return result  # the model, optimizer and batch go with this frame


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Best configuration per model and the speed-ups of each switch, eager, per batch."""
    ok = [r for r in rows if r["status"] == "ok"]
    speed = {(r["model"], r["batch"], r["precision"], r["layout"], r["mode"]): r["images_per_s"] for r in ok}
    summary: dict[str, Any] = {"best": {}, "speedups": []}
    for model in dict.fromkeys(r["model"] for r in ok):
        best = max(
            (r for r in ok if r["model"] == model and r["mode"] != "plain"), key=lambda r: r["images_per_s"]
        )
        summary["best"][model] = {
            k: best[k] for k in ("batch", "precision", "layout", "mode", "images_per_s", "mfu")
        }
    switches = (
        (
            "bf16 / fp32 (channels_last)",
            ("bf16", "channels_last", "eager"),
            ("fp32", "channels_last", "eager"),
        ),
        ("bf16 / fp32 (contiguous)", ("bf16", "contiguous", "eager"), ("fp32", "contiguous", "eager")),
        (
            "channels_last / contiguous (bf16)",
            ("bf16", "channels_last", "eager"),
            ("bf16", "contiguous", "eager"),
        ),
        (
            "bf16 channels_last / fp32 contiguous",
            ("bf16", "channels_last", "eager"),
            ("fp32", "contiguous", "eager"),
        ),
        (
            "compile / eager (bf16 channels_last)",
            ("bf16", "channels_last", "compile"),
            ("bf16", "channels_last", "eager"),
        ),
        (
            "raylung kernels / plain autograd (fp32)",
            ("fp32", "channels_last", "eager"),
            ("fp32", "channels_last", "plain"),
        ),
    )
    for model, batch in dict.fromkeys((r["model"], r["batch"]) for r in ok):
        for name, new, old in switches:
            a, b = speed.get((model, batch, *new)), speed.get((model, batch, *old))
            if a and b:
                summary["speedups"].append({"model": model, "batch": batch, "switch": name, "ratio": a / b})
    models = list(summary["best"])
    if len(models) == 2:  # e.g. resnet_ours50 against resnet50, config by config
        ratios = [
            speed[(models[0], *k[1:])] / speed[(models[1], *k[1:])]
            for k in speed
            if k[0] == models[0] and (models[1], *k[1:]) in speed
        ]
        if ratios:
            summary[f"{models[0]} / {models[1]} images/s (median over configs)"] = statistics.median(ratios)
    return summary


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
