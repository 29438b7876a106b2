"""Train-step time of ResNet-ours(50) against the timm baselines of Table 3, side by side.

One step is forward + backward + ``Adam.step`` on a batch of random images at the paper's input
(batch 8, 3x240x320, one logit, ``BCEWithLogitsLoss``), on the CPU with all cores. Models are
interleaved within each repeat (the machine is shared and noisy) and the order rotates between
repeats. The table gives the median and fastest step, the median's ratio to resnet50, images
per second, and the median CPU time of the process per step (all threads; steadier than wall
time when other processes share the cores) with its ratio, the median seconds of the
``Adam.step`` alone, and the median minor page faults per step (the process's, all threads).
The process keeps freed memory as raylung's training workers do (:mod:`raylung.train.host_memory`;
``RAYLUNG_KEEP_FREED_MEMORY=0`` measures without; ``benchmarks/host_memory.py`` compares both, a
fresh process each, since warm-up in one process hides what a fresh one pays).
Adam is raylung's (``raylung.train.parts.build_optimizer``: fused kernels).

Before/after checks, each an extra row timed in the same rotation: ``--reference`` adds
ResNet-ours(50) with raylung's eager-training kernels switched off (plain autograd, the same
mathematics); ``--adam-reference`` adds every model with PyTorch's per-tensor Adam
(``foreach=False``, the CPU default before raylung chose fused); ``--compile`` adds every model
under ``torch.compile`` (its first, compiling step is reported apart, as ``compile s``);
``--contiguous-reference`` adds every model with contiguous (NCHW) tensors, the CPU default
before raylung chose channels_last there too.

    python benchmarks/model_step.py                      # channels_last, 5 repeats
    python benchmarks/model_step.py --no-channels-last --repeats 3 --models resnet50 resnet_ours50
    python benchmarks/model_step.py --models resnet50 resnet_ours50 --adam-reference
    python benchmarks/model_step.py --models resnet50 resnet_ours50 --contiguous-reference
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import median_seconds, print_table, save_json  # noqa: E402

from raylung.models import count_parameters, create_model  # noqa: E402
from raylung.models.kernels import eager_kernels  # noqa: E402
from raylung.train.host_memory import keep_freed_memory  # noqa: E402
from raylung.train.parts import build_optimizer  # noqa: E402

DEFAULT_MODELS = ("resnet_ours50", "resnet50", "resnet50c", "resnet50d", "resnext50_32x4d")
REFERENCE = "resnet_ours50 (plain autograd)"
ADAM_REFERENCE = " (per-tensor Adam)"
COMPILED = " (compiled)"
CONTIGUOUS = " (contiguous)"


@dataclass(frozen=True)
class Entry:
    """One row: a model and how its step runs."""

    label: str
    name: str
    kernels: bool = True  # raylung's eager-training kernels
    adam_reference: bool = False  # PyTorch's per-tensor Adam instead of raylung's fused one
    compiled: bool = False
    contiguous: bool = False  # NCHW tensors whatever --channels-last says


def plan_entries(
    models: list[str], reference: bool, adam_reference: bool, compiled: bool, contiguous: bool = False
) -> list[Entry]:
    entries = [Entry(name, name) for name in models]
    if reference:
        entries.append(Entry(REFERENCE, "resnet_ours50", kernels=False))
    if adam_reference:
        entries += [Entry(name + ADAM_REFERENCE, name, adam_reference=True) for name in models]
    if compiled:
        entries += [Entry(name + COMPILED, name, compiled=True) for name in models]
    if contiguous:
        entries += [Entry(name + CONTIGUOUS, name, contiguous=True) for name in models]
    return entries


def make_step(
    entry: Entry,
    batch_size: int,
    height: int,
    width: int,
    channels_last: bool,
    model_hook: Callable[[nn.Module], object] | None = None,
    autocast: torch.dtype | None = None,
) -> tuple[Callable[[], float], int]:
    """A closure running one training step of `entry` and returning the seconds its
    ``optimizer.step`` took, and the model's parameter count. `model_hook` may change the
    model in place before the optimizer takes its parameters (an experiment's modules).
    With `autocast`, forward and loss run under CPU autocast to that dtype and the backward
    after it, as raylung's training loop runs ``train.amp``."""
    model = create_model(entry.name).train()
    if model_hook is not None:
        model_hook(model)
    # The paper's optimizer (Table 2), as training builds it.
    optimizer = build_optimizer(model, lr=1e-4, reference=entry.adam_reference)
    loss_fn = nn.BCEWithLogitsLoss()
    images = torch.randn(batch_size, 3, height, width)
    labels = torch.randint(0, 2, (batch_size, 1)).float()
    if channels_last and not entry.contiguous:
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    forward = torch.compile(model) if entry.compiled else model

    def step() -> float:
        with eager_kernels(entry.kernels):
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=autocast or torch.bfloat16, enabled=autocast is not None):
                loss = loss_fn(forward(images), labels)
            loss.backward()
            start = time.perf_counter()
            optimizer.step()
            return time.perf_counter() - start

    return step, count_parameters(model)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS))
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per model (after warm-up)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per model")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--reference", action="store_true", help=f"also time {REFERENCE!r}")
    parser.add_argument(
        "--adam-reference", action="store_true", help="also time every model with PyTorch's per-tensor Adam"
    )
    parser.add_argument("--compile", action="store_true", help="also time every model under torch.compile")
    parser.add_argument(
        "--contiguous-reference", action="store_true", help="also time every model with NCHW tensors"
    )
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads (default: all)")
    parser.add_argument(
        "--amp", choices=("none", "bf16"), default="none", help="bf16: CPU autocast, as train.amp: bf16"
    )
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default benchmarks/results/)")
    args = parser.parse_args(argv)

    kept = keep_freed_memory()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    entries = plan_entries(
        args.models, args.reference, args.adam_reference, args.compile, args.contiguous_reference
    )

    steps: dict[str, Callable[[], float]] = {}
    params: dict[str, int] = {}
    compile_s: dict[str, float] = {}
    for entry in entries:
        label = entry.label
        steps[label], params[label] = make_step(
            entry,
            args.batch_size,
            args.height,
            args.width,
            args.channels_last,
            autocast=torch.bfloat16 if args.amp == "bf16" else None,
        )
        if entry.compiled:  # the first step compiles; the warm-up below then runs compiled code
            _, (compile_s[label],) = median_seconds(steps[label], repeats=1, warmup=0)
        for _ in range(args.warmup):  # oneDNN primitive creation, allocator warm-up
            steps[label]()

    times: dict[str, list[float]] = {label: [] for label in steps}
    cpu_times: dict[str, list[float]] = {label: [] for label in steps}
    adam_times: dict[str, list[float]] = {label: [] for label in steps}
    faults: dict[str, list[int]] = {label: [] for label in steps}
    labels = list(steps)
    for repeat in range(args.repeats):
        shift = repeat % len(labels)
        for label in labels[shift:] + labels[:shift]:  # rotate the order: no fixed neighbour
            faults_start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            cpu_start, start = time.process_time(), time.perf_counter()
            adam_times[label].append(steps[label]())
            times[label].append(time.perf_counter() - start)
            cpu_times[label].append(time.process_time() - cpu_start)
            faults[label].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults_start)

    base = statistics.median(times["resnet50"]) if "resnet50" in times else None
    cpu_base = statistics.median(cpu_times["resnet50"]) if "resnet50" in cpu_times else None
    rows = []
    results = {}
    for label in labels:
        median = statistics.median(times[label])
        cpu = statistics.median(cpu_times[label])
        ratio = median / base if base else float("nan")
        cpu_ratio = cpu / cpu_base if cpu_base else float("nan")
        rows.append(
            [
                label,
                params[label] / 1e6,
                median,
                min(times[label]),
                ratio,
                args.batch_size / median,
                cpu,
                cpu_ratio,
                statistics.median(adam_times[label]),
                compile_s.get(label, float("nan")),
                int(statistics.median(faults[label])),
            ]
        )
        results[label] = {
            "params": params[label],
            "median_s": median,
            "min_s": min(times[label]),
            "times_s": times[label],
            "ratio_to_resnet50": ratio,
            "cpu_median_s": cpu,
            "cpu_ratio_to_resnet50": cpu_ratio,
            "adam_median_s": statistics.median(adam_times[label]),
            "adam_times_s": adam_times[label],
            "compile_s": compile_s.get(label),
            "minor_faults_median": statistics.median(faults[label]),
        }
    layout = "channels_last" if args.channels_last else "NCHW"
    title = (
        f"train step (fwd+bwd+Adam), batch {args.batch_size}, 3x{args.height}x{args.width}, "
        f"{layout}, {torch.get_num_threads()} threads, {args.repeats} repeats"
        + (", bf16 autocast" if args.amp == "bf16" else "")
    )
    columns = [
        "model",
        "params (M)",
        "median s",
        "min s",
        "x resnet50",
        "images/s",
        "CPU s",
        "CPU x resnet50",
        "Adam s",
        "compile s",
        "page faults",
    ]
    print_table(title, columns, rows)
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    config["keep_freed_memory"] = kept
    config["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # all entries
    save_json("model_step", {"config": config, "results": results}, args.out)


if __name__ == "__main__":
    main()
