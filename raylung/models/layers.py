"""Layers of the Kim & Kang (2023) attention ResNet: FReLU, ECA, spatial attention, and the
small factories that let a block take its layer types by name (for the ablation switches).

Papers:
- Funnel Activation (FReLU): Ma, Zhang & Sun, "Funnel Activation for Visual Recognition",
  ECCV 2020, https://arxiv.org/abs/2007.11824
- Efficient Channel Attention (ECA): Wang et al., "ECA-Net: Efficient Channel Attention for
  Deep Convolutional Neural Networks", CVPR 2020, https://arxiv.org/abs/1910.03151
- Spatial attention as a 1x1 convolution to one channel: Kim & Kang 2023, eq. (2), after
  Woo et al., "CBAM: Convolutional Block Attention Module", ECCV 2018,
  https://arxiv.org/abs/1807.06521
- Squeeze-and-excitation (the `se` alternative to ECA): Hu et al., "Squeeze-and-Excitation
  Networks", CVPR 2018, https://arxiv.org/abs/1709.01507 (timm's ``SEModule``)

The eager-training kernels behind FReLU and the attention pair live in
:mod:`raylung.models.kernels`; the stems live with the network in :mod:`raylung.models.resnet_ours`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from raylung.models.kernels import funnel_maximum

__all__ = [
    "ACTIVATIONS",
    "CHANNEL_ATTENTIONS",
    "EcaKernel",
    "EcaModule",
    "FReLU",
    "PadSame2d",
    "SpatialAttention",
    "conv1x1",
    "conv3x3",
    "dwconv3x3",
    "eca_kernel_size",
    "make_activation",
    "make_channel_attention",
    "make_divisible",
    "same_padding",
]

EcaKernel = int | str  # an odd int, or "adaptive"
ACTIVATIONS = ("frelu", "relu")
CHANNEL_ATTENTIONS = ("eca", "se", "none")


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


def make_activation(name: str, channels: int, inplace: bool = True) -> nn.Module:
    """The block activation by name: ``frelu`` (the paper's) or ``relu`` (plain ResNet's).

    ``inplace=False`` where hooks read the output (the head's activation, Grad-CAM's target).
    """
    if name == "frelu":
        return FReLU(channels)
    if name == "relu":
        return nn.ReLU(inplace=inplace)
    raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {name!r}")


def make_channel_attention(name: str, channels: int, eca_k: EcaKernel) -> nn.Module:
    """Channel attention by name: ``eca`` (the paper's), ``se`` (squeeze-excite, 1/16), ``none``."""
    if name == "eca":
        return EcaModule(channels, eca_k)
    if name == "se":
        from timm.layers import SEModule  # timm only when asked for: its import costs seconds

        return SEModule(channels, rd_ratio=1 / 16)
    if name == "none":
        return nn.Identity()
    raise ValueError(f"channel_attention must be one of {', '.join(CHANNEL_ATTENTIONS)}, got {name!r}")
