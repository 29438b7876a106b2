"""raylung's eager-training kernels under autocast (``train.amp``): they run, compute the same
forward as the modules, and gradients as accurate as the modules' in that precision. On the
CPU with bf16 here; the same tests run on CUDA where there is one."""

from __future__ import annotations

import pytest
import torch

from raylung.models import create_model
from raylung.models.kernels import channel_spatial_attention, eager_kernels
from raylung.models.layers import EcaModule, FReLU, SpatialAttention

DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")),
]
BF16_TOLERANCE = 3e-2  # norm-relative error against float64; the modules measure 0.1-1 %


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _relative(a: torch.Tensor, ref: torch.Tensor) -> float:
    return float((a.detach().double().cpu() - ref.detach().cpu()).norm() / ref.detach().cpu().norm())


def _attention(channels: int, device: str) -> tuple[EcaModule, SpatialAttention]:
    channel, spatial = EcaModule(channels, 3).to(device), SpatialAttention(channels).to(device)
    with torch.no_grad():
        channel.conv.weight.normal_()
        spatial.conv.weight.normal_(0.0, 0.3)
    return channel, spatial


def _attention_grads(x, channel, spatial, grad, kernels: bool, backward_in_autocast: bool = False):
    leaf = x.detach().requires_grad_()
    params = [leaf, channel.conv.weight, spatial.conv.weight, spatial.conv.bias]
    with eager_kernels(kernels), torch.autocast(x.device.type, dtype=torch.bfloat16):
        out = channel_spatial_attention(leaf.to(torch.bfloat16), channel, spatial)  # as a conv output
        if backward_in_autocast:
            return out, torch.autograd.grad(out, params, grad.to(out.dtype))
    return out, torch.autograd.grad(out, params, grad.to(out.dtype))


@pytest.mark.parametrize("device", DEVICES)
def test_fused_attention_runs_under_autocast_with_the_modules_forward(device):
    channel, spatial = _attention(64, device)
    x = torch.randn(2, 64, 9, 11, device=device).contiguous(memory_format=torch.channels_last)
    grad = torch.randn_like(x)
    fused, fused_grads = _attention_grads(x, channel, spatial, grad, kernels=True)
    plain, plain_grads = _attention_grads(x, channel, spatial, grad, kernels=False)
    assert "ChannelSpatialAttention" in type(fused.grad_fn).__name__
    assert "ChannelSpatialAttention" not in type(plain.grad_fn).__name__
    assert fused.dtype == torch.bfloat16 and torch.equal(fused, plain)  # the same forward arithmetic

    channel64, spatial64 = EcaModule(64, 3).double(), SpatialAttention(64).double()
    channel64.load_state_dict(channel.state_dict())
    spatial64.load_state_dict(spatial.state_dict())
    x64 = x.detach().cpu().to(torch.bfloat16).double().requires_grad_()  # the same rounded input
    params64 = [x64, channel64.conv.weight, spatial64.conv.weight, spatial64.conv.bias]
    want = torch.autograd.grad(spatial64(channel64(x64)), params64, grad.cpu().to(torch.bfloat16).double())
    for got, ref, param in zip(fused_grads, want, [x, *params64[1:]], strict=True):
        assert got.dtype == (torch.float32 if param is not x else x.dtype)  # each in its input's dtype
        assert _relative(got, ref) < BF16_TOLERANCE
    for got, ref in zip(plain_grads, want, strict=True):  # the yardstick: the modules themselves
        assert _relative(got, ref) < BF16_TOLERANCE


def test_fused_attention_backward_is_the_same_inside_an_autocast_region():
    channel, spatial = _attention(32, "cpu")
    x = torch.randn(2, 32, 6, 7).contiguous(memory_format=torch.channels_last)
    grad = torch.randn_like(x)
    _, outside = _attention_grads(x, channel, spatial, grad, kernels=True)
    _, inside = _attention_grads(x, channel, spatial, grad, kernels=True, backward_in_autocast=True)
    assert all(torch.equal(a, b) for a, b in zip(outside, inside, strict=True))


