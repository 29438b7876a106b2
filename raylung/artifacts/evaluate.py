"""Evaluate an exported (or checkpointed) model on one split of its run's splits file.

One process, no Ray: the split is small next to training, and a report should not need a
cluster. Cancer is the positive class (the paper's eqs. 4-7). Probabilities are calibrated by
the export's temperature; metrics are reported at the export's operating point and at the
paper's 0.5, each with a 95% interval that states how it was made (exact intervals on the
effective number of independent groups for proportions, a grouped bootstrap for F1 and AUROC).
With groups (patients, slides, source tiles) the groups are scored too; with ``tta`` the mean
over flips and rotations is scored, and its difference to the plain prediction given with a
paired interval. Results on raylung's synthetic demo data are stamped as such.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from raylung.artifacts.calibration import apply_temperature, brier_score, reliability_bins
from raylung.artifacts.evaluation_data import PLAIN, is_synthetic_split, score_samples, split_samples
from raylung.artifacts.evaluation_report import (
    CI_LEVEL,
    PAPER_THRESHOLD,
    SYNTHETIC_STAMP,
    AtThreshold,
    EvaluationReport,
    per_subclass,
    write_outputs,
)
from raylung.artifacts.groups import GroupRule, check_rule, group_results
from raylung.artifacts.intervals import few_units_warning, metric_intervals
from raylung.artifacts.loader import LoadedModel, inference_device, load_export
from raylung.artifacts.metrics import Confusion, binary_metrics, paired_difference_intervals
from raylung.artifacts.tta import average_views, tta_views
from raylung.data.naming import split_name
from raylung.errors import ConfigError

__all__ = ["SYNTHETIC_STAMP", "EvaluationReport", "evaluate"]

log = logging.getLogger(__name__)


def evaluate(
    model_path: str | Path,
    split: str = "test",
    *,
    splits_file: str | Path | None = None,
    data_root: str | Path | None = None,
    out_dir: str | Path,
    batch_size: int = 32,
    threshold: float | None = None,
    n_boot: int = 1000,
    device: str | torch.device | None = None,
    tta: bool = False,
    calibrated: bool = True,
    group_rule: GroupRule = "mean",
    group_cutoff: float = 0.5,
    update_card: bool = False,
    progress: bool = True,
) -> EvaluationReport:
    """Run the model over `split` and write metrics.json, predictions.csv and the plots.

    Args:
        model_path: an export folder or a training checkpoint folder.
        split: train, validation or test (any spelling :mod:`raylung.data.naming` accepts).
        splits_file: splits CSV (or URI) to read instead of the config's ``data.splits_file``.
        data_root: where the images are now, if they moved since training.
        out_dir: folder for the outputs (created).
        batch_size: images per forward pass.
        threshold: probability at or above which an image is called cancer; default the
            export's operating point (0.5 for a checkpoint or an export without one).
        n_boot: bootstrap resamples for the F1/AUROC intervals and the TTA difference (0 = none).
        device: where to run the model (default: CUDA when present, else CPU).
        tta: also score the mean over flips and the rotations the input's shape allows.
        calibrated: apply the export's temperature (False: the raw sigmoid of the logits).
        group_rule: how tiles of a group make the group's call (``mean`` or ``fraction``).
        group_cutoff: with ``fraction``: the share of cancer tiles that makes a group cancer.
        update_card: record a test evaluation in the export and rewrite its MODEL_CARD.md.
        progress: show images cached and scored, of how many, on stderr.
    """
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise ConfigError(f"threshold must be within 0..1, got {threshold}")
    if n_boot < 0 or batch_size < 1:
        raise ConfigError(f"n_boot must be >= 0 and batch_size >= 1, got {n_boot} and {batch_size}")
    device = inference_device(device)
    loaded = load_export(model_path)
    loaded.require_binary()
    root = Path(data_root).expanduser() if data_root is not None else None
    samples, location = split_samples(loaded, split, splits_file, root)
    height, width = loaded.config.data.image_size[1], loaded.config.data.image_size[0]
    views = tta_views(height, width) if tta else PLAIN
    scored = score_samples(loaded, samples, batch_size, device, views, progress=progress)
    labels, groups = scored.labels, scored.groups
    check_rule(group_rule, threshold if threshold is not None else loaded.threshold, group_cutoff)
    plain = loaded.probabilities(scored.logits[0], calibrated)
    probs = average_views(scored.logits, lambda z: loaded.probabilities(z, calibrated)) if tta else plain

    chosen = threshold if threshold is not None else loaded.threshold
    source = "given" if threshold is not None else _threshold_source(loaded)
    reported = [(chosen, source)]
    if chosen != PAPER_THRESHOLD:
        reported.append((PAPER_THRESHOLD, "paper (0.5)"))
    at = [_at_threshold(labels, probs, t, s, groups, n_boot) for t, s in reported]
    metrics = dict(at[0].metrics, loss=_bce(labels, probs))
    n_groups = int(np.unique(groups).size)
    calibration, draw_reliability = _calibration(loaded, labels, scored.logits[0], calibrated)
    report = EvaluationReport(
        model=loaded.config.model.name,
        model_path=loaded.path,
        split=split_name(split) or split,
        splits_file=location,
        n=len(scored.samples),
        n_groups=n_groups,
        threshold=chosen,
        metrics=metrics,
        intervals={k: v.as_tuple() for k, v in at[0].intervals.items()},
        n_boot=n_boot,
        confusion=at[0].confusion,
        per_subclass=per_subclass(scored.samples, labels, probs, chosen),
        synthetic=is_synthetic_split(scored.samples),
        out_dir=Path(out_dir),
        at_thresholds=at,
        calibration=calibration,
        groups=(
            _group_level(groups, labels, probs, chosen, group_rule, group_cutoff, n_boot)
            if n_groups < len(scored.samples)
            else None
        ),
        tta=_tta_effect(labels, probs, plain, chosen, groups, n_boot, views) if tta else None,
        warnings=[w for w in [few_units_warning(len(scored.samples), n_groups)] if w],
        skipped=scored.skipped,
    )
    write_outputs(report, scored.samples, labels, probs, scored.logits[0], draw_reliability)
    if update_card:
        _update_card(loaded, report)
    return report


def _update_card(loaded: LoadedModel, report: EvaluationReport) -> None:
    """The card states test results only: those of the export's own calibrated predictions."""
    from raylung.artifacts.model_card import record_test_evaluation

    if loaded.source != "export" or report.split != "test" or report.tta:
        raise ConfigError("--update-card records a plain, calibrated test-split evaluation of an export")
    report.files["model_card"] = record_test_evaluation(loaded.path, report.to_dict())


