"""Explain predictions: the model's own spatial attention per stage, and Grad-CAM, per image.

:func:`explain_images` draws one figure per image file (``raylung explain``);
:func:`explain_test_sample` draws a seeded sample of test images that covers true and false
positives and negatives, for the end of a training run. Both write ``explanations.json``.
"""

from raylung.explain.attention import StageAttention, has_spatial_attention, stage_attention
from raylung.explain.explainer import INDEX_FILE, Explainer, Explanation, explain_images, write_index
from raylung.explain.figures import display_image, explanation_figure, save_explanation
from raylung.explain.gradcam import CANCER_LOGIT, gradcam_maps
from raylung.explain.sample import (
    CATEGORIES,
    Category,
    ExplainedSample,
    Pick,
    categorise,
    category_counts,
    explain_test_sample,
    pick_test_sample,
)

__all__ = [
    "CANCER_LOGIT",
    "CATEGORIES",
    "INDEX_FILE",
    "Category",
    "ExplainedSample",
    "Explainer",
    "Explanation",
    "Pick",
    "StageAttention",
    "categorise",
    "category_counts",
    "display_image",
    "explain_images",
    "explain_test_sample",
    "explanation_figure",
    "gradcam_maps",
    "has_spatial_attention",
    "pick_test_sample",
    "save_explanation",
    "stage_attention",
    "write_index",
]
