"""Binary classification metrics with cancer as the positive class (the paper's eqs. 4-7).

Computed from probabilities with plain NumPy so the same code runs on every Ray worker and in
the evaluation CLI; the tests check it against scikit-learn on the same predictions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

METRIC_NAMES: tuple[str, ...] = ("accuracy", "precision", "recall", "f1", "auroc")


@dataclass(frozen=True)
class Confusion:
    tp: int
    fp: int
    tn: int
    fn: int

    @classmethod
    def from_predictions(cls, labels: np.ndarray, predicted: np.ndarray) -> Confusion:
        labels = labels.astype(bool)
        predicted = predicted.astype(bool)
        return cls(
            tp=int(np.sum(labels & predicted)),
            fp=int(np.sum(~labels & predicted)),
            tn=int(np.sum(~labels & ~predicted)),
            fn=int(np.sum(labels & ~predicted)),
        )

    def as_matrix(self) -> np.ndarray:
        """Rows = true (non-cancer, cancer), columns = predicted, like sklearn's layout."""
        return np.array([[self.tn, self.fp], [self.fn, self.tp]])


def _ratio(num: float, den: float) -> float:
    # sklearn's zero_division=0 convention: an undefined precision/recall is reported as 0.
    return float(num / den) if den else 0.0


def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve via the rank statistic (ties get average ranks).

    NaN when only one class is present: the AUROC is undefined there, not 0.5.
    """
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    n_pos = int(labels.sum())
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(scores.size, dtype=np.float64)
    # Average ranks over ties.
    boundaries = np.flatnonzero(np.diff(sorted_scores)) + 1
    starts = np.concatenate(([0], boundaries))
    ends = np.concatenate((boundaries, [scores.size]))
    for start, end in zip(starts, ends, strict=True):
        ranks[order[start:end]] = (start + end + 1) / 2.0
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def binary_metrics(
    labels: Sequence[float] | np.ndarray, probs: Sequence[float] | np.ndarray, threshold: float = 0.5
) -> dict[str, float]:
    """Accuracy, precision, recall, F1 (positive = cancer = 1) and AUROC."""
    labels = np.asarray(labels).astype(np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    if labels.shape != probs.shape:
        raise ValueError(f"labels {labels.shape} and probs {probs.shape} differ in shape")
    c = Confusion.from_predictions(labels, probs >= threshold)
    precision = _ratio(c.tp, c.tp + c.fp)
    recall = _ratio(c.tp, c.tp + c.fn)
    return {
        "accuracy": _ratio(c.tp + c.tn, labels.size),
        "precision": precision,
        "recall": recall,
        "f1": _ratio(2 * precision * recall, precision + recall),
        "auroc": auroc(labels, probs),
    }


def bootstrap_intervals(
    labels: np.ndarray,
    probs: np.ndarray,
    threshold: float = 0.5,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    groups: np.ndarray | None = None,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap confidence intervals of every metric.

    With `groups` (patient, slide or original tile), whole groups are resampled: images of one
    group are correlated, and resampling them one by one gives intervals that are too narrow.
    `probs` may be (k, n): k models (e.g. seeds) scored on the same n images; each resample
    then scores every model on the same images and averages, the interval of the mean.
    """
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    probs = np.atleast_2d(np.asarray(probs))
    members = _group_members(groups, labels.size)
    samples: dict[str, list[float]] = {name: [] for name in METRIC_NAMES}
    for _ in range(n_boot):
        index = _resample(members, rng)
        per_model = [binary_metrics(labels[index], row[index], threshold) for row in probs]
        for name in METRIC_NAMES:
            samples[name].append(float(np.mean([m[name] for m in per_model])))
    return _percentile_intervals(samples, level)


def _group_members(groups: np.ndarray | None, n: int) -> list[np.ndarray]:
    """Image indices of each group (each image its own group when `groups` is None)."""
    if groups is None:
        groups = np.arange(n)
    unique, inverse = np.unique(np.asarray(groups), return_inverse=True)
    return [np.flatnonzero(inverse == g) for g in range(unique.size)]


def _resample(members: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """One bootstrap draw of whole groups, with replacement, as image indices."""
    return np.concatenate([members[g] for g in rng.integers(0, len(members), len(members))])


def _percentile_intervals(samples: dict[str, list[float]], level: float) -> dict[str, tuple[float, float]]:
    alpha = (1 - level) / 2
    intervals = {}
    for name, values in samples.items():
        finite = np.asarray([v for v in values if np.isfinite(v)])
        intervals[name] = (
            (float(np.quantile(finite, alpha)), float(np.quantile(finite, 1 - alpha)))
            if finite.size
            else (float("nan"), float("nan"))
        )
    return intervals


def paired_difference_intervals(
    labels: np.ndarray,
    probs: np.ndarray,
    reference: np.ndarray,
    threshold: float = 0.5,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    groups: np.ndarray | None = None,
) -> tuple[dict[str, float], dict[str, tuple[float, float]]]:
    """(mean metric of `probs` minus that of `reference`, its percentile bootstrap interval).

    Paired: both are scored on the same n test images, and every resample draws the same
    (whole) groups for both, so what the images have in common cancels out of the difference.
    `probs` (k, n) and `reference` (k', n) may each hold several seeds: each side is the mean
    over its seeds, as in :func:`bootstrap_intervals`.
    """
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    probs, reference = np.atleast_2d(np.asarray(probs)), np.atleast_2d(np.asarray(reference))

    def mean_metrics(rows: np.ndarray, index: np.ndarray) -> dict[str, float]:
        scored = [binary_metrics(labels[index], row[index], threshold) for row in rows]
        return {name: float(np.mean([m[name] for m in scored])) for name in METRIC_NAMES}

    everything = np.arange(labels.size)
    ours, ref = mean_metrics(probs, everything), mean_metrics(reference, everything)
    delta = {name: ours[name] - ref[name] for name in METRIC_NAMES}
    if n_boot < 1:
        return delta, {}
    members = _group_members(groups, labels.size)
    samples: dict[str, list[float]] = {name: [] for name in METRIC_NAMES}
    for _ in range(n_boot):
        index = _resample(members, rng)
        a, b = mean_metrics(probs, index), mean_metrics(reference, index)
        for name in METRIC_NAMES:
            samples[name].append(a[name] - b[name])
    return delta, _percentile_intervals(samples, level)


def roc_curve(labels: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False- and true-positive rates over all thresholds (for the ROC plot)."""
    labels = np.asarray(labels).astype(bool)
    order = np.argsort(-np.asarray(probs, dtype=np.float64), kind="mergesort")
    sorted_probs = np.asarray(probs)[order]
    hits = labels[order]
    distinct = np.r_[np.flatnonzero(np.diff(sorted_probs)), hits.size - 1]
    tps = np.cumsum(hits)[distinct]
    fps = (distinct + 1) - tps
    n_pos, n_neg = max(hits.sum(), 1), max((~hits).sum(), 1)
    return np.r_[0.0, fps / n_neg], np.r_[0.0, tps / n_pos]
