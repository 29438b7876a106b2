"""Cut a slide into tiles at a stated resolution, keeping those with enough tissue.

Resolution is one of: microns per pixel (``mpp``, when the slide states its own), a pyramid
``level``, or a ``downsample`` from level 0. Without any, a slide that states its mpp is tiled at
0.5 um/px (about 20x, the usual pathology tile resolution) and one that does not at level 0. Tiles
lie on a grid of level-0 boxes that fit inside the slide; each is read from the most reduced
level still at least as fine as the target and shrunk to `size`, so 0.5 um/px on a 0.25 um/px
slide reads level 1 where the file has a 2x level, and level 0 otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from raylung.slides.reader import Slide, SlideError
from raylung.slides.tissue import tissue_fraction, tissue_mask

DEFAULT_MPP = 0.5


class TileSpec(BaseModel):
    """How to tile: validated once, then shared by ``data tile`` and slide prediction."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    size: tuple[int, int] = (320, 240)  # (width, height) of a saved tile, the paper's input
    mpp: float | None = Field(None, gt=0)
    level: int | None = Field(None, ge=0)
    downsample: float | None = Field(None, ge=1)
    min_tissue: float = Field(0.5, ge=0, le=1)  # keep tiles with at least this tissue fraction
    image_format: Literal["png", "jpg"] = "png"
    thumbnail_side: int = Field(2048, ge=64)  # the tissue detector's thumbnail

    @model_validator(mode="after")
    def _one_resolution(self) -> TileSpec:
        given = [name for name in ("mpp", "level", "downsample") if getattr(self, name) is not None]
        if len(given) > 1:
            raise ValueError(f"give at most one of mpp, level, downsample (got {', '.join(given)})")
        if min(self.size) < 8:
            raise ValueError(f"tile size must be at least 8x8, got {self.size}")
        return self

    def resolve(self, slide: Slide) -> tuple[float, str]:
        """The downsample from level 0 for `slide`, and how it was chosen (for summaries)."""
        if self.level is not None:
            if self.level >= len(slide.downsamples):
                raise SlideError(
                    slide.path, f"has {len(slide.downsamples)} level(s), level {self.level} asked"
                )
            return slide.downsamples[self.level], f"level {self.level}"
        if self.downsample is not None:
            return self.downsample, f"downsample {self.downsample:g}"
        if slide.mpp is None:
            if self.mpp is not None:
                raise SlideError(slide.path, "states no microns per pixel; use --level or --downsample")
            return 1.0, "level 0 (no mpp in the file)"
        target = self.mpp or DEFAULT_MPP
        return max(target / slide.mpp, 1.0), f"{target:g} um/px (slide: {slide.mpp:.3g})"


@dataclass
class TilePlan:
    """A slide's tile grid: level-0 boxes (x, y, w, h), their tissue fractions and which are kept."""

    downsample: float
    level: int
    boxes: np.ndarray  # (N, 4) int64
    tissue: np.ndarray  # (N,) float
    keep: np.ndarray  # (N,) bool
    thumbnail: np.ndarray
    thumbnail_scale: float  # level-0 pixels per thumbnail pixel
    resolution: str

    @property
    def kept_boxes(self) -> np.ndarray:
        return self.boxes[self.keep]

    @property
    def centres(self) -> np.ndarray:
        return self.boxes[:, :2] + self.boxes[:, 2:] / 2.0


def plan_tiles(slide: Slide, spec: TileSpec) -> TilePlan:
    """The grid of `spec.size` tiles at the resolved resolution, scored by the tissue detector."""
    downsample, how = spec.resolve(slide)
    width0, height0 = slide.dimensions[0]
    box_w, box_h = round(spec.size[0] * downsample), round(spec.size[1] * downsample)
    xs = np.arange(0, width0 - box_w + 1, box_w)
    ys = np.arange(0, height0 - box_h + 1, box_h)
    grid = np.array([(x, y, box_w, box_h) for y in ys for x in xs], dtype=np.int64).reshape(-1, 4)
    thumbnail, scale = slide.thumbnail(spec.thumbnail_side)
    tissue = tissue_fraction(tissue_mask(thumbnail), scale, grid) if len(grid) else np.zeros(0)
    keep = tissue >= spec.min_tissue if spec.min_tissue > 0 else np.ones(len(grid), bool)
    return TilePlan(downsample, slide.best_level(downsample), grid, tissue, keep, thumbnail, scale, how)


def read_tile(slide: Slide, plan: TilePlan, box: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The RGB tile of level-0 `box`, read from `plan.level` and resized to `size` (width, height)."""
    x, y, w, h = (int(v) for v in box)
    level_ds = slide.downsamples[plan.level]
    image = slide.read_region(x, y, plan.level, math.ceil(w / level_ds), math.ceil(h / level_ds))
    if (image.shape[1], image.shape[0]) != tuple(size):
        image = cv2.resize(image, tuple(size), interpolation=cv2.INTER_AREA)
    return image
