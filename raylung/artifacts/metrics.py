"""Binary classification metrics with cancer as the positive class (the paper's eqs. 4-7).

The metrics follow scikit-learn's definitions (precision, recall and F1 with
``zero_division=0``, AUROC with tied scores counting half) and are computed with numpy: every
epoch's validation in a Train worker scores with them, and importing scikit-learn there cost a
second of CPU on each trial's start-up (``tests/test_metrics.py`` holds them to scikit-learn's
values). The ROC curve, for reports only, is scikit-learn's. raylung adds what no library has:
confidence intervals from a bootstrap that resamples whole groups (patients, slides, tiles),
and paired differences between models scored on the same images.
"""

from __future__ import annotations

import warnings
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
        truth, called = np.asarray(labels).astype(bool), np.asarray(predicted).astype(bool)
        return cls(
            tp=int(np.count_nonzero(truth & called)),
            fp=int(np.count_nonzero(~truth & called)),
            tn=int(np.count_nonzero(~truth & ~called)),
            fn=int(np.count_nonzero(truth & ~called)),
        )

    def as_matrix(self) -> np.ndarray:
        """Rows = true (non-cancer, cancer), columns = predicted, like sklearn's layout."""
        return np.array([[self.tn, self.fp], [self.fn, self.tp]])


def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve; NaN when only one class is present (undefined there, not 0.5).

    The share of (cancer, non-cancer) pairs the scores rank right, a tie counting half (the
    Mann-Whitney U over the two class sizes): the trapezoidal area under the ROC curve.
    """
    labels = np.asarray(labels).astype(bool)
    if labels.all() or not labels.any():
        return float("nan")
    scores = np.asarray(scores, dtype=np.float64)
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    midranks = np.cumsum(counts) - (counts - 1) / 2.0  # 1-based rank of each distinct score, ties averaged
    positives = int(np.count_nonzero(labels))
    negatives = labels.size - positives
    ranked_right = midranks[inverse.reshape(labels.shape)[labels]].sum() - positives * (positives + 1) / 2.0
    return float(ranked_right / (positives * negatives))


def _ratio(numerator: int, denominator: int) -> float:
    """numerator / denominator, 0 when undefined (scikit-learn's ``zero_division=0``)."""
    return numerator / denominator if denominator else 0.0


def binary_metrics(
    labels: Sequence[float] | np.ndarray, probs: Sequence[float] | np.ndarray, threshold: float = 0.5
) -> dict[str, float]:
    """Accuracy, precision, recall, F1 (positive = cancer = 1) and AUROC.

    An undefined precision or recall (no predicted or no true positives) is 0, and so is the F1
    built on it: scikit-learn's ``zero_division=0``.
    """
    labels = np.asarray(labels).astype(np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    if labels.shape != probs.shape:
        raise ValueError(f"labels {labels.shape} and probs {probs.shape} differ in shape")
    if not np.isfinite(probs).all():
        raise ValueError("probs contain NaN or infinity")
    predicted = (probs >= threshold).astype(np.int64)
    c = Confusion.from_predictions(labels == 1, predicted)
    return {
        "accuracy": float(np.mean(predicted == labels)) if labels.size else float("nan"),
        "precision": _ratio(c.tp, c.tp + c.fp),
        "recall": _ratio(c.tp, c.tp + c.fn),
        "f1": _ratio(2 * c.tp, 2 * c.tp + c.fp + c.fn),
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
    binary_metrics(labels, probs[0], threshold)  # validates the inputs once, loudly
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
    """False- and true-positive rates over all thresholds (for the ROC plot).

    With one class only, the missing rate is 0 throughout (scikit-learn would warn and return NaN).
    """
    from sklearn import metrics as skm
    from sklearn.exceptions import UndefinedMetricWarning

    labels = np.asarray(labels).astype(bool)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        fpr, tpr, _ = skm.roc_curve(labels, np.asarray(probs, dtype=np.float64), drop_intermediate=False)
    return np.nan_to_num(fpr), np.nan_to_num(tpr)
