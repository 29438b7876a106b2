"""Data for raylung: discovery of three layouts, leak-free splits, decoding, augmentation,
an on-disk resized cache, the torch Dataset, checks and the synthetic demo set.

Data flows one way: ``DataConfig`` -> :func:`discover` / :func:`resolve_splits` -> a
:class:`SplitSet` of :class:`Sample` -> :class:`LungDataset` (with :func:`build_transform`).

The dataset, the transforms and the preview are imported on first use: they need albumentations
and torch, which a process that only resolves splits or records a pipeline (a Tune trial's
actor) should not pay for.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from raylung.data.cache import ImageCache, cache_root
from raylung.data.check import CheckReport, check_splits
from raylung.data.demo import ensure_demo_data, is_synthetic, make_demo_dataset
from raylung.data.images import UnreadableImageError, load_image
from raylung.data.layouts import Discovery, detect_layout, discover_all
from raylung.data.policies import POLICIES, resolve_strengths
from raylung.data.samples import Sample, SplitSet
from raylung.data.splits import discover, grouped_split, resolve_splits

if TYPE_CHECKING:
    from raylung.data.dataset import LungDataset, worker_init_fn
    from raylung.data.preview import make_preview
    from raylung.data.transforms import build_transform

_LAZY = {
    "LungDataset": "raylung.data.dataset",
    "worker_init_fn": "raylung.data.dataset",
    "make_preview": "raylung.data.preview",
    "build_transform": "raylung.data.transforms",
}

__all__ = [
    "POLICIES",
    "CheckReport",
    "Discovery",
    "ImageCache",
    "LungDataset",
    "Sample",
    "SplitSet",
    "UnreadableImageError",
    "build_transform",
    "cache_root",
    "check_splits",
    "detect_layout",
    "discover",
    "discover_all",
    "ensure_demo_data",
    "grouped_split",
    "is_synthetic",
    "load_image",
    "make_demo_dataset",
    "make_preview",
    "resolve_splits",
    "resolve_strengths",
    "worker_init_fn",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
