"""The residual blocks of ResNet-ours: ResNet-D shortcuts and the pre-activation bottleneck
with depthwise convolutions and channel-then-spatial attention (Kim & Kang 2023)."""

from __future__ import annotations

import torch
from torch import nn

from raylung.models.kernels import channel_spatial_attention
from raylung.models.layers import (
    EcaKernel,
    EcaModule,
    SpatialAttention,
    conv1x1,
    conv3x3,
    dwconv3x3,
    make_activation,
    make_channel_attention,
)
from raylung.models.switches import Switches

__all__ = ["DownsampleAvg", "DownsampleConv", "PreActBottleneck"]


class DownsampleAvg(nn.Module):
    """Projection shortcut (path B) of ResNet-D: 2x2 average pool (if strided), then 1x1 conv.

    ``ceil_mode=True, count_include_pad=False`` keeps the pooled map the size of path A's
    stride-2 3x3 convolution on odd inputs (15x20 -> 8x10), with no zero padding averaged in.

    Args:
        in_chs: Input channels.
        out_chs: Output channels.
        stride: 1 (channel projection only) or 2.
    """

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1) -> None:
        super().__init__()
        if stride == 1:
            self.pool: nn.Module = nn.Identity()
        else:
            self.pool = nn.AvgPool2d(2, stride, ceil_mode=True, count_include_pad=False)
        self.conv = conv1x1(in_chs, out_chs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.pool(x))


class DownsampleConv(nn.Module):
    """Projection shortcut of the original ResNet: a 1x1 convolution with the block's stride.

    It reads only one pixel in four when strided, which is what ResNet-D's average pool fixes;
    kept as the ``shortcut: conv`` ablation.
    """

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1) -> None:
        super().__init__()
        self.conv = conv1x1(in_chs, out_chs, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class PreActBottleneck(nn.Module):
    """Pre-activation bottleneck with depthwise convolutions and channel + spatial attention.

    ``x -> BN -> FReLU -> [dw3x3 -> 1x1 -> BN -> FReLU -> 3x3(stride) -> BN -> FReLU -> dw3x3
    -> 1x1 -> ECA -> spatial attention] + shortcut``. The shortcut is ``x`` itself, or, when
    the block changes shape, :class:`DownsampleAvg` applied to the pre-activated input.

    A switched-off part is an ``nn.Identity`` (an absent shortcut projection is ``None``), so
    the default block's modules and state-dict keys are exactly the paper model's.

    Args:
        in_chs: Input channels.
        out_chs: Output channels; the bottleneck (mid) width is ``out_chs // 4``.
        stride: Stride of the 3x3 convolution (ResNet-D: never on a 1x1).
        eca_k: ECA kernel size, an odd int or ``"adaptive"``.
        drop_path: Stochastic-depth rate of the residual branch.
        switches: Which parts the block has (:class:`Switches`; default: all of the paper's).
    """

    expansion = 4

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        stride: int = 1,
        eca_k: EcaKernel = "adaptive",
        drop_path: float = 0.0,
        switches: Switches = Switches(),
    ) -> None:
        super().__init__()
        mid_chs = out_chs // self.expansion
        act = switches.activation
        self.norm1 = nn.BatchNorm2d(in_chs)
        self.act1 = make_activation(act, in_chs)
        if stride != 1 or in_chs != out_chs:
            shortcut = DownsampleAvg if switches.shortcut == "avgpool" else DownsampleConv
            self.downsample: nn.Module | None = shortcut(in_chs, out_chs, stride)
        else:
            self.downsample = None
        self.conv1_dw = dwconv3x3(in_chs) if switches.depthwise else nn.Identity()
        self.conv1 = conv1x1(in_chs, mid_chs)
        self.norm2 = nn.BatchNorm2d(mid_chs)
        self.act2 = make_activation(act, mid_chs)
        self.conv2 = conv3x3(mid_chs, mid_chs, stride)
        self.norm3 = nn.BatchNorm2d(mid_chs)
        self.act3 = make_activation(act, mid_chs)
        self.conv3_dw = dwconv3x3(mid_chs) if switches.depthwise else nn.Identity()
        self.conv3 = conv1x1(mid_chs, out_chs)
        self.attn_channel = make_channel_attention(switches.channel_attention, out_chs, eca_k)
        self.attn_spatial = SpatialAttention(out_chs) if switches.spatial_attention else nn.Identity()
        self.drop_path = _drop_path(drop_path)
        # The fused eager kernel covers the paper's pair only; other pairs call the modules.
        self._fused_attention = isinstance(self.attn_channel, EcaModule) and isinstance(
            self.attn_spatial, SpatialAttention
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_preact = self.act1(self.norm1(x))
        shortcut = x
        if self.downsample is not None:
            shortcut = self.downsample(x_preact)
        x = self.conv1(self.conv1_dw(x_preact))
        x = self.conv2(self.act2(self.norm2(x)))
        x = self.conv3(self.conv3_dw(self.act3(self.norm3(x))))
        if torch.jit.is_scripting() or not self._fused_attention:
            x = self.attn_spatial(self.attn_channel(x))
        else:
            x = channel_spatial_attention(x, self.attn_channel, self.attn_spatial)
        x = self.drop_path(x)
        if x.dtype == shortcut.dtype:
            return x.add_(shortcut)  # `x` is a new tensor: add in place, one allocation fewer
        return x + shortcut


def _drop_path(rate: float) -> nn.Module:
    """timm's ``DropPath`` (stochastic depth) when `rate` > 0. timm is imported only then: its
    import builds all of timm's models (about 1.7 s of CPU), which every Ray Train worker and
    trial would otherwise pay for a block that is an ``nn.Identity`` by default."""
    if rate <= 0:
        return nn.Identity()
    from timm.layers import DropPath

    return DropPath(rate)
