"""The baselines of Kim & Kang (2023), Table 3, built by timm (never re-implemented here).

- ResNet-50: He et al., "Deep Residual Learning for Image Recognition", CVPR 2016,
  https://arxiv.org/abs/1512.03385 (timm ``resnet50``)
- ResNet-50-C / -D: He et al., "Bag of Tricks for Image Classification with CNNs", CVPR 2019,
  https://arxiv.org/abs/1812.01187 (timm ``resnet50c``, ``resnet50d``)
- ResNeXt-50 32x4d: Xie et al., "Aggregated Residual Transformations for Deep Neural
  Networks", CVPR 2017, https://arxiv.org/abs/1611.05431 (timm ``resnext50_32x4d``)

Always ``pretrained=False`` (the paper trains from scratch; no network access is needed).
``depths`` maps to timm's ``layers`` so tests can build reduced variants; the architecture
arguments of ResNet-ours (``eca_k``, ``stem_channels``, ``width``) are rejected.
"""

from __future__ import annotations

from collections.abc import Sequence

import timm
from timm.models.resnet import ResNet
from torch import nn

from raylung.models.registry import register_model

__all__ = ["TimmResNet", "resnet50", "resnet50c", "resnet50d", "resnext50_32x4d"]


class TimmResNet(ResNet):
    """timm's ``ResNet`` with raylung's model interface added (no change to its modules)."""

    def gradcam_target_layer(self) -> nn.Module:
        """The module whose output is the last spatial feature map before pooling (Grad-CAM)."""
        return self.layer4


def _create(
    name: str,
    depths: Sequence[int] | None,
    in_chans: int,
    num_classes: int,
    drop_rate: float,
    drop_path_rate: float,
) -> TimmResNet:
    kwargs: dict[str, object] = {}
    if depths is not None:
        if len(depths) != 4 or any(int(d) != d or d < 1 for d in depths):
            raise ValueError(f"depths must be 4 positive ints, got {tuple(depths)}")
        kwargs["layers"] = tuple(depths)
    if in_chans < 1:
        raise ValueError(f"in_chans must be >= 1, got {in_chans}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    for label, rate in (("drop_rate", drop_rate), ("drop_path_rate", drop_path_rate)):
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"{label} must be in [0, 1), got {rate}")
    model = timm.create_model(
        name,
        pretrained=False,
        in_chans=in_chans,
        num_classes=num_classes,
        drop_rate=drop_rate,
        drop_path_rate=drop_path_rate,
        **kwargs,
    )
    if type(model) is not ResNet:
        raise TypeError(f"timm built a {type(model).__name__} for {name!r}, expected ResNet")
    # timm's registry cannot build a subclass; TimmResNet only adds methods, so re-classing
    # the instance is safe and keeps timm's module names (and state_dict keys) unchanged.
    model.__class__ = TimmResNet
    return model


@register_model
def resnet50(
    *,
    depths: Sequence[int] | None = None,
    in_chans: int = 3,
    num_classes: int = 1,
    drop_rate: float = 0.0,
    drop_path_rate: float = 0.0,
) -> TimmResNet:
    """timm ``resnet50``: 7x7 stem, stride on the 3x3 conv (v1.5), 1x1-stride-2 projection."""
    return _create("resnet50", depths, in_chans, num_classes, drop_rate, drop_path_rate)


@register_model
def resnet50c(
    *,
    depths: Sequence[int] | None = None,
    in_chans: int = 3,
    num_classes: int = 1,
    drop_rate: float = 0.0,
    drop_path_rate: float = 0.0,
) -> TimmResNet:
    """timm ``resnet50c``: ResNet-50 with the deep stem (three 3x3 convs, 32-32-64)."""
    return _create("resnet50c", depths, in_chans, num_classes, drop_rate, drop_path_rate)


@register_model
def resnet50d(
    *,
    depths: Sequence[int] | None = None,
    in_chans: int = 3,
    num_classes: int = 1,
    drop_rate: float = 0.0,
    drop_path_rate: float = 0.0,
) -> TimmResNet:
    """timm ``resnet50d``: deep stem plus average-pool downsampling in the shortcut."""
    return _create("resnet50d", depths, in_chans, num_classes, drop_rate, drop_path_rate)


@register_model
def resnext50_32x4d(
    *,
    depths: Sequence[int] | None = None,
    in_chans: int = 3,
    num_classes: int = 1,
    drop_rate: float = 0.0,
    drop_path_rate: float = 0.0,
) -> TimmResNet:
    """timm ``resnext50_32x4d``: ResNet-50 with 32-group 3x3 convolutions of width 4."""
    return _create("resnext50_32x4d", depths, in_chans, num_classes, drop_rate, drop_path_rate)
