"""Layers of ResNet-ours: FReLU, ECA, spatial attention, SAME padding, the stem."""

from __future__ import annotations

import pytest
import torch
from timm.layers import EcaModule as TimmEcaModule
from torch import nn
from torch.testing import assert_close

from raylung.models.kernels import channel_spatial_attention, eager_kernels
from raylung.models.layers import (
    EcaModule,
    FReLU,
    SpatialAttention,
    eca_kernel_size,
    make_divisible,
    same_padding,
)
from raylung.models.stems import Stem


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _randomize_bn(bn: nn.BatchNorm2d) -> None:
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
        bn.running_mean.uniform_(-0.2, 0.2)
        bn.running_var.uniform_(0.5, 2.0)


@pytest.mark.parametrize("training", [True, False])
def test_frelu_is_max_of_input_and_funnel(training: bool) -> None:
    act = FReLU(6)
    _randomize_bn(act.bn)
    act.train(training)
    x = torch.randn(2, 6, 9, 11)
    out = act(x)
    assert out.shape == x.shape
    assert bool((out >= x).all())
    assert bool((out > x).any()), "the funnel branch never wins: FReLU degenerated to identity"
    # Same BN statistics mode for the reference: eval uses running stats, train batch stats.
    ref_bn = act.bn if not training else nn.BatchNorm2d(6).train()
    if training:
        ref_bn.load_state_dict(act.bn.state_dict())
    assert_close(out, torch.maximum(x, ref_bn(act.conv(x))))


def test_frelu_backward_matches_torch_maximum() -> None:
    act = FReLU(5)
    _randomize_bn(act.bn)
    x = torch.randn(3, 5, 8, 7, requires_grad=True)
    grad = torch.randn(3, 5, 8, 7)
    out = act(x)
    assert out.grad_fn is not None and "FunnelMax" in type(out.grad_fn).__name__
    got = torch.autograd.grad(out, [x, *act.parameters()], grad)

    x_ref = x.detach().clone().requires_grad_()
    ref_out = torch.maximum(x_ref, act.bn(act.conv(x_ref)))
    want = torch.autograd.grad(ref_out, [x_ref, *act.parameters()], grad)
    assert_close(out, ref_out)
    for g, w in zip(got, want, strict=True):
        assert_close(g, w)


def test_frelu_tie_sends_gradient_to_input() -> None:
    act = FReLU(1).eval()
    with torch.no_grad():
        act.conv.weight.zero_()
        act.bn.bias.fill_(0.25)  # funnel == 0.25 everywhere
    x = torch.tensor([[[[0.25, 1.0], [-1.0, 0.25]]]], requires_grad=True)
    out = act(x)
    (grad_x,) = torch.autograd.grad(out, x, torch.ones_like(out))
    assert_close(grad_x, torch.tensor([[[[1.0, 1.0], [0.0, 1.0]]]]))


def test_frelu_channels_last_keeps_format() -> None:
    act = FReLU(8).to(memory_format=torch.channels_last)
    x = torch.randn(2, 8, 6, 6).contiguous(memory_format=torch.channels_last).requires_grad_()
    out = act(x)
    out.sum().backward()
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert_close(out, act(x.contiguous()))


@pytest.mark.parametrize(("channels", "expected"), [(256, 5), (512, 5), (1024, 5), (2048, 7), (64, 3)])
def test_eca_adaptive_kernel(channels: int, expected: int) -> None:
    assert eca_kernel_size(channels, "adaptive") == expected
    assert EcaModule(channels).conv.kernel_size == (expected,)


@pytest.mark.parametrize("bad", [0, 2, 4, -3, "big", 3.0, True])
def test_eca_rejects_bad_kernel(bad: object) -> None:
    with pytest.raises(ValueError, match="ECA kernel size"):
        eca_kernel_size(256, bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("channels", "k"), [(256, "adaptive"), (2048, "adaptive"), (96, 3), (40, 9), (64, 1)]
)
def test_eca_matches_timm(channels: int, k: int | str) -> None:
    ours = EcaModule(channels, k)
    # timm derives the kernel from `channels` when given, so a fixed k goes in without it.
    theirs = TimmEcaModule(channels) if k == "adaptive" else TimmEcaModule(None, kernel_size=k)
    assert theirs.conv.weight.shape == ours.conv.weight.shape
    with torch.no_grad():
        theirs.conv.weight.copy_(torch.randn_like(theirs.conv.weight))
        ours.conv.weight.copy_(theirs.conv.weight)
    x = torch.randn(2, channels, 5, 7)
    assert_close(ours(x), theirs(x))
    x_cl = x.contiguous(memory_format=torch.channels_last)
    assert_close(ours(x_cl), theirs(x))


