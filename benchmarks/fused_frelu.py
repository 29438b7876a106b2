"""An experiment: how much of ResNet-ours(50)'s CPU step a fused FReLU kernel wins back.

FReLU, ``max(x, BN(dw3x3(x)))``, is 51 of ResNet-ours(50)'s 83 depthwise convolutions and half
its batch norms. In eager PyTorch it is a oneDNN convolution, a batch norm and raylung's
maximum, forward and backward, each a pass over a full-size tensor. ``fused_frelu.c`` (built
here with gcc, OpenMP from PyTorch's own runtime) does it in two passes forward (convolution
with the batch statistics, then normalise-and-maximum) and three backward (the batch norm's
sums, the split of the gradient between x and the funnel, the convolution's input and weight
gradients), for channels_last float32 tensors with channels a multiple of 16. It is not part
of raylung: this script measures what such a kernel is worth before anyone ships one.

Three tables:

- agreement: the fused FReLU's output and gradients against the eager module run in float64
  (relative error of each tensor's norm; the batch norm's running statistics too);
- per shape: fused against eager forward + backward at each FReLU input shape of ResNet-ours(50)
  at the input, and the sum over the model's FReLUs (shape time x count);
- the train step: resnet50, resnet_ours50, and resnet_ours50 with its FReLU modules swapped for
  the fused one, interleaved and rotated as in ``model_step.py``.

    python benchmarks/fused_frelu.py                  # batch 8, 3x240x320, 5 repeats
    python benchmarks/fused_frelu.py --batch-size 2 --height 48 --width 64 --repeats 1
"""

from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.autograd.function import once_differentiable

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import median_seconds, print_table, save_json  # noqa: E402
from model_step import Entry, make_step  # noqa: E402

from raylung.models import create_model  # noqa: E402
from raylung.models.layers import FReLU  # noqa: E402
from raylung.train.host_memory import keep_freed_memory  # noqa: E402

SOURCE = Path(__file__).resolve().with_name("fused_frelu.c")
LANES = 16  # the kernel's vector width in channels
FUSED = "resnet_ours50 (fused FReLU)"


def build_kernel(workdir: Path) -> ctypes.CDLL:
    """Compile ``fused_frelu.c`` for this CPU and load it (libgomp resolves to PyTorch's)."""
    compiler = shutil.which(os.environ.get("CC", "gcc")) or shutil.which("cc")
    if compiler is None:
        raise SystemExit("fused_frelu.py needs a C compiler (gcc or $CC) to build its kernel")
    library = workdir / "fused_frelu.so"
    flags = ["-O3", "-march=native", "-fopenmp", "-fPIC", "-shared"]
    subprocess.run([compiler, *flags, str(SOURCE), "-o", str(library)], check=True)
    return ctypes.CDLL(str(library))


def _ptr(t: torch.Tensor) -> ctypes.c_void_p:
    return ctypes.c_void_p(t.data_ptr())


