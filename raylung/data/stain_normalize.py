"""Stain normalisation of H&E brightfield tiles: Macenko and Reinhard, fitted once on a reference.

Scanners, stain batches and staining protocols shift the colours of H&E slides; normalisation
maps every tile's colours onto one reference tile's before anything else sees it (unlike HED
jitter in :mod:`raylung.data.stain`, which *adds* colour variation during training).

* **Macenko** et al. (2009), "A method for normalizing histology slides for quantitative
  analysis", ISBI, https://doi.org/10.1109/ISBI.2009.5193250: RGB -> optical density (OD);
  drop near-transparent pixels (OD below ``MACENKO_BETA`` in any channel; by OD norm when a
  saturated channel would drop them all); project the rest on
  the plane of the two largest eigenvectors of their OD covariance; the stain vectors are the
  directions at the ``MACENKO_ALPHA`` and ``100 - MACENKO_ALPHA`` angle percentiles in that plane
  (haematoxylin: the one with the larger red OD); concentrations by least squares; each stain's
  concentrations are scaled so their 99th percentile matches the reference's, and the image is
  rebuilt with the reference's stain vectors.
* **Reinhard** et al. (2001), "Color transfer between images", IEEE CG&A 21(5),
  https://doi.org/10.1109/38.946629: per-channel mean and standard deviation matching. The
  paper uses l-alpha-beta; raylung uses CIELAB (OpenCV's float conversion, L in 0..100), as
  most histology toolkits do: it decorrelates the channels about as well and is one call.

Plain numpy (+ OpenCV for LAB), no new dependency: torchstain (PyPI) implements the same two
methods, but raylung only needs a few dozen lines and needs one thing it does not do: ignore
the black padding ``keep_aspect`` adds (pixels with every channel 0 are excluded from every
statistic and left unchanged). OD uses the same ``-ln((I + 1) / 256)`` as the HED jitter.

The reference: ``data.stain_reference`` when set, else the first image of the training split
by path order (the full training split, not the ``train_fraction`` subsample, so a data-
efficiency sweep keeps one reference). It is loaded like every tile (``load_image`` at
``image_size``) and fitted once per process per (method, reference file and its mtime, size),
so every loader worker and every trial of a config applies exactly the same mapping.
Normalisation needs three channels: ``in_chans: 1`` with a method is a config error.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from raylung.config import DataConfig
from raylung.data.images import load_image
from raylung.errors import DataError

MACENKO_BETA = 0.15  # OD below this in any channel: (nearly) transparent, no stain to estimate
MACENKO_ALPHA = 1.0  # angle percentile of the extreme stain directions (robust min/max)
MAX_CONCENTRATION_PERCENTILE = 99.0
MIN_TISSUE_PIXELS = 64  # fewer stained pixels than this: no stable estimate, the tile is left as is

_DENSITY = -np.log((np.arange(256, dtype=np.float64) + 1.0) / 256.0)


@dataclass(frozen=True)
class StainNormalizer:
    """A fitted normaliser: call it on a uint8 HxWx3 RGB image (picklable for loader workers).

    Args:
        method: ``macenko`` or ``reinhard``.
        reference: the reference file it was fitted on (for records and the cache key).
        stats: Macenko: the 3x2 stain matrix (haematoxylin, eosin columns) stacked over the two
            reference max concentrations (a 4x2 array); Reinhard: LAB mean over LAB std (2x3).
    """

    method: str
    reference: str
    stats: np.ndarray

    def __call__(self, image: np.ndarray) -> np.ndarray:
        if image.ndim != 3 or image.shape[2] != 3:
            return image  # grey never reaches here (config error); stay a no-op for safety
        if self.method == "macenko":
            return macenko_normalize(image, self.stats[:3], self.stats[3])
        return reinhard_normalize(image, self.stats[0], self.stats[1])

    @property
    def identity(self) -> list[str]:
        """What makes two normalisers equal: method, reference and a hash of the fitted numbers."""
        digest = hashlib.sha1(np.round(self.stats, 6).astype(np.float64).tobytes()).hexdigest()[:16]
        return [self.method, self.reference, digest]


class StainNormalizedImage(np.ndarray):
    """A tile the image cache already normalised: :class:`ImageTransform` must not do it twice."""


def is_stain_normalized(image: np.ndarray) -> bool:
    return isinstance(image, StainNormalizedImage)


def _valid(image: np.ndarray) -> np.ndarray:
    """Flat mask of pixels that are not ``keep_aspect`` padding (every channel exactly 0)."""
    return image.reshape(-1, 3).max(axis=1) > 0


def optical_density(image: np.ndarray) -> np.ndarray:
    """uint8 HxWx3 -> float64 (H*W)x3 optical densities, ``-ln((I + 1) / 256)``."""
    return _DENSITY[image.reshape(-1, 3)]


def macenko_stains(image: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(3x2 unit stain vectors H, E; their 99th-percentile concentrations), None without tissue."""
    valid = _valid(image)
    od = optical_density(image)[valid]
    tissue = od[(od >= MACENKO_BETA).all(axis=1)]
    if len(tissue) < MIN_TISSUE_PIXELS:
        # A saturated channel (a few LC25000 tiles have blue at 255: OD 0 everywhere) empties the
        # per-channel test; the OD norm still tells stained from transparent.
        tissue = od[np.linalg.norm(od, axis=1) >= MACENKO_BETA]
    if len(tissue) < MIN_TISSUE_PIXELS:
        return None
    _, vectors = np.linalg.eigh(np.cov(tissue, rowvar=False))
    plane = vectors[:, [2, 1]]  # the two largest eigenvalues; eigh sorts ascending
    plane *= np.where(plane.sum(axis=0) < 0, -1.0, 1.0)  # eigenvectors' sign is arbitrary: point into OD > 0
    projected = tissue @ plane
    angles = np.arctan2(projected[:, 1], projected[:, 0])
    low, high = np.percentile(angles, [MACENKO_ALPHA, 100.0 - MACENKO_ALPHA])
    v_low = plane @ np.array([np.cos(low), np.sin(low)])
    v_high = plane @ np.array([np.cos(high), np.sin(high)])
    # haematoxylin absorbs more red than eosin does: it is the vector with the larger R component
    stains = np.stack([v_low, v_high] if v_low[0] > v_high[0] else [v_high, v_low], axis=1)
    stains /= np.linalg.norm(stains, axis=0, keepdims=True)
    concentrations = np.linalg.pinv(stains) @ od.T
    max_conc = np.percentile(concentrations, MAX_CONCENTRATION_PERCENTILE, axis=1)
    return stains, np.maximum(max_conc, 1e-6)


