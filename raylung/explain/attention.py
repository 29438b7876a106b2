"""The model's own spatial attention, one map per stage, upsampled to the input for overlays.

ResNet-ours gates every bottleneck with a sigmoid map (Kim & Kang 2023, eq. 2);
:func:`raylung.models.attention_maps` captures the map of the last block of each stage. Each is
resized bilinearly with half-pixel centres (``align_corners=False``, the rule OpenCV and the
Grad-CAM package use), so the attention and Grad-CAM panels of a figure share one geometry.
The timm baselines have no spatial attention: :func:`has_spatial_attention` says so up front.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from raylung.models import SpatialAttention, attention_maps

__all__ = ["StageAttention", "has_spatial_attention", "stage_attention"]


@dataclass(frozen=True)
class StageAttention:
    """One stage's spatial-attention maps for a batch of images.

    Args:
        stage: 1..4, the ResNet stage whose last block produced the map.
        raw: (B, h, w) gate values in (0, 1) at the stage's own resolution.
        upsampled: (B, H, W) the same maps resized to the input image.
    """

    stage: int
    raw: np.ndarray
    upsampled: np.ndarray


def has_spatial_attention(model: nn.Module) -> bool:
    """Whether `model` gates with spatial attention (ResNet-ours), so it has maps to show."""
    return any(isinstance(module, SpatialAttention) for module in model.modules())


def stage_attention(model: nn.Module, images: torch.Tensor) -> list[StageAttention]:
    """The spatial-attention map of every stage for `images` (B, C, H, W), raw and upsampled.

    One forward pass without gradients; `model` should be in eval mode (BatchNorm statistics).

    Raises:
        ValueError: `model` has no spatial attention, or `images` is not a 4-D batch.
    """
    if images.ndim != 4:
        raise ValueError(f"expected images of shape (B, C, H, W), got {tuple(images.shape)}")
    size = tuple(images.shape[-2:])
    stages = []
    for index, gate in enumerate(attention_maps(model, images), start=1):
        gate = gate.float()
        upsampled = F.interpolate(gate, size=size, mode="bilinear", align_corners=False)
        stages.append(StageAttention(index, gate[:, 0].cpu().numpy(), upsampled[:, 0].cpu().numpy()))
    return stages
