"""Group-level results: one score and decision per group, metrics over groups, worked by hand."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import pytest

from raylung.artifacts.groups import group_keys, group_results, write_group_csv
from raylung.errors import ConfigError, DataError

# Three groups of 3, 2 and 4 tiles, interleaved; exact binary fractions so means are exact.
#   A (cancer):     0.875 0.75 0.125         mean 7/12 = 0.583, tiles >= 0.5: 2/3
#   B (non_cancer): 0.625 0.5                mean 0.5625,       tiles >= 0.5: 2/2
#   C (cancer):     0.75 0.25 0.375 0.625    mean 0.5,          tiles >= 0.5: 2/4
GROUPS = ["A", "C", "B", "A", "C", "C", "B", "A", "C"]
PROBS = [0.875, 0.75, 0.625, 0.75, 0.25, 0.375, 0.5, 0.125, 0.625]
LABELS = [1, 1, 0, 1, 1, 1, 0, 1, 1]


def test_mean_rule_by_hand():
    results = group_results(GROUPS, LABELS, PROBS, threshold=0.5, rule="mean")
    assert [(r.group, r.n_tiles, r.label) for r in results.rows] == [("A", 3, 1), ("B", 2, 0), ("C", 4, 1)]
    assert [r.score for r in results.rows] == pytest.approx([7 / 12, 0.5625, 0.5])
    # every mean is >= 0.5 (C exactly at it): all three called cancer, B falsely
    assert [r.predicted for r in results.rows] == [1, 1, 1]
    # accuracy 2/3; precision 2/3 (B is a false positive); recall 2/2; F1 = 2*(2/3)/(2/3 + 1) = 0.8;
    # AUROC over the positive-negative pairs (A, B) and (C, B): A > B, C < B -> 1/2
    assert results.metrics == pytest.approx(
        {"accuracy": 2 / 3, "precision": 2 / 3, "recall": 1.0, "f1": 0.8, "auroc": 0.5}
    )
    assert results.decision_threshold == 0.5 and results.describe() == "mean tile probability >= 0.5"


def test_fraction_rule_by_hand():
    # fractions of tiles >= 0.5: A 2/3, B 1, C 1/2; with a cutoff of 0.75 only B is cancer
    results = group_results(GROUPS, LABELS, PROBS, threshold=0.5, rule="fraction", cutoff=0.75)
    assert [r.score for r in results.rows] == pytest.approx([2 / 3, 1.0, 0.5])
    assert [r.fraction_cancer for r in results.rows] == [r.score for r in results.rows]
    assert [r.predicted for r in results.rows] == [0, 1, 0]
    # no true positive: accuracy 0, precision = recall = F1 = 0; B's score tops both positives: AUROC 0
    assert results.metrics == pytest.approx(
        {"accuracy": 0.0, "precision": 0.0, "recall": 0.0, "f1": 0.0, "auroc": 0.0}
    )
    # a cutoff of one half: C's 2 of 4 tiles suffice (>=), so all three are cancer again
    assert [r.predicted for r in group_results(GROUPS, LABELS, PROBS, 0.5, "fraction").rows] == [1, 1, 1]
    # the tile threshold moves which tiles count: at 0.7 A has 2/3, B 0, C 1/4
    high = group_results(GROUPS, LABELS, PROBS, threshold=0.7, rule="fraction", cutoff=0.5)
    assert [r.score for r in high.rows] == pytest.approx([2 / 3, 0.0, 0.25])
    assert high.metrics["accuracy"] == pytest.approx(2 / 3) and high.decision_threshold == 0.5


def test_mixed_labels_make_a_cancer_group_and_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="raylung.artifacts.groups"):
        results = group_results(["p1", "p1", "p2"], [0, 1, 0], [0.2, 0.9, 0.1])
    assert [(r.group, r.label) for r in results.rows] == [("p1", 1), ("p2", 0)]
    assert "1 group(s) hold both cancer and non_cancer tiles (p1)" in caplog.text


def test_unlabelled_groups_have_no_metrics_and_no_label_column(tmp_path):
    results = group_results(GROUPS, None, PROBS)
    assert results.metrics == {} and results.labels is None
    assert all(r.label is None for r in results.rows)
    with open(write_group_csv(tmp_path / "g.csv", results), newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["group", "n_tiles", "mean_probability", "fraction_cancer", "score",
                             "predicted_label", "rule"]  # fmt: skip
    assert [(r["group"], r["n_tiles"], r["predicted_label"]) for r in rows] == [
        ("A", "3", "cancer"), ("B", "2", "cancer"), ("C", "4", "cancer")
    ]  # fmt: skip
    assert float(rows[0]["mean_probability"]) == pytest.approx(7 / 12, abs=1e-6)
    labelled = write_group_csv(tmp_path / "l.csv", group_results(GROUPS, LABELS, PROBS))
    with open(labelled, newline="") as handle:
        assert [r["label"] for r in csv.DictReader(handle)] == ["cancer", "non_cancer", "cancer"]


def test_bad_inputs_are_clear_errors():
    with pytest.raises(ConfigError, match="group rule 'max'"):
        group_results(GROUPS, LABELS, PROBS, rule="max")
    with pytest.raises(ConfigError, match="cutoff must be within 0..1"):
        group_results(GROUPS, LABELS, PROBS, rule="fraction", cutoff=2.0)
    with pytest.raises(ValueError, match="not logits"):
        group_results(GROUPS, LABELS, [3.0] * len(PROBS))
    with pytest.raises(ValueError, match="group keys"):
        group_results(GROUPS[:-1], None, PROBS)


def test_group_keys_from_folders_and_regexes():
    paths = [Path("/slides/patient_07/tile_a-3.png"), Path("/slides/patient_12/tile_b-1.png")]
    assert group_keys(paths, "folder") == ["patient_07", "patient_12"]
    assert group_keys(paths, r"tile_([a-z])-") == ["a", "b"]
    assert group_keys(paths, r"(?P<side>tile)_(?P<group>[a-z])") == ["a", "b"]
    assert group_keys(paths, r"patient_(\d+)/") == ["07", "12"]  # a '/' searches the whole path
    with pytest.raises(DataError, match=r"yields no group for 1 file\(s\): /slides/patient_12/tile_b-1.png"):
        group_keys(paths, r"tile_(a)")
    with pytest.raises(DataError, match="yields no group for 2"):
        group_keys(paths, r"patient_(\d+)")  # not in the file name, and no '/' to search the path
    with pytest.raises(ConfigError, match="neither 'folder' nor a valid regex"):
        group_keys(paths, "tile_(")