def test_spatial_attention_scales_by_one_sigmoid_map() -> None:
    attn = SpatialAttention(12)
    x = torch.randn(2, 12, 5, 6)
    maps: list[torch.Tensor] = []
    attn.gate.register_forward_hook(lambda _m, _i, out: maps.append(out))
    out = attn(x)
    assert len(maps) == 1 and maps[0].shape == (2, 1, 5, 6)
    assert bool(((maps[0] > 0) & (maps[0] < 1)).all())
    weight = attn.conv.weight.view(1, 12, 1, 1)
    want = x * torch.sigmoid((x * weight).sum(1, keepdim=True) + attn.conv.bias.view(1, 1, 1, 1))
    assert_close(out, want)


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "expected"),
    [(240, 4, 2, (1, 1)), (241, 4, 2, (1, 2)), (120, 4, 1, (1, 2)), (7, 4, 1, (1, 2)), (15, 3, 2, (1, 1))],
)
def test_same_padding_matches_tensorflow(
    size: int, kernel: int, stride: int, expected: tuple[int, int]
) -> None:
    assert same_padding(size, kernel, stride) == expected
    # TF 'SAME': output = ceil(size / stride)
    before, after = expected
    assert (size + before + after - kernel) // stride + 1 == -(-size // stride)


@pytest.mark.parametrize(
    ("hw", "mid", "out"), [((240, 320), (120, 160), (60, 80)), ((65, 47), (33, 24), (17, 12))]
)
def test_stem_shapes(hw: tuple[int, int], mid: tuple[int, int], out: tuple[int, int]) -> None:
    stem = Stem(3, (32, 64)).eval()
    x = torch.randn(1, 3, *hw)
    with torch.no_grad():
        after_conv1 = stem.conv1(stem.pad1(x))
        after_conv2 = stem.conv2(stem.pad2(after_conv1))
        y = stem(x)
    assert after_conv1.shape == (1, 32, *mid)
    assert after_conv2.shape == (1, 64, *mid)
    assert y.shape == (1, 64, *out)
    assert stem.conv1.kernel_size == stem.conv2.kernel_size == (4, 4)
    assert (stem.conv1.stride, stem.conv2.stride) == ((2, 2), (1, 1))


def test_make_divisible() -> None:
    assert [make_divisible(v) for v in (8, 16, 64 * 0.25, 32 * 0.25, 9.6, 100)] == [8, 16, 16, 8, 16, 104]


@pytest.mark.parametrize("channels_last", [False, True])
def test_fused_attention_matches_modules(channels_last: bool) -> None:
    channel, spatial = EcaModule(24, 5).double(), SpatialAttention(24).double()
    with torch.no_grad():
        channel.conv.weight.normal_()
        spatial.conv.weight.normal_(0.0, 0.3)
    x = torch.randn(3, 24, 7, 9, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    params = [x, channel.conv.weight, spatial.conv.weight, spatial.conv.bias]
    maps: list[torch.Tensor] = []
    spatial.gate.register_forward_hook(lambda _m, _i, out: maps.append(out))

    out = channel_spatial_attention(x, channel, spatial)
    assert "ChannelSpatialAttention" in type(out.grad_fn).__name__
    assert out.is_contiguous(memory_format=torch.channels_last) == channels_last
    want = spatial(channel(x))
    assert_close(out, want, rtol=0, atol=0)  # the same forward arithmetic
    assert len(maps) == 2 and maps[0].shape == (3, 1, 7, 9)
    grad = torch.randn_like(want)
    for got, ref in zip(
        torch.autograd.grad(out, params, grad), torch.autograd.grad(want, params, grad), strict=True
    ):
        assert_close(got, ref)
    small = torch.randn(2, 24, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda *p: channel_spatial_attention(p[0], channel, spatial), [small, *params[1:]], fast_mode=True
    )


def test_eager_kernels_switch() -> None:
    act = FReLU(4)
    x = torch.randn(1, 4, 5, 5, requires_grad=True)
    with eager_kernels(False):
        assert type(act(x).grad_fn).__name__ == "MaximumBackward0"
    assert "FunnelMax" in type(act(x).grad_fn).__name__
    with torch.no_grad():
        assert act(x).grad_fn is None
