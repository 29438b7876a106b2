"""Numerics per device: fp32 channels_last on the CPU, bf16 autocast and channels_last on a GPU.

The CUDA cases run where a GPU is present (they skip in CI); the CPU cases pin the defaults
that keep CPU training in fp32.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from raylung.artifacts.precision import resolve_precision
from raylung.config import TrainConfig
from raylung.models import create_model

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_cpu_defaults_are_fp32_channels_last_and_fp16_is_refused() -> None:
    precision = resolve_precision(TrainConfig(), torch.device("cpu"))
    assert precision.autocast_dtype is None and precision.channels_last
    assert precision.describe() == "cpu fp32 channels_last" and not precision.needs_scaler
    contiguous = resolve_precision(TrainConfig(channels_last=False), torch.device("cpu"))
    assert contiguous.describe() == "cpu fp32 contiguous"
    assert not resolve_precision(TrainConfig(), torch.device("meta")).channels_last
    assert resolve_precision(TrainConfig(amp="bf16"), torch.device("cpu")).autocast_dtype is torch.bfloat16
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        resolve_precision(TrainConfig(amp="fp16"), torch.device("cpu"))


@CUDA
def test_cuda_defaults_are_bf16_channels_last() -> None:
    precision = resolve_precision(TrainConfig(), torch.device("cuda"))
    expected = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    assert precision.autocast_dtype is expected and precision.channels_last


@CUDA
@pytest.mark.parametrize("amp", ["auto", "fp16", "off"])
def test_a_cuda_training_step_under_each_precision_lowers_the_loss(amp: str) -> None:
    torch.manual_seed(0)
    device = torch.device("cuda")
    precision = resolve_precision(TrainConfig(amp=amp), device)
    memory_format = torch.channels_last if precision.channels_last else torch.contiguous_format
    model = create_model("resnet_ours_tiny").to(device, memory_format=memory_format).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    scaler = precision.make_scaler()
    images = torch.randn(8, 3, 48, 64).pin_memory().to(device, non_blocking=True)
    images = images.contiguous(memory_format=memory_format)
    labels = torch.tensor([0.0, 1.0] * 4, device=device).view(-1, 1)
    losses = []
    for _ in range(8):
        with precision.autocast():
            loss = nn.functional.binary_cross_entropy_with_logits(model(images).float(), labels)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]


def test_a_cpu_training_step_in_channels_last_computes_what_a_contiguous_one_does() -> None:
    """The CPU default changed from contiguous to channels_last for speed; the step's numbers
    (loss and every gradient, through the eager-training kernels) must not change beyond
    float32 summation order."""
    images = torch.randn(4, 3, 48, 64)
    labels = torch.tensor([0.0, 1.0, 1.0, 0.0]).view(-1, 1)
    results = []
    for memory_format in (torch.contiguous_format, torch.channels_last):
        torch.manual_seed(0)
        model = create_model("resnet_ours_tiny").to(memory_format=memory_format).train()
        logits = model(images.contiguous(memory_format=memory_format))
        loss = nn.functional.binary_cross_entropy_with_logits(logits, labels)
        loss.backward()
        results.append((loss.detach(), {n: p.grad.contiguous() for n, p in model.named_parameters()}))
    (loss_a, grads_a), (loss_b, grads_b) = results
    torch.testing.assert_close(loss_b, loss_a, rtol=1e-5, atol=1e-6)
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        torch.testing.assert_close(grads_b[name], grads_a[name], rtol=1e-3, atol=1e-5, msg=name)
