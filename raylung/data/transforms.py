"""Image pipelines: one builder for training and evaluation, augmentation only in training.

Order: stain normalisation (``data.stain_normalize``, every split; done once by the cache when it
is on) -> fit to ``image_size`` (a no-op on cached images) -> geometry -> colour -> degradations
-> normalise -> CxHxW float32 tensor. Each AugmentConfig strength is the probability of one
transform; the magnitudes are fixed here (and tabled in docs/data.md):

==================== ==========================================================================
hflip / vflip        mirror left-right / top-bottom
rotate90             k x 90 degrees, k in 1..3 (a non-square image_size allows only 180 degrees:
                     a quarter turn would change the shape or distort nuclei)
affine               scale 0.9-1.1, translate +-5 %, rotate +-15 deg, shear +-5 deg, reflected border
brightness_contrast  brightness and contrast each +-15 %
gamma                gamma 0.8-1.2
blur                 Gaussian blur, sigma 0.3-1.5 px at the model input (defocus, like "bad" images)
noise                Gaussian noise, std 1-5 % of the range
hed_jitter           H, E, D stain densities scaled by U(0.8, 1.2) and shifted +-0.1 OD;
                     skipped on dark-background (fluorescence) and 1-channel images
intensity_jitter     per-channel gain U(0.85, 1.15) and offset +-3 % of the range (fluorescence)
==================== ==========================================================================

Determinism: albumentations 2.0.8's ``Compose(seed=...)`` gives every child transform the *same*
seed, so two transforms with equal p are applied together or not at all (hflip and vflip would
always coincide). :meth:`ImageTransform.reseed` instead gives each transform its own stream
spawned from one seed, and the Dataset reseeds per (seed, epoch, index).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

import albumentations as A
import cv2
import numpy as np
import torch
from albumentations.core.transforms_interface import BasicTransform, ImageOnlyTransform

from raylung.config import DataConfig
from raylung.data.images import resize_to
from raylung.data.pipeline_plan import normalisation, planned_augmentations
from raylung.data.stain import HEDJitter, IntensityJitter
from raylung.data.stain_normalize import is_stain_normalized, stain_normalizer


class FitToSize(ImageOnlyTransform):
    """Resize to (width, height), optionally keeping the aspect ratio and padding with black."""

    def __init__(self, size: tuple[int, int], keep_aspect: bool = False) -> None:
        super().__init__(p=1.0)
        self.size = tuple(size)
        self.keep_aspect = keep_aspect

    def apply(self, img: np.ndarray, **params: Any) -> np.ndarray:
        return resize_to(img if img.ndim == 3 else img[:, :, None], self.size, self.keep_aspect)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("size", "keep_aspect")


class QuarterTurn(ImageOnlyTransform):
    """Rotate by a random non-zero multiple of 90 degrees; only 180 on non-square images."""

    def get_params(self) -> dict[str, Any]:
        return {"k": self.py_random.randint(1, 3)}

    def apply(self, img: np.ndarray, k: int, **params: Any) -> np.ndarray:
        if img.shape[0] != img.shape[1]:
            k = 2
        return np.ascontiguousarray(np.rot90(img, k))


def named_augmentations(cfg: DataConfig) -> list[tuple[str, BasicTransform]]:
    """(strength field, transform) of every training transform that is built, in pipeline order.

    Which transforms, in which order and with which probability is the plan's
    (:func:`raylung.data.pipeline_plan.planned_augmentations`): the training transform and the
    effective pipeline recorded for a run both follow it.
    """
    return [(name, _MAKERS[name](q)) for name, q in planned_augmentations(cfg)]


# Each training transform, built with probability q; the magnitudes are fixed here.
_MAKERS: dict[str, Callable[[float], BasicTransform]] = {
    "hflip": lambda q: A.HorizontalFlip(p=q),
    "vflip": lambda q: A.VerticalFlip(p=q),
    "rotate90": lambda q: QuarterTurn(p=q),
    "affine": lambda q: A.Affine(
        scale=(0.9, 1.1), translate_percent=(-0.05, 0.05), rotate=(-15, 15), shear=(-5, 5),
        border_mode=cv2.BORDER_REFLECT_101, p=q),
    "hed_jitter": lambda q: HEDJitter(scale=0.2, shift=0.1, p=q),
    "intensity_jitter": lambda q: IntensityJitter(gain=0.15, offset=0.03, p=q),
    "brightness_contrast": lambda q: A.RandomBrightnessContrast(
        brightness_limit=0.15, contrast_limit=0.15, p=q),
    "gamma": lambda q: A.RandomGamma(gamma_limit=(80, 120), p=q),
    "blur": lambda q: A.GaussianBlur(blur_limit=0, sigma_limit=(0.3, 1.5), p=q),
    "noise": lambda q: A.GaussNoise(std_range=(0.01, 0.05), p=q),
}  # fmt: skip


def augmentations(cfg: DataConfig) -> list[BasicTransform]:
    """The training transforms that are built, in pipeline order."""
    return [transform for _, transform in named_augmentations(cfg)]


class ImageTransform:
    """uint8 HxWxC image -> normalised float32 CxHxW tensor (picklable for loader workers)."""

    def __init__(self, cfg: DataConfig, train: bool) -> None:
        self.train = train
        # Outside the Compose: deterministic, and skipped for tiles the cache already normalised.
        self.stain = stain_normalizer(cfg)
        steps: list[BasicTransform] = [FitToSize(cfg.image_size, cfg.keep_aspect)]
        if train:
            steps += augmentations(cfg)
        self.compose = A.Compose(steps, seed=0)
        mean, std = np.asarray(normalisation(cfg), dtype=np.float32)
        # (x / 255 - mean) / std as one multiply-add, per channel, broadcast over H and W
        self._scale = torch.from_numpy(1.0 / (255.0 * std)).view(-1, 1, 1)
        self._offset = torch.from_numpy(-mean / std).view(-1, 1, 1)
        self.reseed(0)

    def reseed(self, *entropy: int) -> None:
        """Give every transform its own random stream derived from ``entropy`` (e.g. seed, epoch, index)."""
        transforms = _flatten(self.compose)
        states = np.random.SeedSequence([int(e) for e in entropy]).generate_state(len(transforms))
        for transform, state in zip(transforms, states, strict=True):
            transform.random_generator = np.random.default_rng(int(state))
            transform.py_random = random.Random(int(state))

    def augment(self, image: np.ndarray) -> np.ndarray:
        """Resize and (in training) augment, still uint8 HxWxC: what the preview shows."""
        if self.stain is not None and not is_stain_normalized(image):
            image = self.stain(image)
        image = np.asarray(image)  # drop the cache's StainNormalizedImage marker
        if image.ndim == 2:
            image = image[:, :, None]
        out = self.compose(image=image)["image"]
        return out if out.ndim == 3 else out[:, :, None]

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        chw = np.ascontiguousarray(self.augment(image).transpose(2, 0, 1))  # uint8: cheap to move
        return torch.from_numpy(chw).to(torch.float32).mul_(self._scale).add_(self._offset)


def _flatten(node: Any) -> list[Any]:
    """The compose and every transform below it (nested composes included), in order."""
    found = [node]
    for child in getattr(node, "transforms", []) or []:
        found += _flatten(child)
    return found


def build_transform(cfg: DataConfig, train: bool) -> ImageTransform:
    """The pipeline for ``cfg``: augmentation only when ``train``; same resize and normalisation."""
    return ImageTransform(cfg, train)


def describe_augmentations(cfg: DataConfig) -> Sequence[tuple[str, float]]:
    """(transform, probability) pairs as built, for reports and the preview title."""
    return [(name, float(transform.p)) for name, transform in named_augmentations(cfg)]
