"""Where the tissue is: Otsu's threshold on the HSV saturation of a slide thumbnail.

Why saturation: glass and background are bright *and grey* (low saturation) whatever the
scanner's white balance, while stained tissue (H&E pink and purple, IHC brown) is coloured.
Saturation separates the two more robustly than brightness, which also drops for dust, pen
marks' edges and out-of-focus shadows. Otsu picks the cut between the two modes per slide, so
stain strength and scanner differences need no hand-tuned constant; a floor
(:data:`MIN_SATURATION`) stops Otsu from splitting pure background noise when a slide holds
almost no tissue. A small blur first merges nuclei and stroma into one region, and the mask
is computed once per slide on a thumbnail (fast; tiles are far larger than its pixels).
"""

from __future__ import annotations

import cv2
import numpy as np

MIN_SATURATION = 20  # of 255: below this a pixel is background whatever Otsu says


def tissue_mask(thumbnail: np.ndarray, min_saturation: int = MIN_SATURATION) -> np.ndarray:
    """A boolean (H, W) mask of tissue pixels in an RGB uint8 thumbnail."""
    if thumbnail.ndim != 3 or thumbnail.shape[2] != 3:
        raise ValueError(f"thumbnail must be (H, W, 3) RGB, got shape {thumbnail.shape}")
    saturation = cv2.cvtColor(np.ascontiguousarray(thumbnail, dtype=np.uint8), cv2.COLOR_RGB2HSV)[:, :, 1]
    saturation = cv2.GaussianBlur(saturation, (5, 5), 0)
    cut, _ = cv2.threshold(saturation, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return saturation > max(cut, min_saturation)


def tissue_fraction(mask: np.ndarray, scale: float, boxes: np.ndarray) -> np.ndarray:
    """The tissue fraction of each level-0 box (x, y, width, height) on a mask `scale` times smaller.

    Uses an integral image, so a slide's thousands of tiles cost one pass over the mask.
    """
    integral = cv2.integral(mask.astype(np.uint8))  # (H+1, W+1)
    height, width = mask.shape
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    x0 = np.clip(np.floor(boxes[:, 0] / scale), 0, width).astype(int)
    y0 = np.clip(np.floor(boxes[:, 1] / scale), 0, height).astype(int)
    x1 = np.clip(np.ceil((boxes[:, 0] + boxes[:, 2]) / scale), 0, width).astype(int)
    y1 = np.clip(np.ceil((boxes[:, 1] + boxes[:, 3]) / scale), 0, height).astype(int)
    inside = integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]
    area = np.maximum((x1 - x0) * (y1 - y0), 1)
    return inside / area
