"""Build a model by registered name, or from the validated :class:`~raylung.config.ModelConfig`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torch import nn

from raylung.models.registry import get_model_entry
from raylung.models.resnet_ours import SWITCH_NAMES as SWITCH_FIELDS

if TYPE_CHECKING:
    from raylung.config import ModelConfig

__all__ = ["CONFIG_TO_KWARG", "build_model", "create_model", "gradcam_target_layer"]

# ModelConfig field -> model factory keyword.
CONFIG_TO_KWARG: dict[str, str] = {
    "eca_k": "eca_k",
    "stem_channels": "stem_channels",
    "depths": "depths",
    "width": "width",
    "drop_path": "drop_path_rate",
    "dropout": "drop_rate",
    "num_classes": "num_classes",
    # ResNet-ours' ablation switches (set directly, or through model.ablation)
    **{name: name for name in SWITCH_FIELDS},
}


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


def build_model(cfg: ModelConfig, in_chans: int) -> nn.Module:
    """Build ``cfg.name`` with the fields of `cfg` that are set, for `in_chans` image channels.

    An architecture field left at ``None`` keeps the variant's own default. A field set to a
    value the model has no use for (``eca_k`` on a timm baseline) is an error rather than
    silently ignored; a field left at the schema default is simply not passed to such a model.

    Raises:
        ValueError: naming the field and the model, for a set field the model does not support.
    """
    entry = get_model_entry(cfg.name)
    kwargs: dict[str, Any] = {"in_chans": in_chans}
    switches = cfg.switches()
    for field, kwarg in CONFIG_TO_KWARG.items():
        value = switches.get(field) if field in SWITCH_FIELDS else getattr(cfg, field)
        if value is None:
            continue
        if not entry.supports(kwarg):
            if value == type(cfg).model_fields[field].default:
                continue
            via = f" (by model.ablation {cfg.ablation})" if field in SWITCH_FIELDS and cfg.ablation else ""
            raise ValueError(
                f"model.{field}={value!r} is set{via}, but model {cfg.name!r} has no {field}; "
                f"leave it unset for this model"
            )
        kwargs[kwarg] = value
    return create_model(cfg.name, **kwargs)


def gradcam_target_layer(model: nn.Module) -> nn.Module:
    """The module whose output is `model`'s last spatial feature map before pooling."""
    target = getattr(model, "gradcam_target_layer", None)
    if target is None:
        raise ValueError(f"{type(model).__name__} does not name a Grad-CAM target layer")
    return target()
