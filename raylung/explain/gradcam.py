"""Grad-CAM heat maps of the cancer logit, computed by the maintained ``grad-cam`` package.

Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based
Localization", ICCV 2017, https://arxiv.org/abs/1610.02391; implementation
https://github.com/jacobgil/pytorch-grad-cam (``pytorch_grad_cam``), not re-written here.

raylung's binary models return one logit per image, shape (B, 1). The package hands each
target one image's output, shape (1,), and ``ClassifierOutputTarget(0)`` takes its element 0:
the cancer logit itself. The map therefore shows where evidence *for cancer* lies, whatever
the prediction; a confidently non-cancer image may get an all-zero map (nothing raises the
logit). The target layer is the model's own :func:`~raylung.models.gradcam_target_layer`.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from raylung.extras import require_extra
from raylung.models import gradcam_target_layer

__all__ = ["CANCER_LOGIT", "gradcam_maps"]

CANCER_LOGIT = 0  # index of the single logit; sigmoid(logit) = P(cancer)


def gradcam_maps(model: nn.Module, images: torch.Tensor) -> np.ndarray:
    """(B, H, W) Grad-CAM of the cancer logit for `images` (B, C, H, W), each map scaled to 0..1.

    The package resizes each map bilinearly to the input's H x W. Parameter gradients that
    the backward pass leaves behind are released afterwards.

    Raises:
        ValueError: `images` is not a 4-D batch, or `model` names no Grad-CAM target layer.
    """
    if images.ndim != 4:
        raise ValueError(f"expected images of shape (B, C, H, W), got {tuple(images.shape)}")
    require_extra("explain", "Grad-CAM")
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    cam = GradCAM(model=model, target_layers=[gradcam_target_layer(model)])
    targets = [ClassifierOutputTarget(CANCER_LOGIT) for _ in range(len(images))]
    try:
        with torch.enable_grad():  # callers may sit inside no_grad(); Grad-CAM needs a backward
            maps = cam(input_tensor=images, targets=targets)
    finally:
        # Not `with GradCAM(...)`: its __exit__ prints and swallows an IndexError.
        cam.activations_and_grads.release()
        model.zero_grad(set_to_none=True)
    return np.asarray(maps, dtype=np.float32)
