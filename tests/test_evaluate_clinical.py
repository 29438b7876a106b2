"""What a pathologist reads from `evaluate`: the operating point beside 0.5, calibration on the
split, per-group results, what TTA changed, and MODEL_CARD.md built from the recorded numbers."""

from __future__ import annotations

import csv
import json
import re

import numpy as np
import pytest
import torch
from model_factory import make_checkpoint

from raylung.artifacts.evaluate import evaluate
from raylung.artifacts.export import export_checkpoint
from raylung.artifacts.groups import group_results
from raylung.artifacts.loader import load_export, sha256
from raylung.artifacts.tta import apply_view, tta_views
from raylung.config.schema import ExportConfig, ThresholdRule
from raylung.data import LungDataset, SplitSet

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("clinical")
    checkpoint, net, config = make_checkpoint(tmp)
    plain = export_checkpoint(checkpoint, tmp / "plain", formats=[], settings=ExportConfig(calibrate=False))
    screen = ExportConfig(calibrate=False, threshold=ThresholdRule(rule="sensitivity", target=0.75))
    chosen = export_checkpoint(checkpoint, tmp / "screen", formats=[], settings=screen)
    return tmp, net, config, plain, chosen


def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_metrics_at_the_operating_point_and_at_the_papers_half(made, tmp_path):
    _, _, _, _, chosen = made
    loaded = load_export(chosen)
    assert loaded.manifest["operating_point"]["rule"] == "sensitivity"
    assert loaded.manifest["operating_point"]["sensitivity"] >= 0.75  # on validation, where it was fitted
    report = evaluate(chosen, "test", out_dir=tmp_path, n_boot=100, device="cpu")
    assert report.threshold == pytest.approx(loaded.threshold)
    assert [t.threshold for t in report.at_thresholds][0] == pytest.approx(loaded.threshold)
    assert "sensitivity >= 0.75 on validation" in report.at_thresholds[0].source
    if loaded.threshold != 0.5:
        paper = report.at_thresholds[1]
        assert paper.threshold == 0.5 and paper.source == "paper (0.5)"
        probs = np.array([float(r["probability"]) for r in _rows(report.files["predictions"])])
        labels = np.array([r["label"] == "cancer" for r in _rows(report.files["predictions"])])
        assert paper.metrics["recall"] == pytest.approx(np.mean(probs[labels] >= 0.5))
    for at in report.at_thresholds:  # every interval says how it was made
        assert set(at.intervals) >= {"accuracy", "recall", "specificity"}
        assert all(interval.method for interval in at.intervals.values())


def test_tta_scores_the_mean_of_the_views_and_reports_its_change(made, tmp_path):
    _, net, config, plain, _ = made
    report = evaluate(plain, "test", out_dir=tmp_path, n_boot=50, tta=True, device="cpu")
    samples = SplitSet.load(config.data.splits_file)["test"]
    dataset = LungDataset(samples, config.data, train=False)
    images = torch.stack([dataset[i][0] for i in range(len(dataset))])
    views = tta_views(*images.shape[-2:])
    assert report.tta["views"] == list(views) and "rot90" not in views  # 64x48: no quarter turns
    with torch.no_grad():
        by_view = [torch.sigmoid(net(apply_view(images, v))).reshape(-1).double().numpy() for v in views]
    written = np.array([float(r["probability"]) for r in _rows(report.files["predictions"])])
    np.testing.assert_allclose(written, np.mean(by_view, axis=0), atol=2e-6)
    assert report.tta["delta"]["accuracy"] == pytest.approx(
        report.metrics["accuracy"] - report.tta["metrics_without_tta"]["accuracy"]
    )


