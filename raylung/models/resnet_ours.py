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
from typing import Any

import torch
from torch import nn

from raylung.models.blocks import DownsampleAvg, DownsampleConv, PreActBottleneck
from raylung.models.checks import check_common_args
from raylung.models.layers import (
    EcaKernel,
    SpatialAttention,
    eca_kernel_size,
    make_activation,
    make_divisible,
)
from raylung.models.registry import register_model
from raylung.models.stems import STEM_TYPES, DeepStem, ResNetStem, Stem
from raylung.models.switches import SWITCH_NAMES, Switches

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

BASE_WIDTHS = (64, 128, 256, 512)  # bottleneck mid widths of ResNet-50; outputs are 4x


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
        if self.fc.weight.is_meta:
            # Built on the meta device (raylung.plan.effective, for the architecture only): no
            # values to set, and PyTorch would route normal_ through its Python reference
            # kernels, whose first import costs a Tune trial about a second of CPU.
            return
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
