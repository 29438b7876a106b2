"""Layers of the Kim & Kang (2023) attention ResNet: FReLU, ECA, spatial attention, the stem.

Papers:
- Funnel Activation (FReLU): Ma, Zhang & Sun, "Funnel Activation for Visual Recognition",
  ECCV 2020, https://arxiv.org/abs/2007.11824
- Efficient Channel Attention (ECA): Wang et al., "ECA-Net: Efficient Channel Attention for
  Deep Convolutional Neural Networks", CVPR 2020, https://arxiv.org/abs/1910.03151
- Spatial attention as a 1x1 convolution to one channel: Kim & Kang 2023, eq. (2), after
  Woo et al., "CBAM: Convolutional Block Attention Module", ECCV 2018,
  https://arxiv.org/abs/1807.06521
- The two-4x4-convolution stem: Kim & Kang 2023, "Input Stem Change", after the deep stem of
  He et al., "Bag of Tricks for Image Classification with CNNs", CVPR 2019,
  https://arxiv.org/abs/1812.01187
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

__all__ = [
    "EcaKernel",
    "EcaModule",
    "FReLU",
    "PadSame2d",
    "SpatialAttention",
    "Stem",
    "channel_spatial_attention",
    "conv1x1",
    "conv3x3",
    "dwconv3x3",
    "eager_kernels",
    "eca_kernel_size",
    "funnel_maximum",
    "make_divisible",
    "same_padding",
]

EcaKernel = int | str  # an odd int, or "adaptive"


def make_divisible(value: float, divisor: int = 8, round_limit: float = 0.9) -> int:
    """Round a channel count to a multiple of `divisor`, never more than 10% below `value`.

    The rule of timm's ``make_divisible`` (and MobileNet's), used by the width multiplier.
    """
    new_value = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if new_value < round_limit * value:
        new_value += divisor
    return new_value


def eca_kernel_size(channels: int, kernel_size: EcaKernel = "adaptive", gamma: int = 2, beta: int = 1) -> int:
    """ECA's 1-D kernel size: `kernel_size` itself, or ECA-Net's adaptive rule.

    Adaptive (ECA-Net eq. 12): ``k = |log2(C) / gamma + beta / gamma|`` rounded to the odd
    number at or above it, which gives 5, 5, 5, 7 for C = 256, 512, 1024, 2048. As in the
    ECA-Net reference code (and unlike timm's ``EcaModule``) there is no floor of 3.
    """
    if kernel_size == "adaptive":
        t = int(abs((math.log2(channels) + beta) / gamma))
        return t if t % 2 else t + 1
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, int):
        raise ValueError(f"ECA kernel size must be an odd int or 'adaptive', got {kernel_size!r}")
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"ECA kernel size must be a positive odd int, got {kernel_size}")
    return kernel_size


def conv1x1(in_chs: int, out_chs: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution without bias (a norm or the residual sum follows)."""
    return nn.Conv2d(in_chs, out_chs, kernel_size=1, stride=stride, bias=False)


def conv3x3(in_chs: int, out_chs: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution, padding 1, without bias."""
    return nn.Conv2d(in_chs, out_chs, kernel_size=3, stride=stride, padding=1, bias=False)


def dwconv3x3(chs: int) -> nn.Conv2d:
    """Depthwise 3x3 convolution (groups = channels), padding 1, without bias."""
    return nn.Conv2d(chs, chs, kernel_size=3, padding=1, groups=chs, bias=False)


def same_padding(size: int, kernel_size: int, stride: int) -> tuple[int, int]:
    """TensorFlow 'SAME' padding (before, after) of one dimension: output = ceil(size / stride).

    The extra pixel of an odd total goes after (bottom / right), as in TensorFlow.
    """
    out = (size + stride - 1) // stride
    total = max((out - 1) * stride + kernel_size - size, 0)
    return total // 2, total - total // 2


class PadSame2d(nn.Module):
    """Zero padding that makes a following convolution behave like TensorFlow's 'SAME'.

    The paper's model is Keras; an even kernel (4x4) needs asymmetric padding, which
    ``nn.Conv2d(padding=...)`` cannot express. Stride 1 pads (1, 2) per dimension for a 4x4
    kernel whatever the input size; stride 2 depends on the parity of the input size, so the
    amounts are computed from the input shape.

    Args:
        kernel_size: Kernel size of the convolution that follows.
        stride: Stride of the convolution that follows.
    """

    def __init__(self, kernel_size: int, stride: int = 1) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom = same_padding(x.shape[-2], self.kernel_size, self.stride)
        left, right = same_padding(x.shape[-1], self.kernel_size, self.stride)
        return F.pad(x, [left, right, top, bottom])

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}"


class FReLU(nn.Module):
    """Funnel activation ``f(x) = max(x, BN(DWConv3x3(x)))`` (Ma et al. 2020, eq. 2).

    The funnel condition T(x) is a per-channel 3x3 window (a depthwise convolution) followed by
    batch norm, as in the FReLU reference code; the convolution has no bias because the norm
    that follows has one.

    Args:
        channels: Number of input (= output) channels.
        kernel_size: Size of the funnel window (3 in both papers).
    """

    def __init__(self, channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            channels, channels, kernel_size, padding=kernel_size // 2, groups=channels, bias=False
        )
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        funnel = self.bn(self.conv(x))
        if torch.jit.is_scripting():
            return torch.maximum(x, funnel)
        return funnel_maximum(x, funnel)


class EcaModule(nn.Module):
    """Efficient channel attention (Wang et al. 2020; Kim & Kang 2023 eq. 1).

    Global average pool -> 1-D convolution of kernel `k` across channels (no bias) ->
    sigmoid -> scale the input channels. Numerically the same as timm's ``EcaModule`` for the
    same kernel size.

    Args:
        channels: Number of input channels (sets the adaptive kernel size).
        kernel_size: An odd int, or ``"adaptive"`` for ECA-Net's rule (:func:`eca_kernel_size`).
        gamma: ECA-Net's gamma of the adaptive rule.
        beta: ECA-Net's b of the adaptive rule.
    """

    def __init__(
        self, channels: int, kernel_size: EcaKernel = "adaptive", gamma: int = 2, beta: int = 1
    ) -> None:
        super().__init__()
        self.kernel_size = eca_kernel_size(channels, kernel_size, gamma, beta)
        self.conv = nn.Conv1d(1, 1, self.kernel_size, padding=(self.kernel_size - 1) // 2, bias=False)
        self.gate = nn.Sigmoid()

    def channel_weights(self, x: torch.Tensor) -> torch.Tensor:
        """The (B, C) sigmoid weights of `x`'s channels."""
        y = x.mean((2, 3)).view(x.shape[0], 1, -1)  # (B, 1, C): channels are the 1-D axis
        return self.gate(self.conv(y)).view(x.shape[0], -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.channel_weights(x).view(x.shape[0], -1, 1, 1)


class SpatialAttention(nn.Module):
    """Spatial attention ``y = sigmoid(conv1x1(x)) * x`` (Kim & Kang 2023, eq. 2).

    A 1x1 convolution collapses the channels to one map per pixel; its sigmoid (the output of
    ``self.gate``, shape (B, 1, H, W)) scales every channel. The convolution keeps its bias
    (Keras' ``Conv2D`` default): nothing normalises its output before the sigmoid.

    Args:
        channels: Number of input channels.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, 1, kernel_size=1, bias=True)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.conv(x))


def channel_spatial_attention(x: torch.Tensor, channel: EcaModule, spatial: SpatialAttention) -> torch.Tensor:
    """``spatial(channel(x))``: ECA, then spatial attention, as after each bottleneck.

    In eager training this runs as one autograd function (:class:`_ChannelSpatialAttention`)
    with the same forward arithmetic and fewer full-size temporaries; elsewhere (inference,
    tracing, ``torch.compile``, ``torch.export``, autocast) it calls the modules. Python only:
    scripted models call the modules directly.
    Either way ``spatial.gate`` is called, so forward hooks on it see the attention map.
    """
    if _use_eager_kernels(x) and x.dtype == spatial.conv.weight.dtype == channel.conv.weight.dtype:
        return _ChannelSpatialAttention.apply(
            x, channel.conv.weight, spatial.conv.weight, spatial.conv.bias, channel, spatial
        )
    return spatial(channel(x))


# --- Eager-training kernels -----------------------------------------------------------------
# The model is memory-bound on CPU: its depthwise convolutions, FReLUs and attention are cheap
# arithmetic on full-size activations, and every new full-size tensor costs a fresh allocation
# (for the largest maps, page faults from the OS). These autograd functions compute exactly
# the same forward values as the plain modules, and the same gradients up to floating-point
# summation order, while allocating fewer full-size tensors. They are used only in eager mode
# with autograd on (not for double backward); tests compare them against the plain modules.


_EAGER_KERNELS = True


@contextlib.contextmanager
def eager_kernels(enabled: bool) -> Iterator[None]:
    """Switch the eager-training kernels on or off (to compare against plain autograd)."""
    global _EAGER_KERNELS
    previous, _EAGER_KERNELS = _EAGER_KERNELS, enabled
    try:
        yield
    finally:
        _EAGER_KERNELS = previous


def _use_eager_kernels(x: torch.Tensor) -> bool:
    return (
        _EAGER_KERNELS
        and torch.is_grad_enabled()
        and not torch.jit.is_tracing()
        and not torch.compiler.is_compiling()
        and not torch.compiler.is_exporting()
        and x.device.type in ("cpu", "cuda")
        and not torch.is_autocast_enabled(x.device.type)
    )


def funnel_maximum(x: torch.Tensor, funnel: torch.Tensor) -> torch.Tensor:
    """``torch.maximum(x, funnel)``: FReLU's last step; `funnel` may be overwritten with it.

    In eager training it runs as :class:`_FunnelMax` (writes the maximum into `funnel`, which
    no one else holds, and has a cheaper backward); elsewhere it is the plain op.
    """
    if _use_eager_kernels(x) and x.dtype == funnel.dtype and x.shape == funnel.shape:
        return _FunnelMax.apply(x, funnel)
    return torch.maximum(x, funnel)


class _FunnelMax(torch.autograd.Function):
    """``torch.maximum(x, funnel)`` written into `funnel`, with a three-pass backward.

    Autograd's generic backward of ``maximum`` takes ten passes over the tensor to split the
    gradient in half at exact ties. This one routes it by the 0/1 mask ``x >= max(x, funnel)``
    (true exactly where ``x >= funnel``), rebuilt in the backward from tensors that are saved
    anyway (`x` by the depthwise convolution, the output by the next layer), so the forward
    stores nothing new. At exact ties (a measure-zero set of inputs) the whole gradient goes to
    `x`, TensorFlow's convention for ``tf.maximum`` (the paper's framework). The mask is a float
    tensor: boolean ``where``/``masked_fill`` run about five times slower on the CPU. `funnel`
    is the output of FReLU's batch norm, which saves its input, not its output, so overwriting
    it is safe.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, funnel: torch.Tensor) -> torch.Tensor:
        out = torch.maximum(x, funnel, out=funnel)
        ctx.mark_dirty(funnel)
        ctx.save_for_backward(x, out)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, out = ctx.saved_tensors
        grad_x = torch.ge(x, out, out=torch.empty_like(grad)).mul_(grad)
        return grad_x, grad - grad_x


def _pixel_rows(t: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, H*W, C) view, one row per pixel, for either memory format."""
    return t.flatten(2).transpose(1, 2)


def _batched_mv(mat: torch.Tensor, vec: torch.Tensor) -> torch.Tensor:
    """``mat[i] @ vec[i]`` for each i: (B, M, N) x (B, N) -> (B, M).

    On the CPU a loop of ``torch.mv`` (BLAS gemv, either operand order) is several times
    faster than ``torch.bmm`` with a one-column right operand, which BLAS treats as a GEMM; on
    a GPU one batched kernel beats a launch per sample.
    """
    if mat.device.type != "cpu":
        return torch.bmm(mat, vec.unsqueeze(-1)).squeeze(-1)
    out = vec.new_empty(mat.shape[0], mat.shape[1])
    for i in range(mat.shape[0]):
        torch.mv(mat[i], vec[i], out=out[i])
    return out


class _ChannelSpatialAttention(torch.autograd.Function):
    """ECA then spatial attention: ``out = x1 * s`` with ``x1 = x * a``, as one function.

    ``a = sigmoid(conv1d(mean_hw(x)))`` (B, C) and ``s = sigmoid(w . x1 + b)`` (B, 1, H, W).
    The forward is the modules' own arithmetic, writing ``x1`` and then ``out`` into one new
    tensor. The backward allocates one full-size tensor (instead of about seven): the
    reductions over pixels and channels are batched matrix-vector products on the saved input,
    and the gradient of `x` is built in place::

        P = g * x;  ds = P a (over C);  dlogit = ds * s * (1 - s)
        da = P^T s + w * (x^T dlogit) (over pixels);  dw = sum_b a * (x^T dlogit);  db = sum dlogit
        dx = (g * s + dlogit w^T) * a + dmean / (H W)
    """

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        eca_weight: torch.Tensor,
        sa_weight: torch.Tensor,
        sa_bias: torch.Tensor | None,
        channel: EcaModule,
        spatial: SpatialAttention,
    ) -> torch.Tensor:
        b, c = x.shape[:2]
        mean = x.mean((2, 3))
        a = channel.gate(channel.conv(mean.view(b, 1, c))).view(b, c)
        out = x * a.view(b, c, 1, 1)
        s = spatial.gate(spatial.conv(out))
        out.mul_(s)
        ctx.eca_padding = channel.conv.padding
        ctx.has_bias = sa_bias is not None
        ctx.save_for_backward(x, mean, a, s, eca_weight, sa_weight)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, mean, a, s, eca_weight, sa_weight = ctx.saved_tensors
        b, c, h, w = x.shape
        s_flat = s.reshape(b, h * w)

        buf = grad * x  # P; the buffer later becomes dx
        rows = _pixel_rows(buf)
        grad_logit = torch.ops.aten.sigmoid_backward(_batched_mv(rows, a), s_flat)  # (B, HW)
        p_t_s = _batched_mv(rows.transpose(1, 2), s_flat)  # (B, C)
        x_t_dlogit = _batched_mv(_pixel_rows(x).transpose(1, 2), grad_logit)  # (B, C)
        w_row = sa_weight.view(1, c)
        grad_sa_weight = (x_t_dlogit * a).sum(0).view_as(sa_weight)
        grad_sa_bias = grad_logit.sum().view(1) if ctx.has_bias else None
        grad_a = p_t_s + w_row * x_t_dlogit

        # ECA's small graph (mean -> conv1d -> sigmoid), differentiated by autograd.
        with torch.enable_grad():
            mean_ = mean.detach().requires_grad_()
            weight_ = eca_weight.detach().requires_grad_()
            a_ = torch.sigmoid(F.conv1d(mean_.view(b, 1, c), weight_, padding=ctx.eca_padding)).view(b, c)
            grad_mean, grad_eca_weight = torch.autograd.grad(a_, (mean_, weight_), grad_a)

        torch.mul(grad, s, out=buf)  # dL/dx1, direct part
        buf.addcmul_(grad_logit.view(b, 1, h, w), w_row.view(1, c, 1, 1))  # + through the logit
        torch.addcmul((grad_mean / (h * w)).view(b, c, 1, 1), buf, a.view(b, c, 1, 1), out=buf)
        return buf, grad_eca_weight, grad_sa_weight, grad_sa_bias, None, None


class Stem(nn.Module):
    """Input stem: two 4x4 convolutions (stride 2, then 1), each BN -> FReLU, then 3x3 max-pool.

    Both convolutions are padded TensorFlow-'SAME'-style, so the stem maps H x W to
    ceil(H / 2) x ceil(W / 2) and the max-pool (stride 2, padding 1, as in ResNet) halves that
    again: 3x240x320 -> 64x60x80 with the default channels.

    Args:
        in_chans: Input image channels (3 for RGB, 1 for grey).
        channels: Output channels of the first and second convolution.
    """

    def __init__(self, in_chans: int = 3, channels: tuple[int, int] = (32, 64)) -> None:
        super().__init__()
        self.pad1 = PadSame2d(4, stride=2)
        self.conv1 = nn.Conv2d(in_chans, channels[0], kernel_size=4, stride=2, bias=False)
        self.bn1 = nn.BatchNorm2d(channels[0])
        self.act1 = FReLU(channels[0])
        self.pad2 = PadSame2d(4, stride=1)
        self.conv2 = nn.Conv2d(channels[0], channels[1], kernel_size=4, stride=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels[1])
        self.act2 = FReLU(channels[1])
        self.pool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.out_channels = channels[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.bn1(self.conv1(self.pad1(x))))
        x = self.act2(self.bn2(self.conv2(self.pad2(x))))
        return self.pool(x)
