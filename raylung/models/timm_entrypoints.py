"""ResNet-ours in timm's registry: ``timm.create_model("resnet_ours50", num_classes=1)``.

So the rest of the PyTorch ecosystem (timm's training scripts, feature extraction, anything
that builds models by timm name) can use the paper's model. Each entry forwards to raylung's own
factory, so both registries build the same model. There are no pretrained weights: the paper
trains from scratch, and ``pretrained=True`` is refused. The timm baselines keep timm's names.
"""

from __future__ import annotations

from typing import Any

from torch import nn

OURS = ("resnet_ours50", "resnet_ours26", "resnet_ours_tiny")


def _entrypoint(name: str):
    def build(
        pretrained: bool = False,
        pretrained_cfg: Any = None,
        pretrained_cfg_overlay: Any = None,
        **kwargs: Any,
    ) -> nn.Module:
        if pretrained:
            raise ValueError(f"{name} has no pretrained weights (the paper trains from scratch)")
        kwargs.pop("cache_dir", None)  # timm's hub arguments mean nothing without weights
        from raylung.models.build import create_model

        return create_model(name, **kwargs)

    build.__name__ = build.__qualname__ = name
    build.__module__ = __name__
    build.__doc__ = f"raylung's {name} (Kim & Kang 2023), built by raylung.models.create_model."
    return build


def register_with_timm() -> None:
    """Add raylung's ResNet-ours variants to timm's model registry (idempotent)."""
    import timm
    from timm.models import register_model as timm_register_model

    for name in OURS:
        if name not in timm.list_models(name):
            timm_register_model(_entrypoint(name))
