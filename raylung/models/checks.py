"""Argument checks every registered model shares, in one place (ResNet-ours and the baselines)."""

from __future__ import annotations


def check_common_args(in_chans: int, num_classes: int, drop_rate: float, drop_path_rate: float) -> None:
    """ValueError naming the argument for an impossible input/head/regularisation setting."""
    if in_chans < 1:
        raise ValueError(f"in_chans must be >= 1, got {in_chans}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    for label, rate in (("drop_rate", drop_rate), ("drop_path_rate", drop_path_rate)):
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"{label} must be in [0, 1), got {rate}")
