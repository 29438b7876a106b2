"""The fused-FReLU experiment (``benchmarks/fused_frelu.py``): its C kernel computes FReLU, and
the benchmark keeps running at tiny settings.

The kernel is built with the machine's C compiler, as the benchmark does; without one these
tests skip.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

from raylung.models import create_model
from raylung.models.layers import FReLU
from raylung.train.host_memory import KEEP_FREED_MEMORY_ENV

BENCH_DIR = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH_DIR))

import fused_frelu  # noqa: E402

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc to build the kernel")

TOLERANCE = 1e-5  # float32 kernel against float64 eager; measured about 1e-7


@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    return fused_frelu.build_kernel(tmp_path_factory.mktemp("kernel"))


@pytest.fixture(params=[1, 2], ids=["1 thread", "2 threads"])
def threads(request):
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)


@pytest.mark.parametrize("shape", [(16, 5, 7), (48, 1, 9), (32, 6, 2)], ids=str)
def test_fused_frelu_matches_the_module_in_float64(kernel, threads, shape):
    """Odd sizes, one-pixel rows and columns: every border of the 3x3 window; with two threads,
    each thread's partial sums count."""
    errors = fused_frelu.agreement(kernel, shape, batch=3)
    assert set(errors) >= {"output", "grad x", "grad conv weight", "grad bn weight", "running var"}
    assert max(errors.values()) < TOLERANCE, errors


def test_fused_frelu_leaves_what_it_cannot_run_to_the_module(kernel, one_torch_thread):
    frelu = FReLU(8).to(memory_format=torch.channels_last)  # 8 channels: not a multiple of 16
    fused = fused_frelu.FusedFReLU(frelu, kernel)
    x = torch.randn(2, 8, 5, 5).contiguous(memory_format=torch.channels_last)
    assert not fused.applies(x)
    assert torch.equal(fused(x), frelu(x))
    assert not fused.applies(torch.randn(2, 16, 5, 5))  # NCHW
    with torch.no_grad():
        assert not fused.applies(torch.randn(2, 16, 5, 5).contiguous(memory_format=torch.channels_last))


def test_swap_replaces_every_frelu_and_keeps_the_parameters():
    model = create_model("resnet_ours50")
    before = {name: p for name, p in model.named_parameters()}
    swapped = fused_frelu.swap_frelus(model, lib=None)
    assert swapped == 51 == sum(isinstance(m, fused_frelu.FusedFReLU) for m in model.modules())
    parents = [
        parent for parent in model.modules() for child in parent.children() if isinstance(child, FReLU)
    ]
    assert all(isinstance(parent, fused_frelu.FusedFReLU) for parent in parents)
    assert sorted(p.data_ptr() for p in model.parameters()) == sorted(p.data_ptr() for p in before.values())


def test_benchmark_prints_its_tables_at_tiny_settings(tmp_path, one_torch_thread, monkeypatch):
    monkeypatch.setenv(KEEP_FREED_MEMORY_ENV, "0")  # leave the test process's malloc as it is
    out = tmp_path / "fused_frelu.json"
    tiny = ["--batch-size", "2", "--height", "32", "--width", "48", "--repeats", "1", "--warmup", "0"]
    fused_frelu.main([*tiny, "--threads", "1", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert set(saved["steps"]) == {"resnet50", "resnet_ours50", fused_frelu.FUSED}
    assert sum(r["count"] for r in saved["per_shape"].values()) == 51
    assert all(r["eager_ms"] > 0 and r["fused_ms"] > 0 for r in saved["per_shape"].values())
    assert max(saved["worst_error"].values()) < TOLERANCE
