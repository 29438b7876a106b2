"""timm's ResNet with raylung's model interface, for the baselines (:mod:`raylung.models.baselines`).

Apart from the baselines' factories so that listing the registered models imports no timm.
"""

from __future__ import annotations

from timm.models.resnet import ResNet
from torch import nn

__all__ = ["TimmResNet"]


class TimmResNet(ResNet):
    """timm's ``ResNet`` with raylung's model interface added (no change to its modules)."""

    def gradcam_target_layer(self) -> nn.Module:
        """The module whose output is the last spatial feature map before pooling (Grad-CAM)."""
        return self.layer4
