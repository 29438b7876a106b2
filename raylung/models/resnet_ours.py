"""ResNet-ours: the attention ResNet of Kim & Kang (2023) for lung-cancer pathology images.

Kim & Kang, "A Study on the Classification of Cancers with Lung Cancer Pathological Images
Using Deep Neural Networks and Self-Attention Structures", J. Popul. Ther. Clin. Pharmacol.
2023. A pre-activation bottleneck ResNet with

- a stem of two 4x4 convolutions (:class:`Stem`; Kim & Kang, "Input Stem Change", after the
  deep stem of He et al., "Bag of Tricks for Image Classification with CNNs", CVPR 2019,
  https://arxiv.org/abs/1812.01187),
- ResNet-D downsampling in every stage (He et al. 2019, as above),
- pre-activation blocks whose projection shortcut reads the pre-activated input (He et al.,
  "Identity Mappings in Deep Residual Networks", ECCV 2016, https://arxiv.org/abs/1603.05027),
- a depthwise 3x3 convolution before each of the bottleneck's two 1x1 convolutions,
- ECA channel attention (https://arxiv.org/abs/1910.03151) then a 1x1-conv spatial attention
  after the last 1x1 convolution,
- FReLU (https://arxiv.org/abs/2007.11824) wherever ResNet has a ReLU.

Each of these is a switch (:class:`Switches`), so the paper's question, which part matters, is
a grid of one-component-removed variants (``search_spaces/ablation.yaml``). The defaults are
the paper's model, parameter for parameter. docs/model.md lists where the paper is ambiguous
and which reading this code takes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from timm.layers import DropPath
from torch import nn

from raylung.models.checks import check_common_args
from raylung.models.kernels import channel_spatial_attention
from raylung.models.layers import (
    ACTIVATIONS,
    CHANNEL_ATTENTIONS,
    EcaKernel,
    EcaModule,
    PadSame2d,
    SpatialAttention,
    conv1x1,
    conv3x3,
    dwconv3x3,
    eca_kernel_size,
    make_activation,
    make_channel_attention,
    make_divisible,
)
from raylung.models.registry import register_model

__all__ = [
    "RESNET_OURS_ARGS",
    "DeepStem",
    "DownsampleAvg",
    "DownsampleConv",
    "PreActBottleneck",
    "ResNetOurs",
    "ResNetStem",
    "Stem",
    "Switches",
    "attention_maps",
    "resnet_ours26",
    "resnet_ours50",
    "resnet_ours_tiny",
]

STEMS = ("paper", "resnet", "deep")
SHORTCUTS = ("avgpool", "conv")


@dataclass(frozen=True)
class Switches:
    """Which of the paper's parts a ResNet-ours has; the defaults are the paper's model.

    Args:
        activation: ``frelu`` (paper) or ``relu``, everywhere ResNet has a ReLU.
        channel_attention: ``eca`` (paper), ``se`` (squeeze-excite) or ``none``.
        spatial_attention: The 1x1-conv spatial attention after the channel attention.
        depthwise: The depthwise 3x3 convolutions before the two 1x1 convolutions.
        stem: ``paper`` (two 4x4 convs), ``resnet`` (one 7x7) or ``deep`` (three 3x3).
        shortcut: ``avgpool`` (ResNet-D: 2x2 average pool, then 1x1) or ``conv`` (stride-2 1x1).
    """

    activation: str = "frelu"
    channel_attention: str = "eca"
    spatial_attention: bool = True
    depthwise: bool = True
    stem: str = "paper"
    shortcut: str = "avgpool"

    def check(self) -> None:
        for name, value, allowed in (
            ("activation", self.activation, ACTIVATIONS),
            ("channel_attention", self.channel_attention, CHANNEL_ATTENTIONS),
            ("stem", self.stem, STEMS),
            ("shortcut", self.shortcut, SHORTCUTS),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
        for name in ("spatial_attention", "depthwise"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")


BASE_WIDTHS = (64, 128, 256, 512)  # bottleneck mid widths of ResNet-50; outputs are 4x


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
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
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


class ResNetOurs(nn.Module):
    r"""ResNet-ours (Kim & Kang 2023): stem, four stages of :class:`PreActBottleneck`, head.

    The head is ``BN -> FReLU -> global average pool -> dropout -> linear``; with the default
    ``num_classes=1`` it returns one logit per image (cancer = positive): train with
    ``BCEWithLogitsLoss``, apply a sigmoid at inference.

    Args:
        depths: Blocks per stage (default ResNet-50's ``(3, 4, 6, 3)``).
        stem_channels: Channels of the stem's two 4x4 convolutions at ``width=1``.
        width: Multiplier of every convolution width, the stem's included (each rounded to a
            multiple of 8); stage outputs are ``4 * round8(width * (64, 128, 256, 512))``.
        eca_k: ECA kernel size in every block: an odd int or ``"adaptive"`` (5, 5, 5, 7).
        in_chans: Image channels (3 for RGB, 1 for grey).
        num_classes: Number of logits (1 for the binary task).
        drop_rate: Dropout before the final linear layer.
        drop_path_rate: Stochastic depth, rising linearly to this rate over the blocks.
        activation, channel_attention, spatial_attention, depthwise, stem, shortcut: the
            ablation switches (:class:`Switches`); the defaults are the paper's model.
    """

    def __init__(
        self,
        depths: Sequence[int] = (3, 4, 6, 3),
        stem_channels: Sequence[int] = (32, 64),
        width: float = 1.0,
        eca_k: EcaKernel = "adaptive",
        in_chans: int = 3,
        num_classes: int = 1,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        activation: str = "frelu",
        channel_attention: str = "eca",
        spatial_attention: bool = True,
        depthwise: bool = True,
        stem: str = "paper",
        shortcut: str = "avgpool",
    ) -> None:
        super().__init__()
        switches = Switches(activation, channel_attention, spatial_attention, depthwise, stem, shortcut)
        _check_args(depths, stem_channels, width, eca_k, switches)
        check_common_args(in_chans, num_classes, drop_rate, drop_path_rate)
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.switches = switches

        stem_chs = (make_divisible(stem_channels[0] * width), make_divisible(stem_channels[1] * width))
        self.stem = STEM_TYPES[stem](in_chans, stem_chs, activation)

        num_blocks = sum(depths)
        dpr = [drop_path_rate * i / max(num_blocks - 1, 1) for i in range(num_blocks)]
        in_chs = stem_chs[1]
        stages: list[nn.Module] = []
        block_idx = 0
        for stage_idx, (depth, base) in enumerate(zip(depths, BASE_WIDTHS, strict=True)):
            out_chs = make_divisible(base * width) * PreActBottleneck.expansion
            blocks = []
            for i in range(depth):
                # Stage 1 keeps the max-pooled resolution; every later stage halves it.
                stride = 2 if i == 0 and stage_idx > 0 else 1
                blocks.append(PreActBottleneck(in_chs, out_chs, stride, eca_k, dpr[block_idx], switches))
                in_chs = out_chs
                block_idx += 1
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.num_features = in_chs

        # Pre-activation nets end with the BN + activation the last block did not apply.
        self.final_norm = nn.BatchNorm2d(self.num_features)
        self.final_act = make_activation(activation, self.num_features, inplace=False)
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.head_drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(self.num_features, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for name, module in self.named_modules():
            # The attention gates keep PyTorch's fan-in init: a fan-out init of a conv to one
            # channel would saturate the sigmoid at the start of training.
            if isinstance(module, nn.Conv2d) and not name.endswith("attn_spatial.conv"):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def gradcam_target_layer(self) -> nn.Module:
        """The module whose output is the last spatial feature map before pooling (Grad-CAM)."""
        return self.final_act

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.stages(x)
        return self.final_act(self.final_norm(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x).flatten(1)
        x = self.head_drop(x)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _check_args(
    depths: Sequence[int], stem_channels: Sequence[int], width: float, eca_k: EcaKernel, switches: Switches
) -> None:
    """The architecture arguments of ResNet-ours, checked in this one place."""
    if len(depths) != len(BASE_WIDTHS) or any(int(d) != d or d < 1 for d in depths):
        raise ValueError(f"depths must be {len(BASE_WIDTHS)} positive ints, got {tuple(depths)}")
    if len(stem_channels) != 2 or any(int(c) != c or c < 1 for c in stem_channels):
        raise ValueError(f"stem_channels must be two positive ints, got {tuple(stem_channels)}")
    if not width > 0:
        raise ValueError(f"width must be > 0, got {width}")
    try:
        eca_kernel_size(64, eca_k)
    except ValueError as exc:
        raise ValueError(f"eca_k: {exc}") from None
    switches.check()


def attention_maps(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Spatial-attention maps (B, 1, h, w) of the last block of each stage, for figures.

    Runs one forward pass without gradients and captures each map (the sigmoid output of
    ``attn_spatial.gate``) with a forward hook, so the forward itself is unchanged. The
    model's train/eval mode is left as it is: call ``model.eval()`` first for figures.
    """
    stages = getattr(model, "stages", None)
    blocks = [stage[-1] for stage in stages] if isinstance(stages, nn.Sequential) else []
    if not blocks or not all(isinstance(getattr(b, "attn_spatial", None), SpatialAttention) for b in blocks):
        raise ValueError(f"{type(model).__name__} has no spatial attention to show")
    maps: list[torch.Tensor] = []
    handles = [
        b.attn_spatial.gate.register_forward_hook(lambda _m, _i, out: maps.append(out.detach()))
        for b in blocks
    ]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return maps


