"""Test-time augmentation (TTA): average P(cancer) over the flips and turns training taught.

Tissue has no up, down, left or right, so training augments with mirror images and quarter
turns (``hflip``, ``vflip``, ``rotate90`` in :mod:`raylung.data.policies`). At prediction the
same views of each image are scored and their probabilities averaged: a cheap ensemble that
smooths out what the model still gets wrong about orientation.

The views are those operations, implemented as in :mod:`raylung.data.transforms`:
``hflip`` mirrors left-right (width), ``vflip`` top-bottom (height), ``rotN`` turns N degrees
counter-clockwise (``np.rot90`` there, ``torch.rot90`` over (H, W) here, the same turn). A quarter
turn of a non-square input would change its shape, which the model's fixed input size forbids
(training's ``QuarterTurn`` falls back to 180 degrees for the same reason), so ``rot90`` and
``rot270`` are views of square inputs only.

Probabilities, not logits, are averaged, each after its own temperature-scaled sigmoid
(:meth:`raylung.artifacts.loader.LoadedModel.probabilities`): the mean of calibrated
probabilities is itself a probability, whereas the sigmoid of a mean logit lets one confident
view outvote the rest.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

__all__ = [
    "ALL_VIEWS",
    "NO_TTA",
    "apply_view",
    "average_views",
    "tta_probabilities",
    "tta_views",
    "view_logits",
]

ALL_VIEWS: tuple[str, ...] = ("identity", "hflip", "vflip", "rot90", "rot180", "rot270")
_SQUARE_ONLY = frozenset({"rot90", "rot270"})
_QUARTER_TURNS = {"rot90": 1, "rot180": 2, "rot270": 3}

# A model, a TorchScript/ONNX wrapper or any function from an (N, C, H, W) batch to N logits.
LogitFn = Callable[[torch.Tensor], torch.Tensor | np.ndarray]
ProbabilityFn = Callable[[np.ndarray], np.ndarray]


NO_TTA = ("identity",)  # the image as given: plain inference through the same code


def tta_views(height: int, width: int) -> tuple[str, ...]:
    """The views of an input of this size, identity first: six when square, else four."""
    return tuple(v for v in ALL_VIEWS if height == width or v not in _SQUARE_ONLY)


def apply_view(batch: torch.Tensor, view: str) -> torch.Tensor:
    """`batch` (N, C, H, W) seen through `view` (one of :data:`ALL_VIEWS`)."""
    if view == "identity":
        return batch
    if view == "hflip":
        return torch.flip(batch, dims=(-1,))
    if view == "vflip":
        return torch.flip(batch, dims=(-2,))
    if view in _QUARTER_TURNS:
        if view in _SQUARE_ONLY and batch.shape[-1] != batch.shape[-2]:
            raise ValueError(f"{view} needs a square input, got (H, W) = {tuple(batch.shape[-2:])}")
        return torch.rot90(batch, _QUARTER_TURNS[view], dims=(-2, -1))
    raise ValueError(f"unknown TTA view {view!r}; choose from {', '.join(ALL_VIEWS)}")


def _check(batch: torch.Tensor, views: Sequence[str] | None) -> tuple[str, ...]:
    if batch.ndim != 4:
        raise ValueError(f"TTA needs an (N, C, H, W) batch, got shape {tuple(batch.shape)}")
    chosen = tuple(views) if views is not None else tta_views(*batch.shape[-2:])
    if not chosen:
        raise ValueError("TTA needs at least one view")
    return chosen


@torch.no_grad()
def view_logits(batch: torch.Tensor, model: LogitFn, views: Sequence[str] | None = None) -> np.ndarray:
    """Raw logits of every view, shape (V, N), float64, rows in the order of `views`.

    Args:
        batch: normalised images (N, C, H, W), on the device `model` expects.
        model: maps a batch to one logit per image ((N,) or (N, 1)), tensor or array.
        views: default :func:`tta_views` of the batch's size; ``("identity",)`` is plain inference.
    """
    chosen = _check(batch, views)
    rows = []
    for view in chosen:
        out = model(apply_view(batch, view))
        out = out.detach().float().cpu().numpy() if isinstance(out, torch.Tensor) else np.asarray(out)
        rows.append(out.astype(np.float64).reshape(-1))
    logits = np.stack(rows)
    if logits.shape[1] != batch.shape[0]:
        raise ValueError(f"the model gave {logits.shape[1]} logits for {batch.shape[0]} images")
    return logits


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-logits))


def tta_probabilities(
    batch: torch.Tensor,
    model: LogitFn,
    *,
    probabilities: ProbabilityFn | None = None,
    views: Sequence[str] | None = None,
) -> np.ndarray:
    """Mean P(cancer) over the views of each image, shape (N,).

    Args:
        batch: normalised images (N, C, H, W).
        model: maps a batch to one logit per image.
        probabilities: logits -> probabilities; pass ``loaded.probabilities`` (calibrated by
            the export's temperature) or ``lambda z: loaded.probabilities(z, False)``. Default:
            the plain sigmoid.
        views: default :func:`tta_views` of the batch's size.
    """
    return average_views(view_logits(batch, model, views), probabilities)


def average_views(logits: np.ndarray, probabilities: ProbabilityFn | None = None) -> np.ndarray:
    """Mean P(cancer) over the views of (V, N) logits: each view calibrated, then averaged.

    The one place TTA averages, for predict, slide predict and evaluate alike.
    """
    to_probability = probabilities or _sigmoid
    return np.asarray(to_probability(logits), dtype=np.float64).mean(axis=0)
