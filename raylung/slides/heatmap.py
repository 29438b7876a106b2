"""A heatmap of P(cancer) per tile drawn over the slide thumbnail.

Each tile's probability paints its box on a thumbnail-sized grid (NaN where no tile was
scored: background, or too little tissue), shown with a fixed 0..1 colour scale so heatmaps of
different slides compare, over the thumbnail (in grey) at partial opacity so the tissue stays
visible: red is cancer, blue is not.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def probability_grid(
    boxes: np.ndarray, probabilities: np.ndarray, shape: tuple[int, int], scale: float
) -> np.ndarray:
    """A (H, W) float grid on the thumbnail (`scale` level-0 px per pixel); NaN where no tile lies."""
    grid = np.full(shape, np.nan, dtype=np.float32)
    for (x, y, w, h), prob in zip(np.asarray(boxes).reshape(-1, 4), np.asarray(probabilities), strict=True):
        x0, y0 = int(x / scale), int(y / scale)
        x1, y1 = max(int(np.ceil((x + w) / scale)), x0 + 1), max(int(np.ceil((y + h) / scale)), y0 + 1)
        grid[y0:y1, x0:x1] = prob
    return grid


def write_heatmap(
    path: str | Path,
    thumbnail: np.ndarray,
    scale: float,
    boxes: np.ndarray,
    probabilities: np.ndarray,
    title: str = "",
) -> Path:
    """Save the thumbnail with the tiles' P(cancer) over it (PNG), and return the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    grid = probability_grid(boxes, probabilities, thumbnail.shape[:2], scale)
    height, width = thumbnail.shape[:2]
    figure, axis = plt.subplots(figsize=(8, 8 * height / width + 0.6), dpi=100)
    # The slide in grey, so the overlay's colours read as probabilities rather than mixing with
    # the stain's (a pale "high" over dark violet tissue would look grey).
    axis.imshow(np.asarray(thumbnail, dtype=np.float32)[..., :3].mean(axis=2), cmap="gray", vmin=0, vmax=255)
    shown = axis.imshow(np.ma.masked_invalid(grid), cmap="RdYlBu_r", vmin=0.0, vmax=1.0, alpha=0.6)
    figure.colorbar(shown, ax=axis, fraction=0.046, pad=0.02, label="P(cancer), calibrated")
    axis.set_title(title, fontsize=10)
    axis.set_axis_off()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path