def test_groups_are_scored_when_images_share_them(made, tmp_path):
    _, _, config, plain, _ = made
    lines = open(config.data.splits_file).read().splitlines()
    header, rows = lines[0].split(","), [line.split(",") for line in lines[1:]]
    group_at, label_at = header.index("group"), header.index("label")
    by_label: dict[str, int] = {}
    for row in rows:  # pairs of same-label images make one group each
        count = by_label.get(row[label_at], 0)
        by_label[row[label_at]] = count + 1
        row[group_at] = f"{row[label_at]}-{count // 2}"
    grouped = tmp_path / "grouped.csv"
    grouped.write_text("\n".join([lines[0], *(",".join(r) for r in rows)]) + "\n")
    report = evaluate(plain, "test", splits_file=grouped, out_dir=tmp_path / "out", n_boot=0, device="cpu")
    assert report.groups is not None and report.n_groups < report.n
    written = _rows(report.files["predictions"])
    expected = group_results(
        [r["group"] for r in written],
        [int(r["label"] == "cancer") for r in written],
        [float(r["probability"]) for r in written],
        report.threshold,
    )
    assert report.groups["n"] == len(expected.rows) == report.n_groups
    for name, value in expected.metrics.items():
        assert report.groups["metrics"][name] == pytest.approx(value, nan_ok=True)
    assert "mean tile probability" in report.groups["aggregation"]


def test_calibration_on_the_split_and_a_reliability_diagram(made, tmp_path):
    _, _, _, plain, _ = made
    report = evaluate(plain, "test", out_dir=tmp_path, n_boot=0, device="cpu")
    document = json.loads(report.files["metrics"].read_text())
    calibration = document["calibration"]
    assert calibration["temperature"] == 1.0  # exported uncalibrated: both columns agree
    assert calibration["ece_raw"] == pytest.approx(calibration["ece_calibrated"])
    assert 0.0 <= calibration["brier_raw"] <= 1.0
    assert report.files["reliability"].stat().st_size > 1000
    assert document["warnings"] and "treat as indicative" in document["warnings"][0]  # 8 images


def _table(card: str, heading: str) -> dict[str, list[str]]:
    """The `| name | cells |` rows of the first table after `heading`, by first cell."""
    section = card.split(heading, 1)[1]
    rows = {}
    for line in section.splitlines():
        if line.startswith("| ") and not line.startswith("| metric") and not line.startswith("|---"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows.setdefault(cells[0], cells[1:])
        elif rows and not line.startswith("|"):
            break
    return rows


def test_the_model_card_states_the_recorded_numbers(made, tmp_path):
    _, _, _, _, chosen = made
    card_path = chosen / "MODEL_CARD.md"
    assert "Not evaluated yet" in card_path.read_text()
    report = evaluate(chosen, "test", out_dir=tmp_path, n_boot=100, device="cpu", update_card=True)
    card = card_path.read_text()
    recorded = json.loads((chosen / "evaluation_test.json").read_text())
    manifest = json.loads((chosen / "manifest.json").read_text())
    training = json.loads((chosen / "metrics.json").read_text())
    assert "not a diagnostic device" in card.lower() and "synthetic demo data" in card

    threshold = recorded["at_thresholds"][0]["threshold"]
    rows = _table(card, f"At threshold {threshold:.4f}")
    for name, value in recorded["at_thresholds"][0]["metrics"].items():
        if name in rows:
            assert float(rows[name][0]) == pytest.approx(value, abs=5e-5), name
            if "n/a" not in rows[name][1]:  # an undefined proportion has no interval
                low, high = (float(x) for x in rows[name][1].split(" - "))
                expected = recorded["at_thresholds"][0]["confidence_intervals"][name]
                assert (low, high) == pytest.approx(expected, abs=5e-5), name
    assert report.metrics["accuracy"] == pytest.approx(float(rows["accuracy"][0]), abs=5e-5)

    files = _table(card, "| file | sha256 |")
    assert files["model.safetensors"][0].strip("`") == sha256(chosen / "model.safetensors")
    best = re.search(r"by (\w+) = ([0-9.]+)", card)
    assert best.group(1) == training["monitor"]
    assert float(best.group(2)) == pytest.approx(training["best_metric"], abs=5e-5)
    threshold_line = re.search(r"- Threshold: ([0-9.]+) \(rule `(\w+)`", card)
    assert float(threshold_line.group(1)) == pytest.approx(manifest["threshold"], abs=5e-5)
    assert threshold_line.group(2) == "sensitivity"
    counts = _table(card, "| split | images |")
    for split, row in manifest["data"]["counts"].items():
        assert int(counts[split][0]) == row["total"]


def test_the_card_refuses_anything_but_a_plain_test_evaluation(made, tmp_path):
    from raylung.errors import ConfigError

    _, _, _, plain, _ = made
    with pytest.raises(ConfigError, match="update-card"):
        evaluate(plain, "validation", out_dir=tmp_path, n_boot=0, device="cpu", update_card=True)
