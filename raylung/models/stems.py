"""Input stems: the paper's two 4x4 convolutions, ResNet's 7x7, and the deep stem of ResNet-C/D.

All three map an image to ``channels[1]`` feature maps at a quarter of its resolution, so a
stem is a switch (``Switches.stem``) that changes nothing else in the network.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from raylung.models.layers import PadSame2d, make_activation

__all__ = ["STEM_TYPES", "DeepStem", "ResNetStem", "Stem"]


class Stem(nn.Module):
    """Input stem: two 4x4 convolutions (stride 2, then 1), each BN -> FReLU, then 3x3 max-pool.

    Both convolutions are padded TensorFlow-'SAME'-style, so the stem maps H x W to
    ceil(H / 2) x ceil(W / 2) and the max-pool (stride 2, padding 1, as in ResNet) halves that
    again: 3x240x320 -> 64x60x80 with the default channels.

    Args:
        in_chans: Input image channels (3 for RGB, 1 for grey).
        channels: Output channels of the first and second convolution.
        activation: ``frelu`` (paper) or ``relu``.
    """

    def __init__(
        self, in_chans: int = 3, channels: Sequence[int] = (32, 64), activation: str = "frelu"
    ) -> None:
        super().__init__()
        self.pad1 = PadSame2d(4, stride=2)
        self.conv1 = nn.Conv2d(in_chans, channels[0], kernel_size=4, stride=2, bias=False)
        self.bn1 = nn.BatchNorm2d(channels[0])
        self.act1 = make_activation(activation, channels[0])
        self.pad2 = PadSame2d(4, stride=1)
        self.conv2 = nn.Conv2d(channels[0], channels[1], kernel_size=4, stride=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels[1])
        self.act2 = make_activation(activation, channels[1])
        self.pool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.out_channels = channels[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.bn1(self.conv1(self.pad1(x))))
        x = self.act2(self.bn2(self.conv2(self.pad2(x))))
        return self.pool(x)


class ResNetStem(nn.Module):
    """The original ResNet stem: conv 7x7/2 -> BN -> activation -> max-pool 3x3/2.

    Output channels ``channels[1]`` (64 by default), same resolution as :class:`Stem`.
    """

    def __init__(
        self, in_chans: int = 3, channels: Sequence[int] = (32, 64), activation: str = "frelu"
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, channels[1], kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(channels[1])
        self.act1 = make_activation(activation, channels[1])
        self.pool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.out_channels = channels[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.act1(self.bn1(self.conv1(x))))


class DeepStem(nn.Module):
    """The deep stem of ResNet-C/D (He et al. 2019): three 3x3 convs (stride 2, 1, 1) with
    ``channels[0], channels[0], channels[1]`` filters, each BN -> activation, then max-pool."""

    def __init__(
        self, in_chans: int = 3, channels: Sequence[int] = (32, 64), activation: str = "frelu"
    ) -> None:
        super().__init__()
        widths = (channels[0], channels[0], channels[1])
        layers: list[nn.Module] = []
        previous = in_chans
        for i, width in enumerate(widths):
            layers += [
                nn.Conv2d(previous, width, 3, stride=2 if i == 0 else 1, padding=1, bias=False),
                nn.BatchNorm2d(width),
                make_activation(activation, width),
            ]
            previous = width
        self.convs = nn.Sequential(*layers)
        self.pool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.out_channels = channels[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.convs(x))


STEM_TYPES: dict[str, type[nn.Module]] = {"paper": Stem, "resnet": ResNetStem, "deep": DeepStem}
