"""The best model's evidence: its test evaluation and its explanation figures.

A retrain (`raylung train --best`) is the model to report: it was trained for the full budget
and already evaluated on the test split no trial has seen. Without one, the best trial's
export is evaluated here, into ``<exp>/report/test/``. Explanation figures already in the
experiment are reused; otherwise :mod:`raylung.explain` draws them for the same model. Both
parts are optional: a failure becomes a note on the page, never a missing report.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raylung.errors import RaylungError
from raylung.experiment import Experiment

log = logging.getLogger(__name__)

REPORT_DIR = "report"
MAX_EXPLANATIONS = 24  # each is a base64 PNG in the page; more makes it slow to open
EXPLAIN_PER_GROUP = 2
METRICS_FILE = "metrics.json"
INDEX_FILE = "explanations.json"  # as raylung.explain.INDEX_FILE, which may be absent


@dataclass(frozen=True)
class ModelEvaluation:
    """The test evaluation (`evaluate`'s metrics.json) of the model the report stands for."""

    source: str  # which model, in words
    model_path: Path | None = None
    directory: Path | None = None  # where metrics.json, confusion_matrix.png and roc.png are
    document: dict[str, Any] = field(default_factory=dict)
    note: str | None = None

    @property
    def synthetic(self) -> bool:
        return bool(self.document.get("synthetic_data"))

    def image(self, name: str) -> Path | None:
        path = self.directory / name if self.directory is not None else None
        return path if path is not None and path.is_file() else None


@dataclass(frozen=True)
class ExplanationFigure:
    path: Path
    caption: str


@dataclass(frozen=True)
class Explanations:
    figures: list[ExplanationFigure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _splits_file(experiment: Experiment) -> str | None:
    """The experiment's own split, so a moved experiment directory still finds it."""
    local = experiment.local / "splits.csv"
    return str(local) if local.is_file() else None


def _fresh(metrics: Path, since: Path, n_boot: int) -> bool:
    """An earlier report's evaluation is reused if newer than best.json and as bootstrapped."""
    if not metrics.is_file() or not since.is_file() or metrics.stat().st_mtime < since.stat().st_mtime:
        return False
    document = json.loads(metrics.read_text())
    return document.get("confidence", {}).get("n_boot") == n_boot


def evaluate_best(
    experiment: Experiment, retrain: Path | None, *, n_boot: int = 1000, progress: bool = True
) -> ModelEvaluation:
    """The retrain's test evaluation if there is one, else an evaluation of best/export
    (with `progress`, its images cached and scored are shown on stderr)."""
    if retrain is not None:
        directory = retrain / "test"
        return ModelEvaluation(
            source=f"{retrain.name}: the best configuration retrained (raylung train --best), test split",
            model_path=retrain / "export",
            directory=directory,
            document=json.loads((directory / METRICS_FILE).read_text()),
        )
    export = experiment.best_export
    source = "best/export: the best trial's best epoch, evaluated on the test split by this report"
    if not export.is_dir():
        return ModelEvaluation(source=source, note="no best model: best/export is missing")
    directory = experiment.local / REPORT_DIR / "test"
    if not _fresh(directory / METRICS_FILE, experiment.best_json, n_boot):
        from raylung.artifacts.evaluate import evaluate

        try:
            evaluate(
                export, "test", splits_file=_splits_file(experiment), out_dir=directory, n_boot=n_boot,
                progress=progress,
            )  # fmt: skip
        except RaylungError as exc:
            log.warning("test evaluation failed: %s", exc)
            return ModelEvaluation(source=source, model_path=export, note=f"test evaluation failed: {exc}")
    document = json.loads((directory / METRICS_FILE).read_text())
    return ModelEvaluation(source=source, model_path=export, directory=directory, document=document)


def _caption(name: str, entry: dict[str, Any]) -> str:
    """e.g. "tp_000_x.png · TP · true cancer · P(cancer) 0.90"."""
    words = [name, entry.get("category")]
    if entry.get("true_label"):
        words.append(f"true {entry['true_label']}")
    if isinstance(entry.get("probability"), (int, float)):
        words.append(f"P(cancer) {entry['probability']:.2f}")
    return " · ".join(str(w) for w in words if w)


def _folder_figures(folder: Path, root: Path) -> tuple[list[ExplanationFigure], str]:
    """A folder's PNGs in its index's order (TP, TN, FP, FN), captioned from the index
    (:mod:`raylung.explain` writes explanations.json beside them), and what model they explain."""
    index = folder / INDEX_FILE
    document = json.loads(index.read_text()) if index.is_file() else {}
    where = str(folder.relative_to(root)) if folder.is_relative_to(root) else str(folder)
    figures, seen = [], set()
    for entry in (document.get("images") or {}).values():
        png = folder / str(entry.get("png", ""))
        if png.suffix.lower() != ".png" or not png.is_file() or png in seen:
            continue
        seen.add(png)
        figures.append(ExplanationFigure(png, _caption(png.name, entry)))
    figures += [ExplanationFigure(p, p.name) for p in sorted(folder.glob("*.png")) if p not in seen]
    model = document.get("model_path")
    about = f"{where}: {len(figures)} figure(s)" + (f" of {model}" if model else "")
    return figures, about


def _explain_dirs(experiment: Experiment) -> list[Path]:
    dirs = sorted(experiment.local.glob("retrain-*/explain")) + [experiment.local / REPORT_DIR / "explain"]
    return [d for d in dirs if d.is_dir() and any(d.glob("*.png"))]


def explanations(
    experiment: Experiment, evaluation: ModelEvaluation, *, generate: bool = True
) -> Explanations:
    """Explanation PNGs already in the experiment, else new ones for the reported model."""
    dirs = _explain_dirs(experiment)
    notes: list[str] = []
    if not dirs:
        notes = _generate(experiment, evaluation) if generate else ["not generated (--no-explain)"]
        dirs = _explain_dirs(experiment)
    figures = []
    for folder in dirs:
        found, about = _folder_figures(folder, experiment.local)
        figures += found
        notes.append(about)
    if len(figures) > MAX_EXPLANATIONS:
        notes.append(f"showing {MAX_EXPLANATIONS} of {len(figures)} figures")
        figures = figures[:MAX_EXPLANATIONS]
    return Explanations(figures=figures, notes=notes)


def _generate(experiment: Experiment, evaluation: ModelEvaluation) -> list[str]:
    """Draw figures for the reported model into report/explain; returns notes on what failed."""
    if evaluation.model_path is None or not evaluation.model_path.is_dir():
        return ["no model to explain"]
    splits = _splits_file(experiment)
    if splits is None:
        return [f"no splits.csv in {experiment.local}: the test images are unknown"]
    try:
        from raylung.explain import explain_test_sample
    except ImportError as exc:
        return [f"raylung.explain is not available in this installation ({exc}); no figures generated"]
    out_dir = experiment.local / REPORT_DIR / "explain"
    try:
        paths = explain_test_sample(
            evaluation.model_path, splits, out_dir, per_group=EXPLAIN_PER_GROUP, seed=0
        )
    except RaylungError as exc:  # e.g. the test images moved: the page says so
        log.warning("explanation figures failed: %s", exc)
        return [f"explanation figures failed: {exc}"]
    except Exception as exc:  # optional figures from a young module: say so on the page, not raise
        log.exception("explanation figures failed")
        return [f"explanation figures failed: {type(exc).__name__}: {exc}"]
    return [] if paths else ["raylung.explain wrote no figures (no test images?)"]
