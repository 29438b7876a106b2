"""Rendering of synthetic DAPI-like nuclei images for the demo dataset.

A dark field with blue-dominant nuclei in a 3-channel image, like the paper's DAPI data. Each
image draws a hidden *severity* from overlapping distributions (non-cancer ~ N(0.3, 0.14),
cancer ~ N(0.7, 0.14)); severity drives nucleus size, pleomorphism, outline irregularity,
crowding and brightness (hyperchromasia). Because the distributions overlap, even a perfect
reader of severity is right only about 92 % of the time: learnable, never trivially perfect.
"Bad" images are defocused, noisier and dimmer, as in the paper's bad subclasses.
"""

from __future__ import annotations

import cv2
import numpy as np

SEVERITY_MEAN = {0: 0.3, 1: 0.7}
SEVERITY_STD = 0.14
# Blue carries the stain; a little bleeds into green and red as in a real DAPI RGB capture.
CHANNEL_MIX = np.array([0.08, 0.22, 1.0], dtype=np.float32)  # R, G, B


def render_demo_image(rng: np.random.Generator, label: int, bad: bool, size: tuple[int, int]) -> np.ndarray:
    """One uint8 HxWx3 RGB image of size (width, height)."""
    width, height = size
    unit = np.sqrt(width * height / (160 * 120))  # lengths scale with the image
    severity = float(np.clip(rng.normal(SEVERITY_MEAN[label], SEVERITY_STD), 0.0, 1.0))
    nuclei = np.zeros((height, width), dtype=np.float32)
    count = rng.poisson((12 + 22 * severity) * unit**2) + 3
    mean_radius = (3.2 + 3.2 * severity) * unit
    for _ in range(count):
        radius = max(1.5, mean_radius * rng.lognormal(0.0, 0.08 + 0.22 * severity))
        outline = _outline(rng, rng.uniform(0, width), rng.uniform(0, height), radius, severity)
        brightness = np.clip(rng.normal(0.5 + 0.35 * severity, 0.1), 0.2, 1.0)
        mask = np.zeros_like(nuclei)
        cv2.fillPoly(mask, [outline], 1.0, lineType=cv2.LINE_AA)
        nuclei = np.maximum(nuclei, mask * brightness)
    chromatin = cv2.GaussianBlur(rng.normal(1.0, 0.25, nuclei.shape).astype(np.float32), (0, 0), 0.8 * unit)
    signal = nuclei * np.clip(chromatin, 0.3, 1.6)
    signal = cv2.GaussianBlur(signal, (0, 0), 0.6 * unit)
    noise_std = 0.025
    if bad:
        signal = cv2.GaussianBlur(signal, (0, 0), rng.uniform(1.5, 3.0) * unit) * rng.uniform(0.55, 0.8)
        noise_std = rng.uniform(0.04, 0.07)
    background = 0.03 + 0.02 * _illumination(rng, height, width)
    image = signal[:, :, None] * CHANNEL_MIX + background[:, :, None]
    image += rng.normal(0.0, noise_std, image.shape).astype(np.float32)
    return np.clip(image * 255 + 0.5, 0, 255).astype(np.uint8)


def _outline(rng: np.random.Generator, x: float, y: float, radius: float, severity: float) -> np.ndarray:
    """A closed polygon: an ellipse whose radius wobbles more as severity grows."""
    vertices = 14
    angles = np.linspace(0, 2 * np.pi, vertices, endpoint=False)
    wobble = 1 + rng.normal(0, 0.04 + 0.22 * severity, vertices)
    wobble = (wobble + np.roll(wobble, 1) + np.roll(wobble, -1)) / 3  # lumpy, not spiky
    elongation = rng.uniform(1.0, 1.25 + 0.35 * severity)
    tilt = rng.uniform(0, np.pi)
    dx = radius * wobble * np.cos(angles) * elongation
    dy = radius * wobble * np.sin(angles) / elongation
    px = x + dx * np.cos(tilt) - dy * np.sin(tilt)
    py = y + dx * np.sin(tilt) + dy * np.cos(tilt)
    return np.stack([px, py], axis=1).round().astype(np.int32)


def _illumination(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A smooth, uneven field in 0..1 (vignetting and stray light)."""
    coarse = rng.uniform(0, 1, (3, 4)).astype(np.float32)
    return cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC).clip(0, 1)
