"""The GPU benchmark's cases and arithmetic: what runs in which order, one timed case, MFU.

A case is one model x batch x precision x memory layout x mode (eager, ``torch.compile``, or
eager with raylung's eager-training kernels off). ``run_case`` times its training step on
random images -- forward, backward and ``Adam.step``, no data loading: the model's ceiling.
``gpu.py`` runs the plan and prints the tables.
"""

from __future__ import annotations

import contextlib
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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

    The bf16 and fp32 channels_last eager cases of each ResNet-ours model are repeated with
    raylung's eager-training kernels off ("plain"), bf16 first: the kernels run under autocast
    since 2026-12-07 and that has not been measured on a GPU yet.
    """
    eager_order = (
        ("bf16", "channels_last"),
        ("fp32", "contiguous"),
        ("bf16", "contiguous"),
        ("fp32", "channels_last"),
    )
    plan = [Case(m, b, p, layout, "eager") for p, layout in eager_order for b in batches for m in models]
    ours = [m for m in models if m.startswith("resnet_ours")]
    plan += [
        Case(m, b, p, "channels_last", "plain")
        for p in ("bf16", "fp32")
        for b in compile_batches
        for m in ours
    ]
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
    from raylung.train.parts import build_optimizer

    cuda = device.type == "cuda"
    sync: Callable[[], None] = torch.cuda.synchronize if cuda else (lambda: None)
    torch.manual_seed(0)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    memory_format = torch.channels_last if case.layout == "channels_last" else torch.contiguous_format
    model = create_model(case.model).to(device).train().to(memory_format=memory_format)
    optimizer = build_optimizer(model, lr=1e-4)
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
            "raylung kernels / plain autograd (bf16)",
            ("bf16", "channels_last", "eager"),
            ("bf16", "channels_last", "plain"),
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
