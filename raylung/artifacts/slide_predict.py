"""Predict whole slides: tile on the fly, score every tile, one score per slide, a heatmap.

Tiles are found exactly as ``raylung data tile`` finds them (:func:`raylung.slides.plan_tiles`:
the same tissue detector and resolution rule), at the export's input size
(``data.image_size``), and go through the evaluation pipeline of :mod:`raylung.artifacts.predict`
(channel rule, resize, normalise) in batches. P(cancer) is calibrated
(:meth:`LoadedModel.probabilities`) and a tile is cancer at the export's threshold.

The slide's score is :func:`raylung.artifacts.groups.group_results` with the slide as group:
``mean`` (default) - the mean tile probability, cancer when >= the threshold; ``fraction`` -
the share of cancer tiles, cancer when >= `cutoff`. Outputs in `out_dir`: ``tiles.csv`` (one
row per tile with its level-0 box), ``slides.csv`` (one row per slide) and
``<slide>_heatmap.png``. A slide that cannot be read is listed with its reason; the others go on.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from raylung.artifacts.groups import GroupResults, GroupRule, check_rule, group_results, write_group_csv
from raylung.artifacts.loader import load_export
from raylung.artifacts.predict import logit_runtime
from raylung.artifacts.tta import NO_TTA, average_views, view_logits
from raylung.config import DataConfig
from raylung.data import build_transform
from raylung.data.images import resize_to, to_channels
from raylung.data.naming import LABEL_NAMES
from raylung.errors import ConfigError
from raylung.progress import progress_bar
from raylung.slides import SlideError, TileSpec, open_slide, plan_tiles, read_tile, write_heatmap

log = logging.getLogger(__name__)

TILE_COLUMNS = (
    "slide",
    "x",
    "y",
    "width",
    "height",
    "tissue",
    "probability_cancer",
    "predicted_label",
    "logit",
)


@dataclass
class SlidePredictionSummary:
    """What :func:`predict_slides` wrote; `failed` holds (slide path, reason)."""

    out_dir: Path
    threshold: float
    tiles_csv: Path
    slides_csv: Path | None = None
    heatmaps: dict[str, Path] = field(default_factory=dict)
    n_tiles: dict[str, int] = field(default_factory=dict)
    groups: GroupResults | None = None
    failed: list[tuple[str, str]] = field(default_factory=list)
    resolution: dict[str, str] = field(default_factory=dict)


def predict_slides(
    export_dir: str | Path,
    slides: Sequence[str | Path],
    out_dir: str | Path,
    *,
    spec: TileSpec | None = None,
    threshold: float | None = None,
    batch_size: int = 32,
    device: str | torch.device | None = None,
    rule: GroupRule = "mean",
    cutoff: float = 0.5,
    progress: bool = True,
) -> SlidePredictionSummary:
    """Score every tissue tile of each slide; write tiles.csv, slides.csv and heatmaps to `out_dir`.

    Args:
        spec: resolution and tissue settings (:class:`raylung.slides.TileSpec`); its `size` is
            replaced by the export's ``data.image_size`` so tiles match what the model saw.
        threshold: tile operating point (default: the export's stored threshold).
        rule, cutoff: the slide-level rule of :mod:`raylung.artifacts.groups`.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    loaded = load_export(export_dir)
    loaded.require_binary()
    threshold = loaded.threshold if threshold is None else threshold
    check_rule(rule, threshold, cutoff)
    data = loaded.config.data
    spec = (spec or TileSpec()).model_copy(update={"size": tuple(data.image_size)})
    forward, torch_device = logit_runtime(loaded, "torch", device)
    transform = build_transform(data, train=False)
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    summary = SlidePredictionSummary(out, threshold, out / "tiles.csv")
    keys: list[str] = []
    probs: list[float] = []
    with open(summary.tiles_csv, "w", newline="") as handle, progress_bar(progress) as bar, torch.no_grad():
        writer = csv.writer(handle)
        writer.writerow(TILE_COLUMNS)
        for path in slides:
            try:
                with open_slide(path) as slide:
                    plan = plan_tiles(slide, spec)
                    task = bar.add_task(slide.name, total=int(plan.keep.sum()))
                    boxes = plan.kept_boxes
                    scored = []
                    for start in range(0, len(boxes), batch_size):
                        batch = boxes[start : start + batch_size]
                        tiles = [_model_input(read_tile(slide, plan, box, spec.size), data) for box in batch]
                        logits = view_logits(
                            torch.stack([transform(t) for t in tiles]).to(torch_device), forward, NO_TTA
                        )
                        scored.append((logits[0], average_views(logits, loaded.probabilities)))
                        bar.advance(task, len(batch))
                    bar.remove_task(task)
            except SlideError as exc:
                summary.failed.append((str(path), str(exc)))
                log.error("%s", exc)
                continue
            logits = np.concatenate([s[0] for s in scored]) if scored else np.zeros(0)
            slide_probs = np.concatenate([s[1] for s in scored]) if scored else np.zeros(0)
            name = slide.name
            for box, logit, prob, fraction in zip(
                boxes, logits, slide_probs, plan.tissue[plan.keep], strict=True
            ):
                writer.writerow([name, *map(int, box), f"{fraction:.3f}", f"{prob:.6f}",
                                 LABEL_NAMES[int(prob >= threshold)], f"{logit:.6f}"])  # fmt: skip
            summary.resolution[name], summary.n_tiles[name] = plan.resolution, len(slide_probs)
            summary.heatmaps[name] = write_heatmap(
                out / f"{name}_heatmap.png", plan.thumbnail, plan.thumbnail_scale, boxes, slide_probs,
                f"{name}: calibrated P(cancer) of {len(boxes)} tissue tiles",
            )  # fmt: skip
            if not len(slide_probs):
                log.warning("slide %s has no tile with enough tissue: no slide score", name)
            keys += [name] * len(slide_probs)
            probs += [float(p) for p in slide_probs]
    if probs:
        summary.groups = group_results(keys, None, probs, threshold, rule, cutoff)
        summary.slides_csv = write_group_csv(out / "slides.csv", summary.groups)
    return summary


def _model_input(tile: np.ndarray, data: DataConfig) -> np.ndarray:
    """A tile as the run's decoder would hand it over: its channel rule and input size."""
    return np.ascontiguousarray(
        resize_to(to_channels(tile, data.in_chans), data.image_size, data.keep_aspect)
    )
