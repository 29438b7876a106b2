"""The decision threshold on P(cancer), chosen by a rule on the validation split.

Rules (:class:`raylung.config.schema.ThresholdRule`): ``fixed`` keeps a given value (0.5, the
paper's, by default); ``youden`` maximises Youden's J = sensitivity + specificity - 1 (Youden
1950); ``sensitivity`` takes the highest threshold whose sensitivity reaches the target (the
most specific screen that still finds that share of cancers); ``specificity`` the lowest whose
specificity reaches it. An image is called cancer when P(cancer) >= threshold.

Only thresholds halfway between two neighbouring distinct probabilities of the split (plus 0
and 1) are considered. Every threshold in such a gap classifies the split identically, so this
loses nothing, and the midpoint keeps a margin from the images the rule was fitted on instead
of sitting on one of them. Ties of Youden's J go to the lowest threshold, favouring
sensitivity, as a cancer screen should; when no threshold has J > 0 (an uninformative model),
the rule's fixed value is kept, with the reason.

Reached rates are on the split the threshold was fitted on, so they are optimistic; the test
split says what the threshold achieves.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from raylung.config.schema import ThresholdRule


@dataclass(frozen=True)
class OperatingPoint:
    """A chosen threshold, the rule behind it and what it reached on the data it was fitted on.

    `split` names the data the rates were measured on (and a fitted rule fitted on); `reason`
    says why a fitted rule fell back to its fixed value (rates are None where there was no data).
    """

    threshold: float
    rule: str
    target: float | None
    sensitivity: float | None
    specificity: float | None
    n: int
    n_cancer: int
    split: str | None
    reason: str | None = None

    def to_manifest(self) -> dict[str, Any]:
        document = asdict(self)
        if self.reason is None:
            del document["reason"]
        return document


def rates_at(labels: np.ndarray, probs: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sensitivity, specificity) at each threshold; NaN where the class is absent."""
    labels = np.asarray(labels).astype(bool)
    probs = np.asarray(probs, dtype=np.float64)
    thresholds = np.asarray(thresholds, dtype=np.float64)
    # Sorted scores and searchsorted: count of probabilities >= t per threshold in O(n log n).
    positives, negatives = np.sort(probs[labels]), np.sort(probs[~labels])
    with np.errstate(invalid="ignore", divide="ignore"):
        sensitivity = (positives.size - np.searchsorted(positives, thresholds, "left")) / positives.size
        specificity = np.searchsorted(negatives, thresholds, "left") / negatives.size
    return sensitivity, specificity


def candidate_thresholds(probs: np.ndarray) -> np.ndarray:
    """0, the midpoints between neighbouring distinct probabilities, and 1, ascending."""
    distinct = np.unique(np.asarray(probs, dtype=np.float64))
    return np.unique(np.concatenate([[0.0], (distinct[:-1] + distinct[1:]) / 2, [1.0]]))


def choose_operating_point(
    labels: np.ndarray, probs: np.ndarray, rule: ThresholdRule, split: str = "validation"
) -> OperatingPoint:
    """Apply `rule` to (`labels`, `probs`); a fitted rule falls back to ``rule.value`` when the
    data lacks the class it needs (the reason is recorded)."""
    labels = np.asarray(labels).astype(bool)
    probs = np.asarray(probs, dtype=np.float64)
    if labels.shape != probs.shape:
        raise ValueError(f"labels {labels.shape} and probs {probs.shape} differ in shape")
    lacking = {"youden": "holds one class only", "sensitivity": "has no cancer images",
               "specificity": "has no non-cancer images"}  # fmt: skip
    missing = {
        "youden": labels.all() or not labels.any(),
        "sensitivity": not labels.any(),
        "specificity": labels.all(),
    }
    if rule.rule == "fixed" or missing[rule.rule]:
        reason = None if rule.rule == "fixed" else f"the {split} split {lacking[rule.rule]}"
        return _point(labels, probs, rule, rule.value, split, reason)
    candidates = candidate_thresholds(probs)
    sensitivity, specificity = rates_at(labels, probs, candidates)
    if rule.rule == "youden":
        best = int(np.argmax(sensitivity + specificity))  # first = lowest on ties
        if sensitivity[best] + specificity[best] - 1 <= 0:  # no cut beats calling everything one class
            reason = f"no threshold separates the classes on the {split} split (Youden's J <= 0)"
            return _point(labels, probs, rule, rule.value, split, reason)
        chosen = candidates[best]
    elif rule.rule == "sensitivity":
        chosen = candidates[sensitivity >= _reachable(rule.target)].max()
    else:
        chosen = candidates[specificity >= _reachable(rule.target)].min()
    return _point(labels, probs, rule, float(chosen), split, None)


def _reachable(target: float | None) -> float:
    """The target, less float noise: 19 of 20 reaches 0.95 although 19 / 20 < 0.95 in floats."""
    assert target is not None  # ThresholdRule guarantees a target for these rules
    return target - 1e-9


def _point(
    labels: np.ndarray, probs: np.ndarray, rule: ThresholdRule, threshold: float, split: str,
    reason: str | None,
) -> OperatingPoint:  # fmt: skip
    sensitivity, specificity = rates_at(labels, probs, np.array([threshold]))
    return OperatingPoint(
        threshold=threshold,
        rule=rule.rule,
        target=rule.target,
        sensitivity=_finite(sensitivity[0]),
        specificity=_finite(specificity[0]),
        n=int(labels.size),
        n_cancer=int(labels.sum()),
        split=split if labels.size else None,
        reason=reason,
    )


def fallback_operating_point(rule: ThresholdRule, reason: str) -> OperatingPoint:
    """The rule's fixed value, used when there is no validation data to fit on at all."""
    return OperatingPoint(rule.value, rule.rule, rule.target, None, None, 0, 0, None, reason)


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None
