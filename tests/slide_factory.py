"""Synthetic whole slides for the slide tests: small pyramidal TIFFs written with tifffile.

A slide is 2000x1500 px of near-white, grey glass with one rectangle of tissue-like texture
(blurred noise in H&E pink). Where asked, part of the tissue is drawn in a strongly coloured
"cancer" texture (dark blue-violet), trivially separable so a tiny model learns it in seconds.
Levels 1/2x/4x are stored as tiled pages (OpenSlide's generic-TIFF layout; tifffile reads it
too) with the microns per pixel in the TIFF resolution tags.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import tifffile

SIZE = (2000, 1500)  # (width, height)
TISSUE = (400, 300, 1600, 1200)  # x0, y0, x1, y1: the tissue rectangle, level 0
MPP = 0.25
PINK = np.array([225, 140, 190], np.float32)
VIOLET = np.array([60, 30, 150], np.float32)


def texture(height: int, width: int, colour: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Blurred noise around `colour`: nuclei-and-stroma-like blotches, never flat."""
    noise = cv2.GaussianBlur(rng.standard_normal((height, width), dtype=np.float32), (0, 0), 3)
    noise *= 25.0 / (noise.std() + 1e-6)
    return np.clip(colour + noise[..., None], 0, 255).astype(np.uint8)


def slide_image(cancer: tuple[int, int, int, int] | None = None, seed: int = 0) -> np.ndarray:
    """The level-0 RGB image; `cancer` (x0, y0, x1, y1) is drawn violet inside the tissue."""
    rng = np.random.default_rng(seed)
    width, height = SIZE
    image = np.repeat(rng.integers(236, 249, (height, width, 1), dtype=np.uint8), 3, axis=2)
    x0, y0, x1, y1 = TISSUE
    image[y0:y1, x0:x1] = texture(y1 - y0, x1 - x0, PINK, rng)
    if cancer is not None:
        cx0, cy0, cx1, cy1 = cancer
        image[cy0:cy1, cx0:cx1] = texture(cy1 - cy0, cx1 - cx0, VIOLET, rng)
    return image


def write_slide(path: Path, image: np.ndarray, mpp: float = MPP, levels: int = 3) -> Path:
    """A tiled pyramidal TIFF (levels at 1, 2, 4, ... x) stating `mpp` in its resolution tags."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tifffile.TiffWriter(path) as tif:
        for level in range(levels):
            scale = 2**level
            data = (
                image
                if level == 0
                else cv2.resize(
                    image, (image.shape[1] // scale, image.shape[0] // scale), interpolation=cv2.INTER_AREA
                )
            )
            per_cm = 1e4 / (mpp * scale)
            tif.write(
                data, tile=(256, 256), photometric="rgb",
                resolution=(per_cm, per_cm), resolutionunit="CENTIMETER", subfiletype=1 if level else 0,
            )  # fmt: skip
    return path


def make_slides(folder: Path, cancer_slides: int = 1, normal_slides: int = 1) -> list[Path]:
    """Cancer slides (left half of the tissue violet) then normal ones (all pink)."""
    x0, y0, x1, y1 = TISSUE
    paths = []
    for index in range(cancer_slides):
        image = slide_image(cancer=(x0, y0, (x0 + x1) // 2, y1), seed=index)
        paths.append(write_slide(folder / f"cancer_{index}.tif", image))
    for index in range(normal_slides):
        paths.append(write_slide(folder / f"normal_{index}.tif", slide_image(seed=100 + index)))
    return paths
