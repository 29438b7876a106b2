"""Small PNG figures for reports: learning curves, the confusion matrix, the ROC curve, reliability.

Every writer builds a :class:`matplotlib.figure.Figure` directly, never ``pyplot``: PNGs are
rendered by Agg whatever the session's backend, nothing opens on screen, no global figure
state leaks, and importing this module does not switch a notebook's backend.
A title passed in is drawn as given, so callers can stamp "synthetic demo data" into it.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator, NullFormatter

__all__ = [
    "best_epoch", "confusion_matrix_plot", "learning_curves", "reliability_diagram", "roc_plot", "save_png",
]  # fmt: skip

CLASS_NAMES = ("non_cancer", "cancer")  # row / column order of metrics.Confusion.as_matrix
_LOSS_KEYS = ("train_loss", "val_loss")
_METRIC_KEYS = ("val_accuracy", "val_precision", "val_recall", "val_f1", "val_auroc")
_DPI = 120


def save_png(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=_DPI, format="png")
    return path


def _series(history: Sequence[dict], key: str) -> tuple[list[float], list[float]]:
    """(epochs, values) of `key`, leaving out epochs that lack it or hold NaN."""
    epochs, values = [], []
    for position, row in enumerate(history, start=1):
        value = row.get(key)
        if isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value):
            epochs.append(float(row.get("epoch", position)))
            values.append(float(value))
    return epochs, values


def best_epoch(history: Sequence[dict], monitor: str = "val_loss") -> int | None:
    """The epoch with the best `monitor` value (lowest for a loss, highest otherwise)."""
    epochs, values = _series(history, monitor)
    if not values:
        return None
    pick = int(np.argmin(values) if "loss" in monitor else np.argmax(values))
    return int(epochs[pick])


def learning_curves(
    history: Sequence[dict],
    path: str | Path,
    monitor: str = "val_loss",
    title: str | None = None,
) -> Path:
    """Losses (left) and validation metrics (right) per epoch, the best `monitor` epoch marked.

    `history` is :attr:`raylung.artifacts.checkpoint.TrainState.history`: one dict per epoch with
    ``epoch``, ``train_loss`` and the ``val_*`` metrics. Missing keys are simply not drawn.
    """
    if not history:
        raise ValueError("learning_curves needs at least one epoch of history")
    fig = Figure(figsize=(9.0, 3.6), layout="constrained")
    loss_ax, metric_ax = fig.subplots(1, 2)
    for ax, keys in ((loss_ax, _LOSS_KEYS), (metric_ax, _METRIC_KEYS)):
        for key in keys:
            epochs, values = _series(history, key)
            if values:
                ax.plot(epochs, values, marker="o", markersize=3, label=key)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    loss_ax.set_ylabel("BCE loss")
    loss_ax.set_title("loss")
    metric_ax.set_ylabel("validation metric")
    metric_ax.set_title("validation metrics")
    metric_ax.set_ylim(-0.02, 1.02)
    best = best_epoch(history, monitor)
    if best is not None:
        for ax in (loss_ax, metric_ax):
            ax.axvline(best, color="0.4", linestyle="--", linewidth=1, label=f"best {monitor} (epoch {best})")
    for ax in (loss_ax, metric_ax):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="best")
    if title:
        fig.suptitle(title, fontsize=10)
    return save_png(fig, path)


def confusion_matrix_plot(
    matrix: np.ndarray | Sequence[Sequence[int]],
    path: str | Path,
    title: str = "confusion matrix",
    labels: Sequence[str] = CLASS_NAMES,
) -> Path:
    """A 2x2 (or NxN) count matrix, rows = true class, columns = predicted, with counts and row %."""
    counts = np.asarray(matrix, dtype=np.int64)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1] or counts.shape[0] != len(labels):
        raise ValueError(f"expected a square matrix with {len(labels)} rows, got shape {counts.shape}")
    row_totals = counts.sum(axis=1, keepdims=True)
    fractions = np.divide(counts, row_totals, out=np.zeros(counts.shape), where=row_totals > 0)
    fig = Figure(figsize=(4.2, 3.8), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(fractions, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
    for (row, col), count in np.ndenumerate(counts):
        colour = "white" if fractions[row, col] > 0.5 else "black"
        ax.text(col, row, f"{count}\n{fractions[row, col]:.0%}", ha="center", va="center", color=colour)
    ticks = np.arange(len(labels))
    ax.set_xticks(ticks, labels)
    ax.set_yticks(ticks, labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=10)
    return save_png(fig, path)


def roc_plot(
    fpr: np.ndarray | Sequence[float],
    tpr: np.ndarray | Sequence[float],
    auroc: float,
    path: str | Path,
    title: str = "ROC curve",
) -> Path:
    """The ROC curve (cancer positive) with the chance diagonal and the AUROC in the legend."""
    fpr, tpr = np.asarray(fpr, dtype=np.float64), np.asarray(tpr, dtype=np.float64)
    if fpr.shape != tpr.shape or fpr.ndim != 1:
        raise ValueError(f"fpr {fpr.shape} and tpr {tpr.shape} must be 1-D and of equal length")
    fig = Figure(figsize=(4.2, 4.0), layout="constrained")
    ax = fig.subplots()
    label = f"AUROC {auroc:.3f}" if math.isfinite(auroc) else "AUROC undefined (one class)"
    ax.plot(fpr, tpr, linewidth=1.5, label=label)  # linear between thresholds, as sklearn
    ax.plot([0, 1], [0, 1], color="0.6", linestyle=":", linewidth=1, label="chance")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_aspect("equal")
    ax.set_xlabel("false positive rate (1 - specificity)")
    ax.set_ylabel("true positive rate (recall)")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    return save_png(fig, path)


def reliability_diagram(
    edges: np.ndarray | Sequence[float],
    curves: Mapping[str, tuple[Sequence[float], Sequence[float], Sequence[int]]],
    path: str | Path,
    title: str = "reliability diagram",
) -> Path:
    """Observed fraction of cancer against mean predicted P(cancer) per bin, with bin counts below.

    `curves` maps a legend label (e.g. ``"before (ECE 0.12)"``) to per-bin (mean probability,
    observed frequency, count), as :func:`raylung.artifacts.calibration.reliability_bins` gives;
    empty bins (count 0) are left out of the curve. A calibrated model lies on the diagonal.
    """
    edges = np.asarray(edges, dtype=np.float64)
    if edges.ndim != 1 or edges.size < 2 or not curves:
        raise ValueError("reliability_diagram needs bin edges (n_bins + 1) and at least one curve")
    fig = Figure(figsize=(4.6, 5.4), layout="constrained")
    curve_ax, count_ax = fig.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    curve_ax.plot([0, 1], [0, 1], color="0.6", linestyle=":", linewidth=1, label="calibrated")
    width = np.diff(edges) / (len(curves) + 1)
    for offset, (label, (probability, frequency, count)) in enumerate(curves.items()):
        probability, frequency = np.asarray(probability, float), np.asarray(frequency, float)
        count = np.asarray(count, dtype=np.int64)
        if not probability.size == frequency.size == count.size == edges.size - 1:
            raise ValueError(f"curve {label!r}: need one probability, frequency and count per bin")
        filled = count > 0
        line = curve_ax.plot(probability[filled], frequency[filled], marker="o", markersize=3, label=label)
        count_ax.bar(edges[:-1] + width * (offset + 0.5), count, width=width, align="edge",
                     color=line[0].get_color(), alpha=0.8)  # fmt: skip
    curve_ax.set_xlim(-0.01, 1.01)
    curve_ax.set_ylim(-0.01, 1.01)
    curve_ax.set_ylabel("observed fraction of cancer")
    curve_ax.set_title(title, fontsize=10)
    curve_ax.legend(loc="upper left", fontsize=8)
    curve_ax.grid(alpha=0.3)
    count_ax.set_yscale("log")  # a confident model piles its images into the end bins
    count_ax.set_ylim(bottom=0.7)  # a bin of one image still shows
    count_ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    count_ax.yaxis.set_minor_formatter(NullFormatter())
    count_ax.set_xlabel("predicted P(cancer)")
    count_ax.set_ylabel("images")
    count_ax.grid(alpha=0.3)
    return save_png(fig, path)
