"""Build a model by registered name, like ``timm.create_model`` (the config's builder is
:func:`raylung.config.model_build.build_model`)."""

from __future__ import annotations

from typing import Any

from torch import nn

from raylung.models.registry import get_model_entry

__all__ = ["create_model", "gradcam_target_layer"]


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the registered model `name`, like ``timm.create_model`` (never pretrained).

    Raises:
        ValueError: `name` is not registered (the message lists the registered models), a
            keyword is not one the model accepts, or a value is out of range.
    """
    entry = get_model_entry(name)
    unsupported = sorted(set(kwargs) - set(entry.kwargs))
    if unsupported:
        raise ValueError(
            f"model {name!r} does not support {', '.join(unsupported)}; it accepts: {', '.join(entry.kwargs)}"
        )
    return entry.fn(**kwargs)


def gradcam_target_layer(model: nn.Module) -> nn.Module:
    """The module whose output is `model`'s last spatial feature map before pooling."""
    target = getattr(model, "gradcam_target_layer", None)
    if target is None:
        raise ValueError(f"{type(model).__name__} does not name a Grad-CAM target layer")
    return target()
