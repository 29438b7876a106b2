"""Models: ResNet-ours of Kim & Kang (2023) and the timm baselines of its Table 3.

``create_model("resnet_ours50", eca_k=5)`` and ``create_model("resnet50d")`` look alike;
:func:`raylung.config.model_build.build_model` builds from the validated config.
ResNet-ours is registered with timm too (``timm.create_model("resnet_ours50")``). See docs/model.md.
"""

import sys

from raylung.models.build import create_model, gradcam_target_layer
from raylung.models.complexity import PAPER_INPUT_SHAPE, count_parameters, gflops
from raylung.models.layers import EcaModule, FReLU, SpatialAttention
from raylung.models.registry import ModelEntry, get_model_entry, list_models, register_model
from raylung.models.resnet_ours import PreActBottleneck, ResNetOurs, Stem, Switches, attention_maps
from raylung.models.timm_entrypoints import register_with_timm

if "timm" in sys.modules:  # else `import raylung` registers them when timm is imported
    register_with_timm()

__all__ = [
    "PAPER_INPUT_SHAPE",
    "EcaModule",
    "FReLU",
    "ModelEntry",
    "PreActBottleneck",
    "ResNetOurs",
    "SpatialAttention",
    "Stem",
    "Switches",
    "attention_maps",
    "count_parameters",
    "create_model",
    "get_model_entry",
    "gflops",
    "gradcam_target_layer",
    "list_models",
    "register_model",
]
