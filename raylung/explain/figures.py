"""One PNG per explained image: the input, each stage's spatial attention, and Grad-CAM.

The input panel is the tensor the model saw, resized and normalised, with the normalisation
undone for display. Every map is drawn over it at the input's size. Attention maps are
stretched to their own min..max, with the range in the panel title, because a gate that
varies only between 0.48 and 0.52 would otherwise look flat. Grad-CAM is already 0..1.

Like :mod:`raylung.plots`, figures are :class:`matplotlib.figure.Figure` objects rendered by Agg,
never ``pyplot``: nothing opens on screen and no global figure state leaks between images.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

__all__ = ["display_image", "explanation_figure", "save_explanation"]

_DPI = 120
_PANEL_INCHES = 2.4
_MIN_WIDTH_INCHES = 6.0  # a baseline's two panels still fit the title
_OVERLAY_ALPHA = 0.45
_CMAP = "jet"


def display_image(image: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """(H, W, C) floats in 0..1 from a normalised (C, H, W) model input: the image it saw."""
    mean_t = torch.as_tensor(mean, dtype=torch.float32).view(-1, 1, 1)
    std_t = torch.as_tensor(std, dtype=torch.float32).view(-1, 1, 1)
    pixels = image.detach().float().cpu() * std_t + mean_t
    return pixels.clamp_(0.0, 1.0).permute(1, 2, 0).numpy()


def _show(
    ax: Axes,
    image: np.ndarray,
    title: str,
    heat: np.ndarray | None = None,
    value_range: tuple[float, float] | None = None,
) -> None:
    """`image` with `heat` over it, coloured over `value_range` (default: the map's own range)."""
    if image.shape[2] == 1:
        ax.imshow(image[:, :, 0], cmap="gray", vmin=0.0, vmax=1.0)
    else:
        ax.imshow(image)
    if heat is not None:
        if heat.shape != image.shape[:2]:
            raise ValueError(f"map of shape {heat.shape} does not fit an image of {image.shape[:2]}")
        low, high = value_range or (float(heat.min()), float(heat.max()))
        ax.imshow(heat, cmap=_CMAP, alpha=_OVERLAY_ALPHA, vmin=low, vmax=high if high > low else low + 1.0)
    ax.set_title(title, fontsize=8)
    ax.set_axis_off()


def explanation_figure(
    image: np.ndarray,
    attention: Sequence[np.ndarray],
    gradcam: np.ndarray,
    title: str,
    attention_raw: Sequence[np.ndarray] | None = None,
) -> Figure:
    """A row of panels: input, one attention overlay per stage (none for baselines), Grad-CAM.

    Args:
        image: (H, W, C) floats in 0..1, as from :func:`display_image`.
        attention: (H, W) upsampled spatial-attention maps, stage 1 first; empty for baselines.
        gradcam: (H, W) Grad-CAM map in 0..1.
        title: the figure title (probability, label; callers may stamp "synthetic demo data").
        attention_raw: the maps at their own resolution, only to print "h x w" in the titles.
    """
    height, width = image.shape[:2]
    panels = 2 + len(attention)
    title_lines = title.count("\n") + 1
    fig = Figure(
        figsize=(max(panels * _PANEL_INCHES, _MIN_WIDTH_INCHES), _PANEL_INCHES * height / width + 0.5
                 + 0.18 * title_lines),
        layout="constrained",
    )  # fmt: skip
    axes = fig.subplots(1, panels, squeeze=False)[0]
    _show(axes[0], image, f"input {width}x{height}")
    for stage, heat in enumerate(attention, start=1):
        grid = ""
        if attention_raw is not None:
            grid = f" ({attention_raw[stage - 1].shape[1]}x{attention_raw[stage - 1].shape[0]})"
        label = f"stage {stage} attention{grid}\n{heat.min():.3f}..{heat.max():.3f}"
        _show(axes[stage], image, label, heat)
    cam_title = "Grad-CAM (cancer logit)"
    if not np.any(gradcam > 0):
        cam_title += "\nall zero: nothing raises it"
    _show(axes[-1], image, cam_title, gradcam, (0.0, 1.0))
    fig.suptitle(title, fontsize=9)
    return fig


def save_explanation(fig: Figure, path: str | Path) -> Path:
    """Render `fig` to a PNG at `path` (parent folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=_DPI, format="png")
    return path