def test_fused_attention_steps_aside_for_an_input_not_in_the_autocast_dtype():
    channel, spatial = _attention(16, "cpu")
    x = torch.randn(2, 16, 5, 5, requires_grad=True)  # float32 under bf16 autocast: mixed dtypes
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = channel_spatial_attention(x, channel, spatial)
    assert "ChannelSpatialAttention" not in type(out.grad_fn).__name__


@pytest.mark.parametrize("device", DEVICES)
def test_frelu_kernel_runs_under_autocast_and_keeps_its_tie_rule(device):
    """The modules' arithmetic, with the gradient at exact ties going to x (the kernel's rule in
    every precision; ``torch.maximum`` splits it). bf16 has ties: some 0.3-1 % of FReLU's
    elements, so the rule is checked against ``torch.where(x >= funnel, ...)``, which follows it."""
    act = FReLU(16).to(device).to(memory_format=torch.channels_last)
    x = torch.randn(2, 16, 7, 9, device=device).contiguous(memory_format=torch.channels_last)
    grad = torch.randn_like(x).to(torch.bfloat16)
    results = []
    for kernels in (True, False):
        leaf = x.detach().to(torch.bfloat16).requires_grad_()  # bf16, as after a convolution
        with eager_kernels(kernels), torch.autocast(device, dtype=torch.bfloat16):
            if kernels:
                out = act(leaf)
            else:
                funnel = act.bn(act.conv(leaf))
                out = torch.where(leaf >= funnel, leaf, funnel)
                ties = int((leaf == funnel).sum())
        results.append((out, torch.autograd.grad(out, [leaf, *act.parameters()], grad)))
    (fused, fused_grads), (reference, reference_grads) = results
    assert "FunnelMax" in type(fused.grad_fn).__name__ and fused.dtype == torch.bfloat16
    assert ties > 0  # the case this test is about
    assert torch.equal(fused, reference)
    for a, b in zip(fused_grads, reference_grads, strict=True):
        assert torch.equal(a, b)


def test_a_bf16_training_step_of_resnet_ours_uses_the_kernels_and_is_as_accurate_as_the_modules():
    """bf16 through a whole network is far from float64 (about 15 % here, either way); the
    kernels must not add to that."""
    model = create_model("resnet_ours_tiny").train().to(memory_format=torch.channels_last)
    images = torch.randn(4, 3, 48, 64).contiguous(memory_format=torch.channels_last)
    state = {k: v.clone() for k, v in model.state_dict().items()}

    def step(kernels: bool, amp: bool = True, dtype: torch.dtype = torch.float32):
        net = model.to(dtype)
        net.load_state_dict(state)
        net.zero_grad(set_to_none=True)
        with eager_kernels(kernels), torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            logits = net(images.to(dtype))
            loss = logits.float().square().mean()
        loss.backward()
        grads = torch.cat([p.grad.flatten().double() for p in net.parameters()])
        return loss.detach(), grads, _autograd_names(logits)

    fused_loss, fused, fused_names = step(True)
    plain_loss, plain, plain_names = step(False)
    _, reference, _ = step(False, amp=False, dtype=torch.float64)
    kernels = {"_FunnelMaxBackward", "_ChannelSpatialAttentionBackward"}
    assert kernels <= fused_names and not kernels & plain_names
    assert torch.equal(fused_loss, plain_loss)  # bitwise: the same forward arithmetic
    error = {
        name: float((g - reference).norm() / reference.norm())
        for name, g in (("fused", fused), ("plain", plain))
    }
    assert error["fused"] <= 1.1 * error["plain"], error


def _autograd_names(tensor: torch.Tensor) -> set[str]:
    """The class names of every autograd node behind `tensor`."""
    names, seen, stack = set(), set(), [tensor.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.add(type(node).__name__)
        stack += [next_fn for next_fn, _ in node.next_functions]
    return names
