"""Spelling-tolerant names for splits, paper subclasses and binary labels.

Folder names arrive as "Good Cancer", "good-cancer", "GoodNonCancer" or "VAL"; everything is
compared on a *compact* key (lower case, letters and digits only) so one table covers them all.
"""

from __future__ import annotations

import re

SPLITS: tuple[str, ...] = ("train", "validation", "test")
LABEL_NAMES: dict[int, str] = {1: "cancer", 0: "non_cancer"}

_SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "trn": "train",
    "validation": "validation",
    "val": "validation",
    "valid": "validation",
    "dev": "validation",
    "test": "test",
    "testing": "test",
    "tst": "test",
}
# Table 1 of Kim & Kang (2023): four subclasses, two per binary label.
PAPER_SUBCLASSES: dict[str, tuple[str, int]] = {
    "goodcancer": ("good_cancer", 1),
    "badcancer": ("bad_cancer", 1),
    "goodnoncancer": ("good_non_cancer", 0),
    "badnoncancer": ("bad_non_cancer", 0),
}
_BINARY_ALIASES = {
    "cancer": 1,
    "noncancer": 0,
    "1": 1,
    "0": 0,
}


def compact(name: str) -> str:
    """Lower-case letters and digits only: 'Good Non-Cancer' -> 'goodnoncancer'."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


def snake(name: str) -> str:
    """A readable canonical form for display: 'GoodNonCancer' -> 'good_non_cancer'."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name.strip())
    return re.sub(r"[^a-z0-9]+", "_", spaced.lower()).strip("_")


def split_name(name: str) -> str | None:
    """The canonical split ('train'/'validation'/'test') a folder or CSV value names, if any."""
    return _SPLIT_ALIASES.get(compact(name))


def paper_subclass(name: str) -> tuple[str, int] | None:
    """(subclass, label) for a Table 1 folder name in any spelling, else None."""
    return PAPER_SUBCLASSES.get(compact(name))


def binary_label(name: str) -> int | None:
    """1/0 for 'cancer'/'non_cancer'/'1'/'0' in any spelling, else None."""
    value = name.strip()
    if value in ("1.0", "0.0"):
        value = value[0]
    return _BINARY_ALIASES.get(compact(value))


def lookup_label_map(label_map: dict[str, str] | None, name: str) -> int | None:
    """Map a folder or manifest value through the config's label map, spelling-tolerantly."""
    if not label_map:
        return None
    wanted = compact(name)
    for key, label in label_map.items():
        if compact(key) == wanted:
            return 1 if label == "cancer" else 0
    return None


def resolve_label(label_map: dict[str, str] | None, name: str) -> int | None:
    """The label map first (it may rename anything), then the self-describing binary names."""
    mapped = lookup_label_map(label_map, name)
    if mapped is not None:
        return mapped
    return binary_label(name)
