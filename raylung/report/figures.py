"""The report's own figures, returned as PNG bytes to embed (nothing is written next to them).

Like :mod:`raylung.plots`, each builds a :class:`matplotlib.figure.Figure` directly, never
``pyplot``, so no backend is switched and no global figure state leaks.
"""

from __future__ import annotations

import io
import math
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from raylung.plots import learning_curves
from raylung.tune.results import TrialSummary

if TYPE_CHECKING:
    from raylung.report.sections import ReportData

__all__ = ["Figures", "best_trial_curves", "draw", "importance_chart", "trial_curves"]

_DPI = 110
_STYLES = {"completed": "-", "early-stopped": "--", "pruned": ":", "error": "-."}


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=_DPI, format="png")
    return buffer.getvalue()


def trial_curves(trials: Sequence[TrialSummary], metric: str, best_id: str | None) -> bytes | None:
    """Every trial's `metric` per epoch; the line style tells how it ended, the best is bold."""
    drawn = [t for t in trials if any(math.isfinite(row.get(metric, math.nan)) for row in t.history)]
    if not drawn:
        return None
    fig = Figure(figsize=(8.0, 4.2), layout="constrained")
    ax = fig.subplots()
    for trial in drawn:
        rows = [row for row in trial.history if math.isfinite(row.get(metric, math.nan))]
        is_best = trial.trial_id == best_id
        ax.plot(
            [row["epoch"] for row in rows], [row[metric] for row in rows],
            linestyle=_STYLES.get(trial.status, "-"), marker="o", markersize=3,
            linewidth=2.6 if is_best else 1.2, alpha=1.0 if is_best else 0.7, zorder=3 if is_best else 2,
            label=f"{trial.trial_id} ({trial.status})" + (" - best" if is_best else ""),
        )  # fmt: skip
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.set_title(f"{metric} per epoch (dotted: pruned by ASHA, dashed: early-stopped)", fontsize=9)
    if len(drawn) <= 16:
        ax.legend(fontsize=7, loc="best")
    return _png(fig)


def best_trial_curves(history: Sequence[dict], monitor: str) -> bytes | None:
    """Train/validation loss and validation metrics of one trial, as `raylung train` draws them."""
    if not history:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        return learning_curves(history, Path(tmp) / "curves.png", monitor=monitor).read_bytes()


def importance_chart(importances: dict[str, float]) -> bytes | None:
    """Horizontal bars, the most important parameter on top."""
    if not importances:
        return None
    names = list(importances)[::-1]
    values = [importances[n] for n in names]
    fig = Figure(figsize=(7.0, 0.45 * len(names) + 1.2), layout="constrained")
    ax = fig.subplots()
    bars = ax.barh(names, values, color="#4c72b0")
    ax.bar_label(bars, labels=[f"{v:.2f}" for v in values], padding=3, fontsize=8)
    ax.set_xlim(0, max(1.0, max(values) * 1.15))
    ax.set_xlabel("importance (fANOVA, normalised to sum 1)")
    ax.tick_params(axis="y", labelsize=8)
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


@dataclass(frozen=True)
class Figures:
    """The report's own figures as PNG bytes (None where there is nothing to draw)."""

    trials: bytes | None = None
    best_trial: bytes | None = None
    importance: bytes | None = None


def draw(data: ReportData) -> Figures:
    metric = data.header.metric
    best_id = data.header.best["trial_id"] if data.header.best else None
    best = next((t for t in data.trials if t.trial_id == best_id), None)
    return Figures(
        trials=trial_curves(data.trials, metric, best_id),
        best_trial=best_trial_curves(best.history, metric) if best is not None else None,
        importance=importance_chart(data.importance.values),
    )
