"""Colour augmentations for microscopy: H&E stain jitter and fluorescence intensity jitter.

HED jitter follows Tellez et al. (2018, "Whole-slide mitosis detection in H&E breast
histology using PHH3 as a reference to train distilled stain-invariant convolutional networks",
https://arxiv.org/abs/1808.05896): unmix RGB into haematoxylin, eosin and DAB optical densities
with the Ruifrok & Johnston (2001) matrix, scale and shift each stain, and mix back. It is
numpy only (the same matrices as ``skimage.color.rgb2hed``), so raylung needs no scikit-image.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from albumentations.core.transforms_interface import ImageOnlyTransform

# Ruifrok & Johnston (2001), rows: haematoxylin, eosin, DAB optical-density vectors.
RGB_FROM_HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], dtype=np.float32)
HED_FROM_RGB = np.linalg.inv(RGB_FROM_HED).astype(np.float32)
# Beer-Lambert unmixing needs transmitted light: a dark-background (fluorescence) image has
# no stain to separate, so HED jitter leaves images darker than this mean unchanged.
BRIGHTFIELD_MIN_MEAN = 100.0


# Optical density of each uint8 level, -ln((I + 1) / 256): a lookup instead of a log per pixel.
_DENSITY = -np.log((np.arange(256, dtype=np.float32) + 1.0) / 256.0)


def rgb_to_hed(rgb: np.ndarray) -> np.ndarray:
    """uint8 RGB -> float32 stain densities (natural-log optical density units)."""
    return _DENSITY[rgb] @ HED_FROM_RGB


def hed_to_rgb(hed: np.ndarray) -> np.ndarray:
    """Inverse of :func:`rgb_to_hed`, rounded and clipped to uint8."""
    rgb = 256.0 * np.exp(-(hed @ RGB_FROM_HED)) - 1.0
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)


class HEDJitter(ImageOnlyTransform):
    """Random per-stain scale and shift in HED space (brightfield RGB only).

    Args:
        scale: each stain's density is multiplied by U(1 - scale, 1 + scale).
        shift: and shifted by U(-shift, shift) optical-density units.
        p: probability of applying.
    """

    def __init__(self, scale: float = 0.2, shift: float = 0.1, p: float = 0.5) -> None:
        super().__init__(p=p)
        self.scale = scale
        self.shift = shift

    def get_params(self) -> dict[str, Any]:
        return {
            "alpha": self.random_generator.uniform(1 - self.scale, 1 + self.scale, 3).astype(np.float32),
            "beta": self.random_generator.uniform(-self.shift, self.shift, 3).astype(np.float32),
        }

    def apply(self, img: np.ndarray, alpha: np.ndarray, beta: np.ndarray, **params: Any) -> np.ndarray:
        if img.ndim != 3 or img.shape[2] != 3 or img.mean() < BRIGHTFIELD_MIN_MEAN:
            return img
        return hed_to_rgb(rgb_to_hed(img) * alpha + beta)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("scale", "shift")


class IntensityJitter(ImageOnlyTransform):
    """Random per-channel gain and offset, for fluorescence (any number of channels).

    Args:
        gain: each channel is multiplied by U(1 - gain, 1 + gain).
        offset: then shifted by U(-offset, offset) of the full range.
        p: probability of applying.
    """

    def __init__(self, gain: float = 0.15, offset: float = 0.03, p: float = 0.5) -> None:
        super().__init__(p=p)
        self.gain = gain
        self.offset = offset

    def get_params(self) -> dict[str, Any]:
        # Drawn for up to 4 channels; apply() uses as many as the image has.
        return {
            "gains": self.random_generator.uniform(1 - self.gain, 1 + self.gain, 4).astype(np.float32),
            "offsets": self.random_generator.uniform(-self.offset, self.offset, 4).astype(np.float32) * 255,
        }

    def apply(self, img: np.ndarray, gains: np.ndarray, offsets: np.ndarray, **params: Any) -> np.ndarray:
        channels = img.shape[2] if img.ndim == 3 else 1
        out = img.astype(np.float32) * gains[:channels] + offsets[:channels]
        return np.clip(out + 0.5, 0, 255).astype(np.uint8).reshape(img.shape)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("gain", "offset")
