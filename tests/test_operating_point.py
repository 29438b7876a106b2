"""Operating points: each rule does what it says on the split it was fitted on; the export
section of the config validates once, with clear errors, and old configs still load."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from pydantic import ValidationError
from sklearn.metrics import roc_curve

from raylung.artifacts.operating_point import (
    candidate_thresholds,
    choose_operating_point,
    fallback_operating_point,
    rates_at,
)
from raylung.config import RaylungConfig
from raylung.config.loading import load_config
from raylung.config.schema import ExportConfig, ThresholdRule
from raylung.errors import ConfigError


def _scores(seed: int, n: int = 150) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.random(n) < 0.4
    probs = np.clip(np.where(labels, 0.7, 0.3) + rng.normal(0, 0.2, n), 0, 1).round(3)  # ties too
    return labels, probs


def _rates(labels: np.ndarray, probs: np.ndarray, threshold: float) -> tuple[float, float]:
    called = probs >= threshold
    return float(called[labels].mean()), float((~called[~labels]).mean())


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("target", [0.8, 0.95, 1.0])
def test_sensitivity_rule_meets_its_target_with_the_highest_threshold(seed, target):
    labels, probs = _scores(seed)
    point = choose_operating_point(labels, probs, ThresholdRule(rule="sensitivity", target=target))
    sensitivity, specificity = _rates(labels, probs, point.threshold)
    assert sensitivity >= target
    assert (point.sensitivity, point.specificity) == pytest.approx((sensitivity, specificity))
    assert point.threshold not in set(probs)  # between two images, never on one
    above = np.unique(probs[probs > point.threshold])
    if above.size:  # a threshold above the next image up would miss the target
        assert _rates(labels, probs, np.nextafter(above[0], 1))[0] < target


@pytest.mark.parametrize("seed", range(5))
def test_specificity_rule_meets_its_target_with_the_lowest_threshold(seed):
    labels, probs = _scores(seed)
    point = choose_operating_point(labels, probs, ThresholdRule(rule="specificity", target=0.9))
    assert _rates(labels, probs, point.threshold)[1] >= 0.9
    below = np.unique(probs[probs < point.threshold])  # at or below the next image down: too few
    assert _rates(labels, probs, below[-1])[1] < 0.9


@pytest.mark.parametrize("seed", range(5))
def test_youden_rule_finds_the_best_j(seed):
    labels, probs = _scores(seed)
    point = choose_operating_point(labels, probs, ThresholdRule(rule="youden"))
    fpr, tpr, _ = roc_curve(labels, probs)
    assert point.sensitivity + point.specificity - 1 == pytest.approx(np.max(tpr - fpr))
    assert point.rule == "youden" and point.target is None and point.split == "validation"


def test_a_separated_split_gets_the_middle_of_its_gap():
    labels = np.array([0, 0, 0, 1, 1, 1], dtype=bool)
    probs = np.array([0.05, 0.1, 0.3, 0.7, 0.8, 0.95])
    point = choose_operating_point(labels, probs, ThresholdRule(rule="youden"))
    assert point.threshold == pytest.approx(0.5)
    assert (point.sensitivity, point.specificity, point.n, point.n_cancer) == (1.0, 1.0, 6, 3)


def test_fixed_rule_keeps_its_value_and_reports_rates():
    labels, probs = _scores(0)
    point = choose_operating_point(labels, probs, ThresholdRule())
    assert point.threshold == 0.5 and point.reason is None
    assert (point.sensitivity, point.specificity) == pytest.approx(_rates(labels, probs, 0.5))
    assert "reason" not in point.to_manifest()


def test_missing_classes_fall_back_with_a_reason():
    only_cancer = np.ones(5, dtype=bool)
    probs = np.linspace(0.2, 0.9, 5)
    point = choose_operating_point(only_cancer, probs, ThresholdRule(rule="youden", value=0.4))
    assert point.threshold == 0.4 and point.reason == "the validation split holds one class only"
    assert point.specificity is None and point.sensitivity == pytest.approx(0.6)
    point = choose_operating_point(only_cancer, probs, ThresholdRule(rule="specificity", target=0.9))
    assert point.reason == "the validation split has no non-cancer images"
    fallback = fallback_operating_point(ThresholdRule(rule="sensitivity", target=0.95, value=0.3), "moved")
    assert fallback.to_manifest() == {
        "threshold": 0.3, "rule": "sensitivity", "target": 0.95, "sensitivity": None,
        "specificity": None, "n": 0, "n_cancer": 0, "split": None, "reason": "moved",
    }  # fmt: skip


def test_rates_and_candidates():
    labels = np.array([1, 1, 0, 0], dtype=bool)
    probs = np.array([0.9, 0.4, 0.4, 0.1])
    assert candidate_thresholds(probs) == pytest.approx([0.0, 0.25, 0.65, 1.0])
    sensitivity, specificity = rates_at(labels, probs, np.array([0.0, 0.4, 0.5, 1.0]))
    assert sensitivity == pytest.approx([1.0, 1.0, 0.5, 0.0])
    assert specificity == pytest.approx([0.0, 0.5, 1.0, 1.0])


# ------------------------------------------------------------------------------ configuration


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{threshold: {rule: sensitivity, target: 0.95}}", ThresholdRule(rule="sensitivity", target=0.95)),
        ("{threshold: {rule: youden}}", ThresholdRule(rule="youden")),
        ("{threshold: {rule: fixed, value: 0.5}}", ThresholdRule()),
        ("{threshold: 0.3}", ThresholdRule(value=0.3)),
        ("{threshold: 1}", ThresholdRule(value=1.0)),
    ],
)
def test_threshold_rules_load_from_yaml(text, expected):
    loaded = load_config(text=f"export: {text}\n", path="run.yaml").config
    assert loaded.export.threshold == expected and loaded.export.calibrate is True


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{threshold: {rule: sensitivity}}", "export.threshold: threshold rule sensitivity needs a target"),
        ("{threshold: {rule: specificity, target: 0}}", "export.threshold.target: Input should be greater"),
        ("{threshold: {rule: sensitivity, target: 1.5}}", "export.threshold.target: Input should be less"),
        ("{threshold: 1.5}", "export.threshold.value: Input should be less than or equal to 1"),
        ("{threshold: {rule: fixed, value: -0.1}}", "export.threshold.value: Input should be greater"),
        ("{threshold: {rule: youden, target: 0.9}}", "threshold rule youden takes no target"),
        ("{threshold: {rule: best}}", "export.threshold.rule: Input should be 'fixed', 'youden'"),
        ("{threshold: true}", "export.threshold: Input should be a valid dictionary"),
        ("{calibrate: maybe}", "export.calibrate: Input should be a valid boolean"),
        ("{treshold: 0.4}", "unknown key 'treshold' (did you mean 'threshold'?)"),
    ],
)
def test_impossible_export_settings_give_one_clear_line(text, expected):
    with pytest.raises(ConfigError) as info:
        load_config(text=f"export: {text}\n", path="run.yaml")
    assert expected in str(info.value) and len(str(info.value).splitlines()) == 1


def test_config_saved_before_the_export_section_still_loads():
    old = RaylungConfig().model_dump(mode="json")
    del old["export"]
    config = RaylungConfig.model_validate(yaml.safe_load(yaml.safe_dump(old)))
    assert config.export == ExportConfig() and config.export.threshold.value == 0.5
    with pytest.raises(ValidationError, match="needs a target"):
        ExportConfig(threshold={"rule": "sensitivity"})