class _FusedFReLUFunction(torch.autograd.Function):
    """FReLU in training mode (batch statistics), NHWC float32, through the C kernel."""

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        weight: torch.Tensor,
        gamma: torch.Tensor,
        beta: torch.Tensor,
        bn: nn.BatchNorm2d,
        lib: ctypes.CDLL,
    ) -> torch.Tensor:
        n, c, h, w = x.shape
        pixels = n * h * w
        dims = [ctypes.c_int64(v) for v in (n, h, w, c)]
        w9 = weight.detach().reshape(c, 9).t().contiguous()
        sums = torch.empty(2 * c, dtype=torch.float64)
        d = torch.empty_like(x)
        lib.frelu_forward_conv(_ptr(x), _ptr(w9), _ptr(d), _ptr(sums), *dims)
        mean = sums[:c] / pixels
        var = (sums[c:] / pixels - mean * mean).clamp_min(0)
        invstd = (var + bn.eps).rsqrt()
        scale64 = gamma.detach().double() * invstd
        scale, shift = scale64.float(), (beta.detach().double() - mean * scale64).float()
        with torch.no_grad():  # nn.BatchNorm2d's update, unbiased variance
            bn.num_batches_tracked.add_(1)
            bn.running_mean.lerp_(mean.float(), bn.momentum)
            bn.running_var.lerp_((var * pixels / max(pixels - 1, 1)).float(), bn.momentum)
        out = torch.empty_like(x)
        lib.frelu_forward_max(
            _ptr(x), _ptr(d), _ptr(scale), _ptr(shift), _ptr(out), ctypes.c_int64(pixels), ctypes.c_int64(c)
        )
        ctx.save_for_backward(x, d, w9)
        ctx.stats = (mean, invstd, scale64, scale, shift)
        ctx.lib = lib
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, d, w9 = ctx.saved_tensors
        mean, invstd, k1, scale, shift = ctx.stats
        lib = ctx.lib
        grad = grad.contiguous(memory_format=torch.channels_last)
        n, c, h, w = x.shape
        pixels = n * h * w
        sums = torch.empty(2 * c, dtype=torch.float64)
        lib.frelu_backward_sums(
            _ptr(x),
            _ptr(d),
            _ptr(scale),
            _ptr(shift),
            _ptr(grad),
            _ptr(sums),
            ctypes.c_int64(pixels),
            ctypes.c_int64(c),
        )
        grad_beta = sums[:c]
        grad_gamma = invstd * (sums[c:] - mean * grad_beta)  # sum of gy * xhat
        a = -k1 * invstd * grad_gamma / pixels
        b = -k1 * grad_beta / pixels - a * mean
        k1f, af, bf = k1.float(), a.float(), b.float()  # kept alive across the calls
        grad_d, grad_x = torch.empty_like(x), torch.empty_like(x)
        lib.frelu_backward_split(
            _ptr(x),
            _ptr(d),
            _ptr(scale),
            _ptr(shift),
            _ptr(grad),
            _ptr(k1f),
            _ptr(af),
            _ptr(bf),
            _ptr(grad_d),
            _ptr(grad_x),
            ctypes.c_int64(pixels),
            ctypes.c_int64(c),
        )
        grad_w9 = torch.empty(9 * c, dtype=torch.float64)
        lib.frelu_backward_conv(
            _ptr(x),
            _ptr(w9),
            _ptr(grad_d),
            _ptr(grad_x),
            _ptr(grad_w9),
            *[ctypes.c_int64(v) for v in (n, h, w, c)],
        )
        grad_weight = grad_w9.view(9, c).t().reshape(c, 1, 3, 3).float()
        return grad_x, grad_weight, grad_gamma.float(), grad_beta.float(), None, None


