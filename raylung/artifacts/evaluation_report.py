"""What an evaluation found, as one document: metrics at each threshold with intervals that say
how they were made, calibration on the split, group-level results, what TTA changed.

Written as ``metrics.json`` (the document), ``predictions.csv`` and the plots; the model card
and the HTML report read the same document.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from raylung.artifacts.intervals import MetricInterval
from raylung.artifacts.loader import to_json
from raylung.artifacts.metrics import Confusion, roc_curve
from raylung.data import Sample
from raylung.data.naming import LABEL_NAMES
from raylung.plots import confusion_matrix_plot, roc_plot

log = logging.getLogger(__name__)

SYNTHETIC_STAMP = "synthetic demo data"
CI_LEVEL = 0.95
PAPER_THRESHOLD = 0.5  # Kim & Kang's cut: results at it stay comparable with the paper's Table 3
FILES = {
    "metrics": "metrics.json",
    "predictions": "predictions.csv",
    "confusion_matrix": "confusion_matrix.png",
    "roc": "roc.png",
    "reliability": "reliability.png",
}


@dataclass(frozen=True)
class SubclassResult:
    """Metrics of one subclass; `rate` is recall for an all-cancer subclass, specificity for an
    all-non-cancer one (`rate_name` says which), and None for a subclass holding both labels."""

    name: str
    n: int
    label: str  # "cancer", "non_cancer" or "mixed"
    accuracy: float
    rate_name: str | None
    rate: float | None
    mean_probability: float


@dataclass(frozen=True)
class AtThreshold:
    """The decision metrics at one threshold, with their intervals (empty with n_boot 0 for
    F1/AUROC) and where the threshold came from."""

    threshold: float
    source: str  # "paper (0.5)", "export: youden on validation", "given (--threshold)"
    metrics: dict[str, float]
    intervals: dict[str, MetricInterval]
    confusion: Confusion

    def to_dict(self) -> dict[str, Any]:
        c = self.confusion
        return {
            "threshold": self.threshold,
            "source": self.source,
            "metrics": self.metrics,
            "confidence_intervals": {k: [v.low, v.high] for k, v in self.intervals.items()},
            "interval_methods": {k: v.method for k, v in self.intervals.items()},
            "confusion_matrix": {"tn": c.tn, "fp": c.fp, "fn": c.fn, "tp": c.tp},
        }


@dataclass
class EvaluationReport:
    """What :func:`raylung.artifacts.evaluate.evaluate` computed and where it wrote it.

    ``metrics``/``intervals``/``threshold``/``confusion`` are those at the operating point
    (the export's stored threshold unless one was given); ``at_thresholds`` holds every
    threshold reported (the paper's 0.5 too).
    """

    model: str
    model_path: Path
    split: str
    splits_file: str
    n: int
    n_groups: int
    threshold: float
    metrics: dict[str, float]  # accuracy, precision, recall, specificity, f1, auroc, loss
    intervals: dict[str, tuple[float, float]]
    n_boot: int
    confusion: Confusion
    per_subclass: list[SubclassResult]
    synthetic: bool
    out_dir: Path
    at_thresholds: list[AtThreshold] = field(default_factory=list)
    calibration: dict[str, Any] = field(default_factory=dict)
    groups: dict[str, Any] | None = None
    tta: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        c = self.confusion
        document: dict[str, Any] = {
            "model": self.model,
            "model_path": str(self.model_path),
            "split": self.split,
            "splits_file": self.splits_file,
            "synthetic_data": self.synthetic,
            "n": self.n,
            "n_groups": self.n_groups,
            "positive_class": "cancer",
            "threshold": self.threshold,
            "metrics": self.metrics,
            "loss": "unweighted binary cross-entropy of the calibrated logits",
            "confidence_intervals": {k: list(v) for k, v in self.intervals.items()},
            "confidence": {"level": CI_LEVEL, "n_boot": self.n_boot, "methods": self._methods()},
            "confusion_matrix": {"tn": c.tn, "fp": c.fp, "fn": c.fn, "tp": c.tp},
            "at_thresholds": [t.to_dict() for t in self.at_thresholds],
            "calibration": self.calibration,
            "groups": self.groups,
            "tta": self.tta,
            "warnings": self.warnings,
            "per_subclass": {
                s.name: {k: v for k, v in asdict(s).items() if k != "name"} for s in self.per_subclass
            },
            "skipped": [{"path": p, "reason": r} for p, r in self.skipped],
        }
        if self.synthetic:
            document = {"note": f"{SYNTHETIC_STAMP}: results mean nothing clinically", **document}
        return document

    def _methods(self) -> dict[str, str]:
        primary = next((t for t in self.at_thresholds if t.threshold == self.threshold), None)
        return {k: v.method for k, v in primary.intervals.items()} if primary else {}


def per_subclass(
    samples: list[Sample], labels: np.ndarray, probs: np.ndarray, threshold: float
) -> list[SubclassResult]:
    names = np.array([s.subclass or "" for s in samples])
    predicted = probs >= threshold
    results = []
    for name in sorted(set(names) - {""}):
        chosen = names == name
        truth, guess = labels[chosen].astype(bool), predicted[chosen]
        accuracy = float(np.mean(truth == guess))
        if truth.all():
            label, rate_name, rate = "cancer", "recall", float(np.mean(guess))
        elif not truth.any():
            label, rate_name, rate = "non_cancer", "specificity", float(np.mean(~guess))
        else:
            label, rate_name, rate = "mixed", None, None
        results.append(SubclassResult(name, int(chosen.sum()), label, accuracy, rate_name, rate,
                                      float(probs[chosen].mean())))  # fmt: skip
    return results


def write_outputs(
    report: EvaluationReport,
    samples: list[Sample],
    labels: np.ndarray,
    probs: np.ndarray,
    logits: np.ndarray,
    reliability: Any = None,
) -> None:
    """metrics.json, predictions.csv, the confusion matrix, ROC and reliability diagram."""
    out = report.out_dir
    out.mkdir(parents=True, exist_ok=True)
    report.files = {key: out / name for key, name in FILES.items() if key != "reliability"}
    title = f"{report.model}, {report.split} split (n={report.n})"
    if report.synthetic:
        title += f"\n{SYNTHETIC_STAMP.upper()}"
    _write_predictions(report.files["predictions"], samples, probs, logits, report.threshold)
    confusion_matrix_plot(report.confusion.as_matrix(), report.files["confusion_matrix"],
                          f"{title}\nthreshold {report.threshold:g}")  # fmt: skip
    fpr, tpr = roc_curve(labels, probs)
    roc_plot(fpr, tpr, report.metrics["auroc"], report.files["roc"], title)
    if reliability is not None:
        report.files["reliability"] = reliability(out / FILES["reliability"], title)
    report.files["metrics"].write_text(to_json(report.to_dict()))
    log.info("wrote evaluation of %s on %d %s images to %s", report.model, report.n, report.split, out)


def _write_predictions(
    path: Path, samples: list[Sample], probs: np.ndarray, logits: np.ndarray, threshold: float
) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "subclass", "group", "probability", "predicted", "logit"])
        for sample, prob, logit in zip(samples, probs, logits, strict=True):
            predicted = LABEL_NAMES[int(prob >= threshold)]
            writer.writerow([sample.path, sample.label_name, sample.subclass or "", sample.group,
                             f"{prob:.6f}", predicted, f"{logit:.6f}"])  # fmt: skip
