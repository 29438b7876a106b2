"""A fixed, seeded sample of test images to explain after training: right and wrong, both classes.

The test images are visited in a seeded random order and each is sorted into true positive,
true negative, false positive or false negative (cancer is positive) at the model's threshold;
the first ``per_group`` of each category are kept. The visit stops as soon as every category
is full, so a good model on a large test set is not run over all of it; a category that does
not occur (no false negatives) is simply short, and the scan then covers the whole split. The
pick depends only on the seed, the splits file and the model, never on the batch size.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from raylung.data import Sample, SplitSet
from raylung.errors import ConfigError, DataError
from raylung.explain.explainer import Explainer, Explanation, png_name, write_index

__all__ = [
    "CATEGORIES",
    "Category",
    "ExplainedSample",
    "Pick",
    "categorise",
    "category_counts",
    "explain_test_sample",
    "pick_test_sample",
]

Category = Literal["TP", "TN", "FP", "FN"]
CATEGORIES: tuple[Category, ...] = ("TP", "TN", "FP", "FN")
_SCAN_BATCH = 32


def categorise(label: int, predicted: int) -> Category:
    """TP/TN/FP/FN of one image, cancer (1) being the positive class."""
    if label == 1:
        return "TP" if predicted == 1 else "FN"
    return "FP" if predicted == 1 else "TN"


@dataclass(frozen=True)
class Pick:
    """One chosen test image, its P(cancer) and the category it fell in."""

    sample: Sample
    probability: float
    category: Category


def pick_test_sample(
    samples: Sequence[Sample],
    probabilities: Callable[[list[Sample]], np.ndarray],
    threshold: float,
    *,
    per_group: int = 2,
    seed: int = 0,
    scan_batch: int = _SCAN_BATCH,
) -> list[Pick]:
    """Up to `per_group` images of each category, in the order TP, TN, FP, FN.

    Args:
        samples: the test split.
        probabilities: P(cancer) for a list of samples (called on batches of `scan_batch`).
        threshold: cancer when P(cancer) >= threshold.
    """
    if per_group < 1:
        raise ConfigError(f"per_group must be >= 1, got {per_group}")
    ordered = sorted(samples, key=lambda s: s.path)  # independent of the splits file's row order
    visit = [ordered[i] for i in np.random.default_rng(seed).permutation(len(ordered))]
    chosen: dict[Category, list[Pick]] = {category: [] for category in CATEGORIES}
    for start in range(0, len(visit), scan_batch):
        batch = visit[start : start + scan_batch]
        for sample, prob in zip(batch, probabilities(batch), strict=True):
            category = categorise(sample.label, int(prob >= threshold))
            if len(chosen[category]) < per_group:
                chosen[category].append(Pick(sample, float(prob), category))
        if all(len(picks) == per_group for picks in chosen.values()):
            break
    return [pick for category in CATEGORIES for pick in chosen[category]]


class ExplainedSample(list[Path]):
    """The figures' PNG paths (TP, TN, FP, FN order), with what each shows and the index file.

    A ``list[Path]`` so callers can log it as is; ``categories`` maps each PNG to its category.
    """

    def __init__(self, explanations: Sequence[Explanation], index: Path) -> None:
        super().__init__(e.png for e in explanations)
        self.explanations = list(explanations)
        self.index = index

    @property
    def categories(self) -> dict[Path, str]:
        return {e.png: e.category or "" for e in self.explanations}

    def counts(self) -> dict[str, int]:
        return category_counts(self.explanations)


def category_counts(explanations: Sequence[Explanation]) -> dict[str, int]:
    """Figures per category, zero for a category the test split did not produce."""
    return {c: sum(e.category == c for e in explanations) for c in CATEGORIES}


def _test_samples(explainer: Explainer, splits_file: str | Path | None) -> tuple[list[Sample], str]:
    """The test split, with relative paths under the run's data root (as ``raylung evaluate``)."""
    data = explainer.loaded.config.data
    location = str(splits_file) if splits_file is not None else data.splits_file
    if not location:
        raise DataError(
            f"the config of {explainer.loaded.path} names no data.splits_file; pass a splits file"
        )
    split_set = SplitSet.load(location, root=Path(data.root).expanduser())
    samples = split_set.get("test", [])
    if not samples:
        raise DataError(f"splits file {location} has no test samples (it has: {', '.join(split_set)})")
    return samples, location


def explain_test_sample(
    model_path: str | Path,
    splits_file: str | Path | None,
    out_dir: str | Path,
    *,
    per_group: int = 2,
    seed: int = 0,
    threshold: float | None = None,
    device: str | torch.device | None = None,
) -> ExplainedSample:
    """Explain a seeded sample of test images: `per_group` each of TP, TN, FP and FN where they exist.

    Writes the same figures as ``raylung explain`` (named ``tp_000_<image>.png`` and so on) and
    ``explanations.json``, which also records each image's true label and category and the
    count per category. Logs nothing to W&B: the caller logs the returned paths.

    Args:
        model_path: an export folder or a training checkpoint folder.
        splits_file: the run's splits CSV (None: the one named in the model's config).
        out_dir: where the figures and the index go.
        per_group: images per category.
        seed: fixes which images are picked.
        threshold: cancer when P(cancer) >= this (default: the export's, 0.5 for a checkpoint).
        device: where to run (default: CUDA when present, else CPU).

    Returns:
        The PNG paths, as an :class:`ExplainedSample` (a ``list[Path]`` with ``categories``).
    """
    explainer = Explainer.from_path(model_path, threshold=threshold, device=device)
    samples, location = _test_samples(explainer, splits_file)

    def probabilities(batch: list[Sample]) -> np.ndarray:
        return explainer.probabilities([Path(s.path) for s in batch])

    picks = pick_test_sample(samples, probabilities, explainer.threshold, per_group=per_group, seed=seed)
    paths = [Path(p.sample.path) for p in picks]
    names = [png_name(i, Path(p.sample.path), prefix=f"{p.category.lower()}_") for i, p in enumerate(picks)]
    explanations = explainer.explain(
        paths, out_dir, names, [p.sample.label for p in picks], [p.category for p in picks]
    )
    extra = {"splits_file": location, "split": "test", "seed": seed, "per_group": per_group,
             "categories": category_counts(explanations)}  # fmt: skip
    return ExplainedSample(explanations, write_index(out_dir, explainer, explanations, extra))
