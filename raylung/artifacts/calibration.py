"""Calibrated P(cancer): temperature scaling, and the numbers that show whether it helped.

Temperature scaling (Guo et al. 2017, "On Calibration of Modern Neural Networks",
arXiv:1706.04599) divides every logit by one scalar T > 0 fitted on held-out data: T > 1
softens an over-confident network, T = 1 changes nothing. It is monotone, so rankings, the
ROC curve and AUROC are untouched; only the probabilities (and what a threshold on them means)
change.

T minimises the binary cross-entropy of ``logit / T`` on the validation split (the maximum
likelihood fit of Guo et al.). The loss is convex in ``s = 1 / T`` (a linear scaling of the
logit), so a bounded scalar search on s finds the global minimum. When every validation image
lies on the right side of logit 0, as with a good LC25000 model, no finite maximum-likelihood T
exists (the loss keeps falling as T -> 0, towards probabilities of exactly 0 and 1); T is then
fitted to Platt's targets (Platt 1999, "Probabilistic outputs for support vector machines",
sec. 2.2), which replace the labels 1 and 0 by ``(N+ + 1) / (N+ + 2)`` and ``1 / (N- + 2)``:
the smallest correction that keeps T finite, and a prior of one image per class that says a
split of N images cannot show a probability closer to 0 or 1 than about 1 / N. T is also held
within TEMPERATURE_BOUNDS.

Calibration is measured on P(cancer) itself, the probability a threshold acts on: the
expected calibration error over ECE_BINS equal-width bins of [0, 1] is the count-weighted mean
of |mean predicted P(cancer) - observed fraction of cancer| per bin. (Guo et al.'s top-label
ECE bins max(p, 1 - p) instead; for one logit that merges each bin with its mirror image, so it
is at most this value.) The Brier score is the mean squared error of P(cancer).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import expit

ECE_BINS = 15
TEMPERATURE_BOUNDS = (1e-3, 1e3)


def apply_temperature(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """P(cancer) = sigmoid(logit / T), as :meth:`raylung.artifacts.loader.LoadedModel.probabilities`."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return expit(np.asarray(logits, dtype=np.float64) / temperature)


def binary_nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean binary cross-entropy of ``logit / T`` (labels may be soft targets in [0, 1])."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    return float(np.mean(np.logaddexp(0.0, z) - np.asarray(labels, dtype=np.float64) * z))


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature that minimises the NLL of `logits`: against `labels`, or against Platt's
    targets for them where every logit already has the right sign (no finite optimum there)."""
    logits = np.asarray(logits, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels).reshape(-1).astype(bool)
    if logits.shape != labels.shape or not logits.size:
        raise ValueError(f"need matching, non-empty logits and labels, got {logits.shape}, {labels.shape}")
    if labels.all() or not labels.any():
        raise ValueError("fitting a temperature needs both classes")
    targets = labels.astype(np.float64)
    if np.all((logits > 0) == labels):
        n_pos, n_neg = int(labels.sum()), int((~labels).sum())
        targets = np.where(labels, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
    low, high = TEMPERATURE_BOUNDS
    found = minimize_scalar(
        lambda s: binary_nll(logits * s, targets), bounds=(1 / high, 1 / low), method="bounded",
        options={"xatol": 1e-7},
    )  # fmt: skip
    return float(1.0 / found.x)


def brier_score(labels: np.ndarray, probs: np.ndarray) -> float:
    return float(np.mean((np.asarray(probs, dtype=np.float64) - np.asarray(labels, dtype=np.float64)) ** 2))


@dataclass(frozen=True)
class ReliabilityBins:
    """Per equal-width bin of P(cancer): mean predicted probability, observed fraction of
    cancer and count (probability and frequency are NaN in empty bins)."""

    edges: np.ndarray  # n_bins + 1
    probability: np.ndarray
    frequency: np.ndarray
    count: np.ndarray

    @property
    def ece(self) -> float:
        """Expected calibration error: count-weighted mean |probability - frequency|."""
        filled = self.count > 0
        gaps = np.abs(self.probability[filled] - self.frequency[filled])
        return float(np.sum(gaps * self.count[filled]) / max(int(self.count.sum()), 1))


def reliability_bins(labels: np.ndarray, probs: np.ndarray, n_bins: int = ECE_BINS) -> ReliabilityBins:
    labels = np.asarray(labels, dtype=np.float64).reshape(-1)
    probs = np.asarray(probs, dtype=np.float64).reshape(-1)
    if labels.shape != probs.shape:
        raise ValueError(f"labels {labels.shape} and probs {probs.shape} differ in shape")
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # Bins are [a, b) except the last, [a, 1]: P = 1.0 belongs to the top bin.
    which = np.clip(np.searchsorted(edges, probs, side="right") - 1, 0, n_bins - 1)
    count = np.bincount(which, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        probability = np.bincount(which, probs, n_bins) / count
        frequency = np.bincount(which, labels, n_bins) / count
    return ReliabilityBins(edges, probability, frequency, count)


def expected_calibration_error(labels: np.ndarray, probs: np.ndarray, n_bins: int = ECE_BINS) -> float:
    return reliability_bins(labels, probs, n_bins).ece


@dataclass(frozen=True)
class TemperatureFit:
    """A fitted temperature and the calibration of the data it was fitted on, before and after."""

    temperature: float
    n: int
    before: ReliabilityBins
    after: ReliabilityBins
    brier_before: float
    brier_after: float
    nll_before: float
    nll_after: float

    @property
    def ece_before(self) -> float:
        return self.before.ece

    @property
    def ece_after(self) -> float:
        return self.after.ece

    def to_manifest(self, fitted_on: str) -> dict[str, Any]:
        return {
            "method": "temperature",
            "temperature": self.temperature,
            "fitted_on": fitted_on,
            "n": self.n,
            "bounds": list(TEMPERATURE_BOUNDS),  # a temperature on a bound was held there
            "ece_bins": int(self.before.count.size),
            "ece_before": self.ece_before,
            "ece_after": self.ece_after,
            "brier_before": self.brier_before,
            "brier_after": self.brier_after,
            "nll_before": self.nll_before,
            "nll_after": self.nll_after,
        }


def calibrate(logits: np.ndarray, labels: np.ndarray, n_bins: int = ECE_BINS) -> TemperatureFit:
    """Fit a temperature to (`logits`, `labels`) and measure ECE, Brier and NLL before and after."""
    logits = np.asarray(logits, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels, dtype=np.float64).reshape(-1)
    temperature = fit_temperature(logits, labels)
    raw, scaled = apply_temperature(logits), apply_temperature(logits, temperature)
    return TemperatureFit(
        temperature=temperature,
        n=int(labels.size),
        before=reliability_bins(labels, raw, n_bins),
        after=reliability_bins(labels, scaled, n_bins),
        brier_before=brier_score(labels, raw),
        brier_after=brier_score(labels, scaled),
        nll_before=binary_nll(logits, labels),
        nll_after=binary_nll(logits, labels, temperature),
    )
