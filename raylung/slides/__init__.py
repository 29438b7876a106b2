"""Whole-slide images: read (OpenSlide or tifffile), find tissue, tile, label, and draw heatmaps.

Sits beside :mod:`raylung.data` in the layering: it may import config, data and errors, never
the artifacts; slide *prediction* (which needs a loaded model) is
:mod:`raylung.artifacts.slide_predict`.
"""

from raylung.slides.heatmap import probability_grid, write_heatmap
from raylung.slides.labels import SlideLabel, load_annotations, read_label_csv
from raylung.slides.reader import SLIDE_EXTENSIONS, Slide, SlideError, open_slide, openslide_available
from raylung.slides.tiler import TilePlan, TileSpec, plan_tiles, read_tile
from raylung.slides.tiling import TilingSummary, tile_slides
from raylung.slides.tissue import tissue_fraction, tissue_mask

__all__ = [
    "SLIDE_EXTENSIONS",
    "Slide",
    "SlideError",
    "SlideLabel",
    "TilePlan",
    "TileSpec",
    "TilingSummary",
    "load_annotations",
    "open_slide",
    "openslide_available",
    "plan_tiles",
    "probability_grid",
    "read_label_csv",
    "read_tile",
    "tile_slides",
    "tissue_fraction",
    "tissue_mask",
    "write_heatmap",
]