class FusedFReLU(nn.Module):
    """Holds an FReLU's own convolution and batch norm; runs the kernel where it applies."""

    def __init__(self, frelu: FReLU, lib: ctypes.CDLL) -> None:
        super().__init__()
        self.frelu, self.lib = frelu, lib

    def applies(self, x: torch.Tensor) -> bool:
        conv, bn = self.frelu.conv, self.frelu.bn
        return (
            torch.is_grad_enabled()
            and bn.training
            and bn.momentum is not None
            and x.dtype == torch.float32
            and x.device.type == "cpu"
            and x.shape[1] % LANES == 0
            and x.is_contiguous(memory_format=torch.channels_last)
            and conv.kernel_size == (3, 3)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.applies(x):
            return self.frelu(x)
        conv, bn = self.frelu.conv, self.frelu.bn
        return _FusedFReLUFunction.apply(x, conv.weight, bn.weight, bn.bias, bn, self.lib)


def swap_frelus(model: nn.Module, lib: ctypes.CDLL) -> int:
    """Replace every FReLU of `model` in place by a :class:`FusedFReLU`; returns how many."""
    swapped = 0
    for name, module in list(model.named_modules()):
        if isinstance(module, FReLU):
            parent_name, _, child = name.rpartition(".")
            model.get_submodule(parent_name).register_module(child, FusedFReLU(module, lib))
            swapped += 1
    return swapped


def frelu_shapes(height: int, width: int) -> Counter[tuple[int, int, int]]:
    """(channels, height, width) of every FReLU input in ResNet-ours(50) at this input size."""
    model = create_model("resnet_ours50").eval()
    seen: Counter[tuple[int, int, int]] = Counter()
    hooks = [
        m.register_forward_pre_hook(lambda _m, args: seen.update([tuple(args[0].shape[1:])]))
        for m in model.modules()
        if isinstance(m, FReLU)
    ]
    with torch.no_grad():
        model(torch.zeros(1, 3, height, width))
    for hook in hooks:
        hook.remove()
    return seen


def _pair(shape: tuple[int, int, int], batch: int) -> tuple[FReLU, torch.Tensor, torch.Tensor]:
    c, h, w = shape
    frelu = FReLU(c).to(memory_format=torch.channels_last)
    with torch.no_grad():  # a trained-looking norm: the funnel wins in some places, not all
        frelu.bn.weight.uniform_(0.5, 1.5)
        frelu.bn.bias.uniform_(-0.2, 0.2)
    x = torch.randn(batch, c, h, w).contiguous(memory_format=torch.channels_last)
    return frelu, x, torch.randn_like(x)


def _relative(a: torch.Tensor, ref: torch.Tensor) -> float:
    return float((a.detach().double() - ref.detach()).norm() / ref.detach().norm().clamp_min(1e-30))


def agreement(lib: ctypes.CDLL, shape: tuple[int, int, int], batch: int) -> dict[str, float]:
    """Relative error (norm) of the fused FReLU's output, gradients and running statistics
    against the eager module in float64 on the same inputs."""
    frelu, x, grad = _pair(shape, batch)
    reference = FReLU(shape[0]).double().to(memory_format=torch.channels_last)
    reference.load_state_dict(frelu.state_dict())
    fused = FusedFReLU(frelu, lib)
    x32, x64 = x.clone().requires_grad_(), x.double().requires_grad_()
    out32, out64 = fused(x32), reference(x64)
    params = [frelu.conv.weight, frelu.bn.weight, frelu.bn.bias]
    ref_params = [reference.conv.weight, reference.bn.weight, reference.bn.bias]
    got = torch.autograd.grad(out32, [x32, *params], grad)
    want = torch.autograd.grad(out64, [x64, *ref_params], grad.double())
    names = ["output", "grad x", "grad conv weight", "grad bn weight", "grad bn bias"]
    errors = {names[0]: _relative(out32, out64)}
    errors.update({name: _relative(g, r) for name, g, r in zip(names[1:], got, want, strict=True)})
    errors["running mean"] = _relative(frelu.bn.running_mean, reference.bn.running_mean)
    errors["running var"] = _relative(frelu.bn.running_var, reference.bn.running_var)
    return errors


def _median_ms(fn: Callable[[], Any], repeats: int) -> float:
    return median_seconds(fn, repeats, warmup=1)[0] * 1e3


def time_shape(
    lib: ctypes.CDLL, shape: tuple[int, int, int], batch: int, repeats: int
) -> tuple[float, float]:
    """Median ms of forward + backward, eager FReLU (raylung's kernels) then fused."""
    frelu, x, grad = _pair(shape, batch)
    x.requires_grad_()
    fused = FusedFReLU(frelu, lib)
    params = list(frelu.parameters())
    eager_ms = _median_ms(lambda: torch.autograd.grad(frelu(x), [x, *params], grad), repeats)
    fused_ms = _median_ms(lambda: torch.autograd.grad(fused(x), [x, *params], grad), repeats)
    return eager_ms, fused_ms


def time_steps(lib: ctypes.CDLL, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """resnet50, resnet_ours50 and resnet_ours50 with fused FReLUs, one step each per round."""
    size = (args.batch_size, args.height, args.width, True)
    steps = {name: make_step(Entry(name, name), *size)[0] for name in ("resnet50", "resnet_ours50")}
    fused_step, _ = make_step(Entry(FUSED, "resnet_ours50"), *size, model_hook=lambda m: swap_frelus(m, lib))
    steps[FUSED] = fused_step
    for step in steps.values():
        for _ in range(args.warmup):
            step()
    wall: dict[str, list[float]] = {label: [] for label in steps}
    cpu: dict[str, list[float]] = {label: [] for label in steps}
    labels = list(steps)
    for repeat in range(args.repeats):
        shift = repeat % len(labels)
        for label in labels[shift:] + labels[:shift]:
            cpu_start, start = time.process_time(), time.perf_counter()
            steps[label]()
            wall[label].append(time.perf_counter() - start)
            cpu[label].append(time.process_time() - cpu_start)
    base = statistics.median(wall["resnet50"])
    return {
        label: {
            "median_s": statistics.median(wall[label]),
            "ratio_to_resnet50": statistics.median(wall[label]) / base,
            "cpu_median_s": statistics.median(cpu[label]),
            "times_s": wall[label],
        }
        for label in labels
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per model (and per shape x 4)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default benchmarks/results/)")
    args = parser.parse_args(argv)

    kept = keep_freed_memory()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="raylung-fused-frelu-") as workdir:
        lib = build_kernel(Path(workdir))
        shapes = frelu_shapes(args.height, args.width)
        errors = {f"{c}x{h}x{w}": agreement(lib, (c, h, w), args.batch_size) for c, h, w in shapes}
        per_shape = {}
        for (c, h, w), count in shapes.items():
            eager_ms, fused_ms = time_shape(lib, (c, h, w), args.batch_size, args.repeats * 4)
            per_shape[f"{c}x{h}x{w}"] = {"count": count, "eager_ms": eager_ms, "fused_ms": fused_ms}
        steps = time_steps(lib, args)

    worst = {name: max(e[name] for e in errors.values()) for name in next(iter(errors.values()))}
    print_table(
        "fused FReLU vs eager module in float64: worst relative error (norm) over shapes",
        ["tensor", "relative error"],
        [[k, v] for k, v in worst.items()],
    )
    rows = [
        [shape, r["count"], r["eager_ms"], r["fused_ms"], r["eager_ms"] / r["fused_ms"]]
        for shape, r in per_shape.items()
    ]
    eager_total = sum(r["count"] * r["eager_ms"] for r in per_shape.values())
    fused_total = sum(r["count"] * r["fused_ms"] for r in per_shape.values())
    rows.append(
        ["all FReLUs of a step", sum(shapes.values()), eager_total, fused_total, eager_total / fused_total]
    )
    print_table(
        f"FReLU forward + backward, batch {args.batch_size}, channels_last, "
        f"{torch.get_num_threads()} threads",
        ["input CxHxW", "count", "eager ms", "fused ms", "x faster"],
        rows,
    )
    print_table(
        f"train step, batch {args.batch_size}, 3x{args.height}x{args.width}, {args.repeats} repeats",
        ["model", "median s", "x resnet50", "CPU s"],
        [[label, r["median_s"], r["ratio_to_resnet50"], r["cpu_median_s"]] for label, r in steps.items()],
    )
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    config["keep_freed_memory"] = kept
    payload = {
        "config": config,
        "agreement": errors,
        "worst_error": worst,
        "per_shape": per_shape,
        "frelu_totals_ms": {"eager": eager_total, "fused": fused_total},
        "steps": steps,
    }
    save_json("fused_frelu", payload, args.out)


if __name__ == "__main__":
    main()
