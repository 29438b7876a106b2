"""Optional features and the extra that installs each.

A core ``pip install raylung`` tunes, trains, evaluates and predicts. ONNX, Grad-CAM and
OpenSlide are heavy and not every lab wants them, so they come with extras; a feature whose
extra is missing stops with one line naming the ``pip install`` that brings it, never an
``ImportError`` traceback from deep inside a run.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from raylung.errors import RaylungError


@dataclass(frozen=True)
class Extra:
    name: str
    modules: tuple[str, ...]  # import names, checked without importing them
    gives: str  # what it adds, for the message


EXTRAS: dict[str, Extra] = {
    extra.name: extra
    for extra in (
        Extra("export", ("onnx", "onnxscript", "onnxruntime"), "ONNX export and the ONNX runtime"),
        Extra("explain", ("pytorch_grad_cam",), "Grad-CAM explanations"),
        Extra("wsi", ("openslide",), "OpenSlide for SVS, NDPI, MRXS and other slide formats"),
    )
}


class MissingExtraError(RaylungError):
    """A feature was asked for whose optional dependencies are not installed."""


def missing_modules(name: str) -> list[str]:
    """The import names of extra `name` that this environment lacks."""
    return [module for module in EXTRAS[name].modules if importlib.util.find_spec(module) is None]


def has_extra(name: str) -> bool:
    return not missing_modules(name)


def install_hint(name: str) -> str:
    return f"pip install 'raylung[{name}]'"


def require_extra(name: str, feature: str) -> None:
    """Raise one clear line when `feature` needs extra `name` and it is not installed."""
    missing = missing_modules(name)
    if missing:
        raise MissingExtraError(
            f"{feature} needs the '{name}' extra ({EXTRAS[name].gives}; missing: "
            f"{', '.join(missing)}): {install_hint(name)}"
        )
