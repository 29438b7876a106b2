"""Confidence intervals that keep their stated coverage on small, grouped test sets.

A percentile bootstrap collapses where a metric sits at 0 or 1 (no resample of 14 all-correct
images can score below 1, so it reports accuracy 1.0 [1.0, 1.0]) and is too narrow with few
groups. Here instead:

* **Proportions** (accuracy, precision, recall = sensitivity, specificity) get an exact
  Clopper-Pearson interval (Clopper & Pearson 1934): its coverage is at least the stated level
  for every true proportion and every n. Wilson's score interval (Wilson 1927) is shorter but
  undercovers near 0 and 1 with small n (Brown, Cai & DasGupta 2001, Stat. Sci. 16:101): at
  p = 0.99 and n = 14 it covers 0.87 instead of 0.95, which is exactly where a good model on a
  small test set sits. Wilson stays available (``proportion="wilson"``).
* **Groups** (tile, slide, patient): images of one group are correlated, so a proportion is
  computed on the *effective* number of independent units, Kish's ``n_eff = (sum m_g)^2 /
  sum m_g^2`` over the group sizes m_g of the images the proportion counts. That is the
  precision of the image-level proportion when images of a group are perfectly correlated
  (intra-class correlation 1, the worst case; design effect ``n / n_eff``), and equals the
  number of groups when groups are equal-sized. For LC25000, whose groups are rotations and
  flips of one original tile, a classifier's correctness is close to that worst case; where it
  is not, the interval is conservative (wider than needed), never too narrow. The observed
  proportion is kept; the interval uses ``n_eff`` trials with ``p_hat * n_eff`` successes.
* **F1 and AUROC** are not proportions: they keep the percentile bootstrap that resamples whole
  groups (:func:`raylung.artifacts.metrics.bootstrap_intervals`). Where the estimate lies on 0
  or 1, or the resamples all agree, that bootstrap has collapsed; the interval is then widened
  to a bound implied by the proportion intervals: F1 is the harmonic mean of precision and
  recall and rises with both; AUROC = P(score+ > score-) >= sens(t) * spec(t) and
  <= 1 - (1 - sens(t)) * (1 - spec(t)) at the evaluation threshold t. Each end combines two
  proportion bounds; with those at level 1 - alpha/2 (Bonferroni) the bound holds at ``level``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import stats

from raylung.artifacts.metrics import binary_metrics, bootstrap_intervals

ProportionMethod = Literal["clopper-pearson", "wilson"]
PROPORTIONS: tuple[str, ...] = ("accuracy", "precision", "recall", "specificity")
# Below these counts a report's numbers are indicative only (see few_units_warning).
MIN_GROUPS = 30
MIN_IMAGES = 100
_NAMES = {"clopper-pearson": "Clopper-Pearson", "wilson": "Wilson"}


@dataclass(frozen=True)
class MetricInterval:
    """A point estimate, its interval and how the interval was made (for tables).

    ``units`` is the effective number of independent units behind a proportion (images, or
    Kish's n_eff over groups), or the number of groups/images resampled by a bootstrap.
    """

    estimate: float
    low: float
    high: float
    method: str
    units: float

    def as_tuple(self) -> tuple[float, float]:
        return (self.low, self.high)


def clopper_pearson_interval(successes: float, n: float, level: float = 0.95) -> tuple[float, float]:
    """Exact (beta-quantile) interval; `successes` and `n` may be fractional (effective counts)."""
    _check(successes, n, level)
    if n == 0:
        return (float("nan"), float("nan"))
    alpha = 1 - level
    low = 0.0 if successes <= 0 else float(stats.beta.ppf(alpha / 2, successes, n - successes + 1))
    high = 1.0 if successes >= n else float(stats.beta.ppf(1 - alpha / 2, successes + 1, n - successes))
    return (low, high)


def wilson_interval(successes: float, n: float, level: float = 0.95) -> tuple[float, float]:
    """Wilson's score interval; `successes` and `n` may be fractional (effective counts)."""
    _check(successes, n, level)
    if n == 0:
        return (float("nan"), float("nan"))
    z = float(stats.norm.ppf(1 - (1 - level) / 2))
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (max(0.0, float(centre - half)), min(1.0, float(centre + half)))


def _check(successes: float, n: float, level: float) -> None:
    if not 0 < level < 1:
        raise ValueError(f"level must be within (0, 1), got {level}")
    if n < 0 or not 0 <= successes <= n + 1e-9:
        raise ValueError(f"need 0 <= successes <= n, got {successes} of {n}")


def proportion_interval(
    successes: float, n: float, level: float = 0.95, method: ProportionMethod = "clopper-pearson"
) -> tuple[float, float]:
    if method not in _NAMES:
        raise ValueError(f"unknown proportion interval {method!r}; choose from {', '.join(_NAMES)}")
    interval = clopper_pearson_interval if method == "clopper-pearson" else wilson_interval
    return interval(min(successes, n), n, level)


def effective_units(groups: np.ndarray) -> float:
    """Kish's effective sample size over group sizes: (sum m_g)^2 / sum m_g^2 (0 when empty)."""
    _, sizes = np.unique(np.asarray(groups), return_counts=True)
    return float(sizes.sum() ** 2 / np.sum(sizes.astype(np.float64) ** 2)) if sizes.size else 0.0


def few_units_warning(n_images: int, n_groups: int | None = None) -> str | None:
    """A caution for reports built on fewer than MIN_GROUPS groups or MIN_IMAGES images."""
    groups = n_images if n_groups is None else n_groups
    if groups >= MIN_GROUPS and n_images >= MIN_IMAGES:
        return None
    counted = f"{groups} groups ({n_images} images)" if n_groups is not None else f"{n_images} images"
    return f"numbers on {counted}: intervals are wide, treat as indicative"


def metric_intervals(
    labels: np.ndarray,
    probs: np.ndarray,
    threshold: float = 0.5,
    *,
    groups: np.ndarray | None = None,
    level: float = 0.95,
    n_boot: int = 1000,
    seed: int = 0,
    proportion: ProportionMethod = "clopper-pearson",
) -> dict[str, MetricInterval]:
    """Accuracy, precision, recall, specificity (exact intervals on effective units), F1 and
    AUROC (grouped bootstrap, widened where it collapses; left out when `n_boot` is 0)."""
    labels = np.asarray(labels).astype(bool)
    probs = np.asarray(probs, dtype=np.float64)
    groups = np.arange(labels.size) if groups is None else np.asarray(groups)
    grouped = np.unique(groups).size < labels.size
    predicted = probs >= threshold
    subsets = {
        "accuracy": (np.ones_like(labels), predicted == labels),
        "precision": (predicted, labels),
        "recall": (labels, predicted),
        "specificity": (~labels, ~predicted),
    }
    tail = 1 - (1 - level) / 2  # each end of a bound built from two proportions (Bonferroni)
    result, bounds = {}, {}
    for name, (counted, correct) in subsets.items():
        n = int(counted.sum())
        estimate = float(correct[counted].mean()) if n else 0.0  # 0 when undefined, as sklearn
        units = effective_units(groups[counted]) if grouped else float(n)
        low, high = proportion_interval(estimate * units, units, level, proportion)
        method = _proportion_method(proportion, n, groups[counted], grouped, units)
        result[name] = MetricInterval(estimate, low, high, method, units)
        # An undefined proportion (no images) bounds nothing: [0, 1].
        bounds[name] = proportion_interval(estimate * units, units, tail, proportion) if n else (0.0, 1.0)
    if n_boot:
        result.update(_bootstrapped(labels, probs, threshold, groups, grouped, level, n_boot, seed, bounds))
    return result


def _proportion_method(
    proportion: ProportionMethod, n: int, groups: np.ndarray, grouped: bool, units: float
) -> str:
    name = _NAMES[proportion]
    if not n:
        return f"{name}: undefined (no images)"
    if not grouped:
        return f"{name} on {n} images"
    return f"{name} on {np.unique(groups).size} groups (n_eff {units:.1f} of {n} images)"


def _bootstrapped(
    labels: np.ndarray,
    probs: np.ndarray,
    threshold: float,
    groups: np.ndarray,
    grouped: bool,
    level: float,
    n_boot: int,
    seed: int,
    bounds: dict[str, tuple[float, float]],
) -> dict[str, MetricInterval]:
    point = binary_metrics(labels, probs, threshold)
    booted = bootstrap_intervals(labels, probs, threshold, n_boot, level, seed, groups if grouped else None)
    units = float(np.unique(groups).size)
    base = f"{'group ' if grouped else ''}bootstrap ({n_boot})"
    (p_lo, p_hi), (r_lo, r_hi) = bounds["precision"], bounds["recall"]
    s_lo, s_hi = bounds["specificity"]
    implied = {
        "f1": (_harmonic(p_lo, r_lo), _harmonic(p_hi, r_hi), "precision/recall bound"),
        "auroc": (r_lo * s_lo, 1 - (1 - r_hi) * (1 - s_hi), "sensitivity x specificity bound"),
    }
    result = {}
    for name, (bound_low, bound_high, bound_name) in implied.items():
        estimate, (low, high) = point[name], booted[name]
        if not np.isfinite(estimate):
            nan = float("nan")
            result[name] = MetricInterval(estimate, nan, nan, "undefined (one class)", units)
            continue
        method = base
        collapsed = estimate in (0.0, 1.0) or not high > low
        if collapsed:
            low, high = np.nanmin([low, bound_low]), np.nanmax([high, bound_high])
            method = f"{base}, widened by the {bound_name} (collapsed at {estimate:g})"
        result[name] = MetricInterval(estimate, float(low), float(high), method, units)
    return result


def _harmonic(a: float, b: float) -> float:
    return 0.0 if a + b <= 0 else 2 * a * b / (a + b)
