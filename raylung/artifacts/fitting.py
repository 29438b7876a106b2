"""What an export fits on its run's validation split: a temperature and an operating point.

The validation split is the data the run already held out for model selection, so fitting
two more scalars there leaves the test split untouched for reporting. The model is run over it
with evaluation's own loader and inference (:mod:`raylung.artifacts.evaluation_data`), so the logits
are exactly those ``raylung evaluate --split validation`` scores.

When the split is out of reach (no splits file in the config, the file or its images moved, a
split without validation images) the export still succeeds: temperature 1.0 and the rule's
fixed value, each recorded with the reason. ``export.calibrate: false`` skips the temperature
only; the threshold rule is independent of it. With a fixed rule as well, nothing is fitted and
the split is not run at all (a large validation split on a CPU-only driver takes minutes).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from raylung.artifacts.calibration import (
    TEMPERATURE_BOUNDS,
    ReliabilityBins,
    apply_temperature,
    brier_score,
    calibrate,
    expected_calibration_error,
)
from raylung.artifacts.evaluation_data import score_samples, split_samples
from raylung.artifacts.intervals import few_units_warning
from raylung.artifacts.loader import LoadedModel, inference_device
from raylung.artifacts.operating_point import (
    OperatingPoint,
    choose_operating_point,
    fallback_operating_point,
)
from raylung.config import RaylungConfig
from raylung.config.schema import ExportConfig
from raylung.errors import ConfigError, DataError

log = logging.getLogger(__name__)

RELIABILITY_FILE = "reliability.png"
FITTED_ON = "validation"


@dataclass(frozen=True)
class ValidationFit:
    """The temperature and operating point an export stores, with their manifest entries."""

    calibration: dict[str, Any]
    operating_point: OperatingPoint
    reliability: tuple[ReliabilityBins, ReliabilityBins] | None = None  # before, after

    @property
    def temperature(self) -> float:
        return float(self.calibration["temperature"])

    @property
    def threshold(self) -> float:
        return self.operating_point.threshold

    def manifest_entries(self) -> dict[str, Any]:
        """``threshold``, ``calibration`` and ``operating_point``, as :class:`LoadedModel` reads them."""
        return {
            "threshold": self.threshold,
            "calibration": self.calibration,
            "operating_point": self.operating_point.to_manifest(),
        }

    def write_reliability(self, path: Path, title: str) -> Path | None:
        """The reliability diagram before and after scaling (None when nothing was fitted)."""
        if self.reliability is None:
            return None
        from raylung.plots import reliability_diagram

        before, after = self.reliability
        temperature = self.temperature
        curves = {
            f"raw (ECE {before.ece:.3f})": (before.probability, before.frequency, before.count),
            f"T = {temperature:.3g} (ECE {after.ece:.3f})": (after.probability, after.frequency, after.count),
        }
        return reliability_diagram(before.edges, curves, path, title)


def fit_on_validation(
    model: torch.nn.Module,
    config: RaylungConfig,
    settings: ExportConfig,
    source: Path,
    *,
    batch_size: int = 32,
    device: str | torch.device | None = None,
) -> ValidationFit:
    """Fit temperature scaling and the threshold rule of `settings` on the validation split.

    Args:
        model: the eager model (left on the CPU afterwards, where export needs it).
        config: the run's config; ``data.splits_file`` and ``data.root`` locate the split.
        settings: what to fit (usually ``config.export``).
        source: the checkpoint folder, named in messages.
        batch_size: images per forward pass.
        device: where to run the model (default: CUDA when present, else CPU).
    """
    rule = settings.threshold
    if not settings.calibrate and rule.rule == "fixed":  # nothing to fit: spare the inference
        reason = "export.calibrate is false and the threshold rule is fixed: nothing to fit"
        return ValidationFit(_uncalibrated(reason), fallback_operating_point(rule, reason))
    try:
        labels, logits, groups = _validation_logits(model, config, source, batch_size, device)
    except (DataError, ConfigError, OSError) as exc:
        reason = f"nothing fitted on the validation split: {exc}"
        log.warning("export of %s: %s; temperature 1.0, threshold %g", source, reason, rule.value)
        return ValidationFit(_uncalibrated(reason), fallback_operating_point(rule, reason))
    counts: dict[str, Any] = {"n": int(labels.size), "n_groups": int(np.unique(groups).size)}
    if warning := few_units_warning(counts["n"], counts["n_groups"]):
        counts["warning"] = warning
    fit = None
    if not settings.calibrate or labels.all() or not labels.any():
        reason = (
            "export.calibrate is false"
            if not settings.calibrate
            else "the validation split holds one class only"
        )
        raw = apply_temperature(logits)
        calibration = _uncalibrated(reason) | counts
        calibration |= {"ece": expected_calibration_error(labels, raw), "brier": brier_score(labels, raw)}
    else:
        fit = calibrate(logits, labels)
        calibration = fit.to_manifest(FITTED_ON) | counts
        low, high = TEMPERATURE_BOUNDS
        if not low * 1.001 < fit.temperature < high / 1.001:  # e.g. an untrained model: all P -> 0.5
            log.warning(
                "export of %s: temperature %.3g is on its bound %s", source, fit.temperature, (low, high)
            )
    temperature = fit.temperature if fit is not None else 1.0
    point = choose_operating_point(labels, apply_temperature(logits, temperature), rule, FITTED_ON)
    log.info("export of %s: temperature %.3g, threshold %.3g (%s) on %d validation images",
             source, temperature, point.threshold, rule.rule, labels.size)  # fmt: skip
    return ValidationFit(calibration, point, (fit.before, fit.after) if fit is not None else None)


def _uncalibrated(reason: str) -> dict[str, Any]:
    return {"method": "none", "temperature": 1.0, "fitted_on": None, "reason": reason}


def _validation_logits(
    model: torch.nn.Module,
    config: RaylungConfig,
    source: Path,
    batch_size: int,
    device: str | torch.device | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labels, logits, groups) of the validation split, by evaluation's own pipeline."""
    loaded = LoadedModel(model, config, {}, source, "checkpoint")
    loaded.require_binary()
    samples, _ = split_samples(loaded, FITTED_ON, None, None)
    try:
        scored = score_samples(loaded, samples, batch_size, inference_device(device))
    finally:
        model.cpu()
    return scored.labels.astype(bool), scored.logits[0], scored.groups