def macenko_normalize(image: np.ndarray, ref_stains: np.ndarray, ref_max: np.ndarray) -> np.ndarray:
    """Rebuild ``image`` with the reference's stain vectors and concentration scale."""
    fitted = macenko_stains(image)
    if fitted is None:
        return image
    stains, max_conc = fitted
    valid = _valid(image)
    concentrations = np.linalg.pinv(stains) @ optical_density(image)[valid].T
    concentrations *= (ref_max / max_conc)[:, None]
    rgb = 256.0 * np.exp(-(ref_stains @ concentrations).T) - 1.0
    out = image.reshape(-1, 3).copy()
    out[valid] = np.clip(rgb + 0.5, 0, 255).astype(np.uint8)
    return out.reshape(image.shape)


def _lab(image: np.ndarray) -> np.ndarray:
    """uint8 RGB -> float32 CIELAB (L 0..100, a and b about -128..127), HxWx3."""
    return cv2.cvtColor(image.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)


def reinhard_stats(image: np.ndarray) -> np.ndarray:
    """2x3: LAB mean over LAB standard deviation of the non-padding pixels."""
    lab = _lab(image).reshape(-1, 3)[_valid(image)].astype(np.float64)
    if len(lab) == 0:
        return np.array([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    return np.stack([lab.mean(axis=0), lab.std(axis=0)])


def reinhard_normalize(image: np.ndarray, ref_mean: np.ndarray, ref_std: np.ndarray) -> np.ndarray:
    """Shift and scale each LAB channel to the reference's mean and standard deviation."""
    valid = _valid(image)
    if not valid.any():
        return image
    mean, std = reinhard_stats(image)
    lab = _lab(image).reshape(-1, 3)
    matched = (lab - mean) * (ref_std / np.maximum(std, 1e-6)) + ref_mean
    rgb = cv2.cvtColor(matched.astype(np.float32).reshape(image.shape), cv2.COLOR_LAB2RGB)
    out = np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8).reshape(-1, 3)
    out[~valid] = image.reshape(-1, 3)[~valid]
    return out.reshape(image.shape)


def fit(image: np.ndarray, method: str, reference: str = "") -> StainNormalizer:
    """Fit ``method`` on a uint8 RGB reference tile; a tile with no stain is a DataError."""
    if method == "reinhard":
        return StainNormalizer(method, reference, reinhard_stats(image))
    if method != "macenko":
        raise ValueError(f"unknown stain normalisation {method!r}; use none, macenko or reinhard")
    fitted = macenko_stains(image)
    if fitted is None:
        raise DataError(
            f"stain reference {reference or '(array)'} has fewer than {MIN_TISSUE_PIXELS} stained "
            "pixels: choose a tile with tissue (data.stain_reference)"
        )
    return StainNormalizer(method, reference, np.vstack([fitted[0], fitted[1][None, :]]))


def default_reference(cfg: DataConfig) -> Path:
    """The first image of the full training split by path order (see the module docstring)."""
    from raylung.data.splits import resolve_splits

    try:
        train = resolve_splits(cfg).get("train", [])
    except DataError as exc:
        raise DataError(
            f"data.stain_reference is null, so the reference is drawn from the training split, "
            f"which cannot be read ({exc}); set data.stain_reference to a reference tile"
        ) from exc
    if not train:
        raise DataError("data.stain_reference is null and the training split is empty")
    return Path(min(str(sample.path) for sample in train))


def stain_normalizer(cfg: DataConfig) -> StainNormalizer | None:
    """The fitted normaliser of ``cfg`` (None for ``stain_normalize: none``), fitted once per process."""
    if cfg.stain_normalize == "none":
        return None
    if cfg.in_chans != 3:
        raise DataError("data.stain_normalize needs RGB input (data.in_chans: 3)")
    if cfg.stain_reference is not None:
        reference = Path(cfg.stain_reference).expanduser()
    else:
        reference = _default_reference_cached(cfg.model_dump_json(exclude={"augment", "stain_normalize"}))
    try:
        mtime = reference.stat().st_mtime_ns
    except OSError as exc:
        raise DataError(f"stain reference {reference} cannot be read: {exc}") from exc
    return _fitted(
        cfg.stain_normalize, str(reference.resolve()), mtime, tuple(cfg.image_size), cfg.keep_aspect
    )


@lru_cache(maxsize=32)
def _default_reference_cached(data_json: str) -> Path:
    return default_reference(DataConfig.model_validate(json.loads(data_json)))


@lru_cache(maxsize=32)
def _fitted(
    method: str, reference: str, mtime_ns: int, size: tuple[int, int], keep_aspect: bool
) -> StainNormalizer:
    """Fit on the reference loaded like every tile (mtime in the key: an edited file is refitted)."""
    return fit(load_image(reference, 3, size, keep_aspect), method, reference)
