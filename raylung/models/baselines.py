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
from typing import TYPE_CHECKING, Any

from raylung.models.checks import check_common_args
from raylung.models.registry import register_model

if TYPE_CHECKING:
    from raylung.models.timm_resnet import TimmResNet

__all__ = ["BASELINE_ARGS", "TimmResNet", "resnet50", "resnet50c", "resnet50d", "resnext50_32x4d"]


def __getattr__(name: str) -> Any:
    # timm is imported when a baseline is built, not when the registry lists the models: the
    # config schema lists them in every process that validates a config (each Tune trial).
    if name == "TimmResNet":
        from raylung.models.timm_resnet import TimmResNet

        return TimmResNet
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# Every keyword a baseline factory accepts; ResNet-ours' architecture keywords are rejected.
BASELINE_ARGS: tuple[str, ...] = ("depths", "in_chans", "num_classes", "drop_rate", "drop_path_rate")


def _create(
    name: str,
    depths: Sequence[int] | None = None,
    in_chans: int = 3,
    num_classes: int = 1,
    drop_rate: float = 0.0,
    drop_path_rate: float = 0.0,
) -> TimmResNet:
    kwargs: dict[str, object] = {}
    if depths is not None:
        if len(depths) != 4 or any(int(d) != d or d < 1 for d in depths):
            raise ValueError(f"depths must be 4 positive ints, got {tuple(depths)}")
        kwargs["layers"] = tuple(depths)
    check_common_args(in_chans, num_classes, drop_rate, drop_path_rate)
    import timm
    from timm.models.resnet import ResNet

    from raylung.models.timm_resnet import TimmResNet

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


@register_model(accepts=BASELINE_ARGS)
def resnet50(**kwargs: Any) -> TimmResNet:
    """timm ``resnet50``: 7x7 stem, stride on the 3x3 conv (v1.5), 1x1-stride-2 projection."""
    return _create("resnet50", **kwargs)


@register_model(accepts=BASELINE_ARGS)
def resnet50c(**kwargs: Any) -> TimmResNet:
    """timm ``resnet50c``: ResNet-50 with the deep stem (three 3x3 convs, 32-32-64)."""
    return _create("resnet50c", **kwargs)


@register_model(accepts=BASELINE_ARGS)
def resnet50d(**kwargs: Any) -> TimmResNet:
    """timm ``resnet50d``: deep stem plus average-pool downsampling in the shortcut."""
    return _create("resnet50d", **kwargs)


@register_model(accepts=BASELINE_ARGS)
def resnext50_32x4d(**kwargs: Any) -> TimmResNet:
    """timm ``resnext50_32x4d``: ResNet-50 with 32-group 3x3 convolutions of width 4."""
    return _create("resnext50_32x4d", **kwargs)
