"""Build the model a validated :class:`~raylung.config.ModelConfig` describes.

Lives with the config, not the models: the models know nothing of raylung's config, and the
translation from config fields to a factory's keywords is the config's business.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from raylung.config.schema import ModelConfig
from raylung.models import create_model, get_model_entry
from raylung.models.switches import SWITCH_NAMES as SWITCH_FIELDS

__all__ = ["CONFIG_TO_KWARG", "build_model"]

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