def _threshold_source(loaded: LoadedModel) -> str:
    point = loaded.manifest.get("operating_point")
    if not point:
        return "default (0.5)" if loaded.source == "checkpoint" else "export"
    if point.get("reason"):
        return f"export: {point.get('rule')} (fallback: {point['reason'][:80]})"
    target = f" >= {point['target']:g}" if point.get("target") is not None else ""
    return f"export: {point.get('rule')}{target} on {point.get('split', 'validation')}"


def _at_threshold(
    labels: np.ndarray, probs: np.ndarray, threshold: float, source: str, groups: np.ndarray, n_boot: int
) -> AtThreshold:
    intervals = metric_intervals(labels, probs, threshold, groups=groups, level=CI_LEVEL, n_boot=n_boot)
    metrics = binary_metrics(labels, probs, threshold)
    metrics["specificity"] = intervals["specificity"].estimate
    return AtThreshold(
        threshold, source, metrics, intervals, Confusion.from_predictions(labels, probs >= threshold)
    )


def _bce(labels: np.ndarray, probs: np.ndarray) -> float:
    """Unweighted binary cross-entropy of the reported probabilities (calibrated, TTA-averaged)."""
    p = np.clip(probs, 1e-7, 1 - 1e-7)
    return float(-np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p)))


def _calibration(
    loaded: LoadedModel, labels: np.ndarray, logits: np.ndarray, calibrated: bool
) -> tuple[dict[str, Any], Callable[[Path, str], Path]]:
    """ECE and Brier on this split, of the raw sigmoid and of the export's temperature, and
    the drawer of their reliability diagram (from the same bins)."""
    temperature = loaded.temperature if calibrated else 1.0
    raw, scaled = apply_temperature(logits), apply_temperature(logits, temperature)
    raw_bins, scaled_bins = reliability_bins(labels, raw), reliability_bins(labels, scaled)
    document = {
        "temperature": temperature,
        "fitted_on": loaded.manifest.get("calibration", {}).get("fitted_on"),
        "ece_bins": int(raw_bins.count.size),
        "ece_raw": raw_bins.ece,
        "ece_calibrated": scaled_bins.ece,
        "brier_raw": brier_score(labels, raw),
        "brier_calibrated": brier_score(labels, scaled),
    }

    def draw(path: Path, title: str) -> Path:
        from raylung.plots import reliability_diagram

        curves = {
            f"raw sigmoid (ECE {raw_bins.ece:.3f})": (
                raw_bins.probability,
                raw_bins.frequency,
                raw_bins.count,
            )
        }
        if temperature != 1.0:
            label = f"T = {temperature:.3g} (ECE {scaled_bins.ece:.3f})"
            curves[label] = (scaled_bins.probability, scaled_bins.frequency, scaled_bins.count)
        return reliability_diagram(raw_bins.edges, curves, path, title)

    return document, draw


def _group_level(
    groups: np.ndarray,
    labels: np.ndarray,
    probs: np.ndarray,
    threshold: float,
    rule: GroupRule,
    cutoff: float,
    n_boot: int,
) -> dict[str, Any]:
    """Each group called by `rule`; metrics over groups, each group one independent unit."""
    result = group_results([str(g) for g in groups], labels, probs, threshold, rule, cutoff)
    group_labels = result.labels
    intervals = (
        metric_intervals(
            group_labels, result.scores, result.decision_threshold, level=CI_LEVEL, n_boot=n_boot
        )
        if group_labels is not None
        else {}
    )
    return {
        "rule": rule,
        "aggregation": result.describe(),
        "n": len(result.rows),
        "metrics": result.metrics,
        "confidence_intervals": {k: [v.low, v.high] for k, v in intervals.items()},
        "interval_methods": {k: v.method for k, v in intervals.items()},
    }


def _tta_effect(
    labels: np.ndarray,
    tta: np.ndarray,
    plain: np.ndarray,
    threshold: float,
    groups: np.ndarray,
    n_boot: int,
    views: tuple[str, ...],
) -> dict[str, Any]:
    """What averaging over the views changed, with a paired (same images) interval."""
    delta, intervals = paired_difference_intervals(
        labels, tta, plain, threshold, n_boot=n_boot, level=CI_LEVEL, groups=groups
    )
    return {
        "views": list(views),
        "metrics_without_tta": binary_metrics(labels, plain, threshold),
        "delta": delta,
        "delta_confidence_intervals": {k: list(v) for k, v in intervals.items()},
        "delta_method": f"paired group bootstrap ({n_boot})" if n_boot else "none (n_boot 0)",
    }
