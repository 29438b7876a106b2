"""The metrics on cases worked out by hand, and the grouped bootstrap's defining effects."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from raylung.artifacts.metrics import (
    Confusion,
    binary_metrics,
    bootstrap_intervals,
    paired_difference_intervals,
    roc_curve,
)

LABELS = np.array([1, 1, 1, 0, 0])
PROBS = np.array([0.9, 0.6, 0.4, 0.3, 0.7])  # at 0.5: TP 2, FN 1, TN 1, FP 1


def test_metrics_of_a_case_worked_by_hand():
    got = binary_metrics(LABELS, PROBS)
    assert got["accuracy"] == pytest.approx(3 / 5)
    assert got["precision"] == pytest.approx(2 / 3) and got["recall"] == pytest.approx(2 / 3)
    assert got["f1"] == pytest.approx(2 / 3)
    # positive-negative pairs ranked right: (0.9 > 0.3, 0.7), (0.6 > 0.3), (0.4 > 0.3) = 4 of 6
    assert got["auroc"] == pytest.approx(4 / 6)
    assert Confusion.from_predictions(LABELS, PROBS >= 0.5) == Confusion(tp=2, fp=1, tn=1, fn=1)


def test_threshold_moves_the_decision_not_the_auroc():
    strict = binary_metrics(LABELS, PROBS, threshold=0.8)  # only 0.9 is called cancer
    assert strict["precision"] == 1.0 and strict["recall"] == pytest.approx(1 / 3)
    assert strict["auroc"] == binary_metrics(LABELS, PROBS)["auroc"]


def test_undefined_precision_is_zero_silently_and_one_class_auroc_is_nan():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # zero_division=0: no UndefinedMetricWarning either
        nothing_called = binary_metrics(np.array([1, 0, 0]), np.array([0.1, 0.2, 0.3]))
        one_class = binary_metrics(np.array([0, 0, 0]), np.array([0.1, 0.6, 0.3]))
        fpr, tpr = roc_curve(np.array([1, 1]), np.array([0.2, 0.5]))
    assert nothing_called["precision"] == 0.0 and nothing_called["f1"] == 0.0
    assert nothing_called["accuracy"] == pytest.approx(2 / 3)
    assert np.isnan(one_class["auroc"])  # undefined, not 0.5
    assert (fpr == 0).all() and tpr[-1] == 1.0


def test_tied_scores_count_half():
    assert binary_metrics(np.array([1, 0]), np.array([0.5, 0.5]))["auroc"] == pytest.approx(0.5)


def test_roc_curve_steps_through_every_distinct_score():
    fpr, tpr = roc_curve(LABELS, PROBS)
    assert fpr.tolist() == [0, 0, 0.5, 0.5, 0.5, 1.0]
    assert tpr.tolist() == pytest.approx([0, 1 / 3, 1 / 3, 2 / 3, 1, 1])
    assert np.trapezoid(tpr, fpr) == pytest.approx(4 / 6)  # the curve's area is the AUROC


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="differ in shape"):
        binary_metrics(LABELS, PROBS[:3])


def _correlated_groups(n_groups: int = 30, per_group: int = 10, seed: int = 0):
    """Images of a group share their label and (mostly) their score: one patient, many tiles."""
    rng = np.random.default_rng(seed)
    group_label = rng.integers(0, 2, n_groups)
    group_score = np.clip(group_label * 0.3 + rng.random(n_groups) * 0.7, 0, 1)
    groups = np.repeat(np.arange(n_groups), per_group)
    labels = group_label[groups]
    probs = np.clip(group_score[groups] + rng.normal(0, 0.02, groups.size), 0, 1)
    return labels, probs, groups


def test_resampling_whole_groups_widens_the_interval_of_correlated_images():
    labels, probs, groups = _correlated_groups()
    by_image = bootstrap_intervals(labels, probs, n_boot=300, groups=None)
    by_group = bootstrap_intervals(labels, probs, n_boot=300, groups=groups)
    point = binary_metrics(labels, probs)
    for name in ("accuracy", "auroc"):
        low, high = by_group[name]
        assert low <= point[name] <= high
        width_image = by_image[name][1] - by_image[name][0]
        assert high - low > 1.8 * width_image, (name, by_image[name], by_group[name])


def test_a_model_against_itself_differs_by_exactly_zero():
    labels, probs, groups = _correlated_groups()
    delta, intervals = paired_difference_intervals(labels, probs, probs, n_boot=100, groups=groups)
    assert all(value == 0 for value in delta.values())
    assert all(interval == (0.0, 0.0) for interval in intervals.values())


def test_a_better_model_has_a_positive_paired_difference():
    labels, probs, groups = _correlated_groups()
    better = np.where(labels == 1, np.maximum(probs, 0.8), np.minimum(probs, 0.2))
    delta, intervals = paired_difference_intervals(labels, better, probs, n_boot=200, groups=groups)
    assert delta["accuracy"] > 0 and intervals["accuracy"][0] > 0


@pytest.mark.parametrize("seed", range(6))
def test_numpy_metrics_equal_scikit_learns(seed):
    """raylung scores without scikit-learn (it stays out of the Train workers), to its values."""
    from sklearn import metrics as skm

    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 400))
    labels = rng.integers(0, 2, n)
    labels[:2] = [0, 1]
    probs = np.round(rng.random(n), int(rng.integers(1, 4)))  # coarse rounding: many ties
    threshold = float(rng.choice([0.3, 0.5, 0.9]))
    predicted = (probs >= threshold).astype(int)
    precision, recall, f1, _ = skm.precision_recall_fscore_support(
        labels, predicted, labels=[1], average=None, zero_division=0
    )
    expected = {
        "accuracy": skm.accuracy_score(labels, predicted),
        "precision": precision[0],
        "recall": recall[0],
        "f1": f1[0],
        "auroc": skm.roc_auc_score(labels, probs),
    }
    got = binary_metrics(labels, probs, threshold)
    assert got == pytest.approx(expected, rel=1e-12, abs=1e-12)
    (tn, fp), (fn, tp) = skm.confusion_matrix(labels, predicted, labels=[0, 1]).tolist()
    assert Confusion.from_predictions(labels, predicted) == Confusion(tp=tp, fp=fp, tn=tn, fn=fn)


def test_non_finite_scores_are_an_error():
    with pytest.raises(ValueError, match="NaN"):
        binary_metrics(LABELS, np.array([0.9, np.nan, 0.4, 0.3, 0.7]))
