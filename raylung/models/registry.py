"""Model registry: a name -> factory table, as in timm's ``register_model``.

This module imports no torch: :func:`list_models` is called from the config schema's
validator, so it imports the model modules lazily (which registers them) and only then lists.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

__all__ = ["ModelEntry", "get_model_entry", "list_models", "register_model"]

# Modules whose import registers models; imported on first lookup.
_MODEL_MODULES = ("raylung.models.resnet_ours", "raylung.models.baselines")

_F = TypeVar("_F", bound=Callable[..., Any])


@dataclass(frozen=True)
class ModelEntry:
    """One registered model: its factory and the keyword arguments the factory accepts."""

    name: str
    fn: Callable[..., Any]
    module: str
    kwargs: tuple[str, ...]

    def supports(self, kwarg: str) -> bool:
        return kwarg in self.kwargs


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(fn: _F | None = None, *, accepts: tuple[str, ...] | None = None) -> Any:
    """Register a model factory under its function name (``@register_model`` or
    ``@register_model(accepts=ARGS)``).

    The registry must know which keywords each model supports, to reject the rest with a clear
    error. A factory either lists them in its signature, or takes ``**kwargs`` and names them in
    `accepts` (timm's shape: a few-line factory forwarding ``dict(model_args, **kwargs)`` to the
    class that validates them), so variants never repeat a long signature.
    """

    def register(factory: _F) -> _F:
        name = factory.__name__
        if name in _REGISTRY and _REGISTRY[name].fn is not factory:
            raise ValueError(f"model {name!r} is already registered by {_REGISTRY[name].module}")
        params = list(inspect.signature(factory).parameters.values())
        variadic = any(p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL) for p in params)
        if accepts is None and variadic:
            raise TypeError(f"model factory {name!r} takes **kwargs: name its keywords with accepts=")
        kwargs = tuple(accepts) if accepts is not None else tuple(p.name for p in params)
        _REGISTRY[name] = ModelEntry(name=name, fn=factory, module=factory.__module__, kwargs=kwargs)
        return factory

    return register(fn) if fn is not None else register


def _import_model_modules() -> None:
    for module in _MODEL_MODULES:
        importlib.import_module(module)


def list_models() -> list[str]:
    """Sorted names of every registered model."""
    _import_model_modules()
    return sorted(_REGISTRY)


def get_model_entry(name: str) -> ModelEntry:
    """The registry entry of `name`; ValueError naming the known models if there is none."""
    _import_model_modules()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown model {name!r}; registered models: {', '.join(sorted(_REGISTRY))}"
        ) from None