SWITCH_NAMES: tuple[str, ...] = tuple(asdict(Switches()))

# Every keyword a ResNet-ours factory accepts (the registry rejects any other by name).
RESNET_OURS_ARGS: tuple[str, ...] = (
    "depths",
    "stem_channels",
    "width",
    "eca_k",
    "in_chans",
    "num_classes",
    "drop_rate",
    "drop_path_rate",
    *SWITCH_NAMES,
)


@register_model(accepts=RESNET_OURS_ARGS)
def resnet_ours50(**kwargs: Any) -> ResNetOurs:
    """ResNet-ours(50), the paper's model (23,945,735 parameters with one logit)."""
    model_args = dict(depths=(3, 4, 6, 3))
    return ResNetOurs(**dict(model_args, **kwargs))


@register_model(accepts=RESNET_OURS_ARGS)
def resnet_ours26(**kwargs: Any) -> ResNetOurs:
    """ResNet-ours(26): two blocks per stage; for quick experiments."""
    model_args = dict(depths=(2, 2, 2, 2))
    return ResNetOurs(**dict(model_args, **kwargs))


@register_model(accepts=RESNET_OURS_ARGS)
def resnet_ours_tiny(**kwargs: Any) -> ResNetOurs:
    """One block per stage at a quarter width (stem 8/16, stages 64..512): tests and demos."""
    model_args = dict(depths=(1, 1, 1, 1), width=0.25)
    return ResNetOurs(**dict(model_args, **kwargs))
