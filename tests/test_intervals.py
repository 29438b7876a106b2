"""Intervals that keep their coverage: exact proportions on effective units, and a grouped
bootstrap for F1 / AUROC that does not collapse to a point at 0 or 1."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from raylung.artifacts.intervals import (
    clopper_pearson_interval,
    effective_units,
    few_units_warning,
    metric_intervals,
    proportion_interval,
    wilson_interval,
)
from raylung.artifacts.metrics import bootstrap_intervals

Z = float(stats.norm.ppf(0.975))


def _all_correct(n: int = 14) -> tuple[np.ndarray, np.ndarray]:
    labels = np.array([1, 0] * (n // 2))
    return labels, np.where(labels == 1, 0.9, 0.1)


def test_fourteen_correct_images_get_an_honest_interval_not_a_point():
    labels, probs = _all_correct()
    low, high = bootstrap_intervals(labels, probs, n_boot=200)["accuracy"]
    assert (low, high) == (1.0, 1.0)  # the percentile bootstrap collapses: why this module exists
    accuracy = metric_intervals(labels, probs, n_boot=0)["accuracy"]
    assert accuracy.estimate == 1.0 and accuracy.high == 1.0
    assert accuracy.low == pytest.approx(0.025 ** (1 / 14))  # Clopper-Pearson: 0.768
    assert accuracy.method == "Clopper-Pearson on 14 images"
    assert wilson_interval(14, 14)[0] == pytest.approx(14 / (14 + Z * Z))  # 0.785
    assert metric_intervals(labels, probs, n_boot=0, proportion="wilson")["accuracy"].low == pytest.approx(
        0.7847, abs=1e-4
    )


def test_closed_forms_at_the_edges():
    for n in (1, 5, 50):
        assert clopper_pearson_interval(0, n) == pytest.approx((0.0, 1 - 0.025 ** (1 / n)))
        assert clopper_pearson_interval(n, n) == pytest.approx((0.025 ** (1 / n), 1.0))
    low, high = wilson_interval(7, 14)
    assert (low + high) / 2 == pytest.approx(0.5) and high - low == pytest.approx(
        2 * Z / (1 + Z * Z / 14) * np.sqrt(0.25 / 14 + Z * Z / (4 * 14 * 14))
    )
    assert np.isnan(clopper_pearson_interval(0, 0)).all()
    with pytest.raises(ValueError, match="level"):
        proportion_interval(3, 10, level=95)
    with pytest.raises(ValueError, match="successes"):
        clopper_pearson_interval(11, 10)
    with pytest.raises(ValueError, match="unknown proportion interval"):
        proportion_interval(3, 10, method="wald")


def _coverage(interval, p: float, n: int, draws: int = 2000, seed: int = 0) -> float:
    successes = np.random.default_rng(seed).binomial(n, p, draws)
    bounds = {k: interval(k, n) for k in np.unique(successes)}
    return float(np.mean([bounds[k][0] <= p <= bounds[k][1] for k in successes]))


@pytest.mark.parametrize("n", [14, 50])
@pytest.mark.parametrize("p", [0.5, 0.9, 0.99])
def test_clopper_pearson_keeps_95_percent_coverage(p, n):
    assert _coverage(clopper_pearson_interval, p, n) >= 0.93


def test_wilson_undercovers_where_good_models_sit():
    """Why Clopper-Pearson is the default: Wilson's coverage near p = 1 with few units."""
    assert _coverage(wilson_interval, 0.9, 14) >= 0.93
    assert _coverage(wilson_interval, 0.99, 14) < 0.9


def test_group_correlation_is_paid_for_with_effective_units():
    """14 groups of 4 images, each group all right or all wrong (rotations of one tile): the
    image count overstates the evidence 4-fold; n_eff over groups keeps the coverage."""
    rng = np.random.default_rng(1)
    groups = np.repeat(np.arange(14), 4)
    labels = np.tile([1, 1, 1, 1, 0, 0, 0, 0], 7)
    hits = {"grouped": 0, "by image": 0}
    for _ in range(500):
        right = np.repeat(rng.random(14) < 0.9, 4)
        probs = np.where(right == labels.astype(bool), 0.8, 0.2)
        for key, g in (("grouped", groups), ("by image", None)):
            accuracy = metric_intervals(labels, probs, groups=g, n_boot=0)["accuracy"]
            hits[key] += accuracy.low <= 0.9 <= accuracy.high
    assert hits["grouped"] / 500 >= 0.93
    assert hits["by image"] / 500 < 0.9
    accuracy = metric_intervals(labels, probs, groups=groups, n_boot=0)["accuracy"]
    assert accuracy.units == 14.0 and accuracy.method.startswith("Clopper-Pearson on 14 groups")


def test_effective_units():
    assert effective_units(np.arange(10)) == 10.0
    assert effective_units(np.repeat(np.arange(5), 3)) == 5.0
    assert effective_units(np.array([0, 0, 0, 0, 1, 2])) == pytest.approx(36 / 18)  # Kish
    assert effective_units(np.array([])) == 0.0


def test_f1_and_auroc_widen_where_the_bootstrap_collapses():
    labels, probs = _all_correct()
    groups = np.repeat(np.arange(7), 2)
    result = metric_intervals(labels, probs, groups=groups, n_boot=200)
    assert set(result) == {"accuracy", "precision", "recall", "specificity", "f1", "auroc"}
    for name in ("f1", "auroc"):
        assert result[name].estimate == 1.0 and result[name].high == 1.0
        assert result[name].low < 0.9, name
        assert result[name].method.startswith("group bootstrap (200), widened"), result[name].method
    # F1 is at least the harmonic mean of the precision and recall bounds (Bonferroni halves).
    assert result["f1"].low <= result["precision"].low


def test_intervals_hold_their_estimates_away_from_the_edges():
    rng = np.random.default_rng(2)
    labels = rng.random(120) < 0.5
    probs = np.clip(np.where(labels, 0.65, 0.35) + rng.normal(0, 0.2, 120), 0, 1)
    groups = np.repeat(np.arange(60), 2)
    result = metric_intervals(labels, probs, groups=groups, n_boot=200)
    for name, interval in result.items():
        assert 0.0 <= interval.low < interval.estimate < interval.high <= 1.0, name
    assert result["f1"].method == "group bootstrap (200)"  # not collapsed: not widened
    assert result["accuracy"].units == pytest.approx(60.0)


def test_undefined_metrics_say_so():
    labels = np.array([0, 0, 0, 1])
    probs = np.array([0.1, 0.2, 0.3, 0.4])  # nothing called cancer at 0.5
    result = metric_intervals(labels, probs, n_boot=50)
    assert result["precision"].method.endswith("undefined (no images)")
    assert np.isnan(result["precision"].low)
    assert result["f1"].estimate == 0.0 and result["f1"].high > 0.5  # never called cancer: not [0, 0]
    one_class = metric_intervals(np.zeros(5), np.linspace(0, 1, 5), n_boot=50)
    assert one_class["auroc"].method == "undefined (one class)" and np.isnan(one_class["auroc"].low)


def test_few_units_warning():
    assert (
        few_units_warning(14, 14)
        == "numbers on 14 groups (14 images): intervals are wide, treat as indicative"
    )
    assert "50 images" in few_units_warning(50)
    assert few_units_warning(1000, 518) is None
    assert few_units_warning(1000, 20) is not None
