"""Evaluation: metrics equal scikit-learn's on the same predictions, CIs, outputs, errors."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
import torch
from model_factory import make_checkpoint
from PIL import Image
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score, roc_auc_score
from typer.testing import CliRunner

from raylung.artifacts.evaluate import evaluate
from raylung.artifacts.export import export_checkpoint
from raylung.config.schema import ExportConfig
from raylung.data import LungDataset, SplitSet
from raylung.errors import ConfigError, DataError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(export dir, eager model, config, eager probabilities of the test split, its samples)."""
    tmp = tmp_path_factory.mktemp("eval")
    checkpoint, net, config = make_checkpoint(tmp)
    # Uncalibrated: the random test model gets T ~ 1000 (every P ~ 0.5) from a fit.
    export = export_checkpoint(checkpoint, tmp / "export", formats=[], settings=ExportConfig(calibrate=False))
    samples = SplitSet.load(config.data.splits_file)["test"]
    dataset = LungDataset(samples, config.data, train=False)
    with torch.no_grad():
        images = torch.stack([dataset[i][0] for i in range(len(dataset))])
        probs = torch.sigmoid(net(images)).reshape(-1).double().numpy()
    return export, net, config, probs, dataset.samples


def _threshold_between(probs: np.ndarray) -> float:
    """A threshold halfway between the two middle probabilities: both classes get predicted,
    and no probability sits within float noise of it."""
    ordered = np.sort(probs)
    middle = len(ordered) // 2
    assert ordered[middle] - ordered[middle - 1] > 1e-4, "test model's probabilities are too close"
    return float((ordered[middle - 1] + ordered[middle]) / 2)


def test_metrics_equal_scikit_learn(run, tmp_path):
    export, _, _, probs, samples = run
    threshold = _threshold_between(probs)
    report = evaluate(export, "test", out_dir=tmp_path, threshold=threshold, n_boot=200, device="cpu")
    labels = np.array([s.label for s in samples])
    predicted = (probs >= threshold).astype(int)
    assert report.n == len(samples) == 8
    assert 0 < predicted.sum() < len(predicted)
    assert report.metrics["accuracy"] == pytest.approx(accuracy_score(labels, predicted))
    assert report.metrics["precision"] == pytest.approx(precision_score(labels, predicted, zero_division=0))
    assert report.metrics["recall"] == pytest.approx(recall_score(labels, predicted, zero_division=0))
    assert report.metrics["f1"] == pytest.approx(f1_score(labels, predicted, zero_division=0))
    assert report.metrics["auroc"] == pytest.approx(roc_auc_score(labels, probs))
    expected_loss = torch.nn.functional.binary_cross_entropy(
        torch.from_numpy(probs), torch.from_numpy(labels).double()
    )
    assert report.metrics["loss"] == pytest.approx(float(expected_loss), rel=1e-4)
    c = report.confusion
    assert (c.tp, c.fp, c.tn, c.fn) == (
        int(np.sum((labels == 1) & (predicted == 1))), int(np.sum((labels == 0) & (predicted == 1))),
        int(np.sum((labels == 0) & (predicted == 0))), int(np.sum((labels == 1) & (predicted == 0))),
    )  # fmt: skip


def test_intervals_contain_the_point_estimate(run, tmp_path):
    export, _, _, probs, _ = run
    report = evaluate(
        export, "test", out_dir=tmp_path, threshold=_threshold_between(probs), n_boot=300, device="cpu"
    )
    assert set(report.intervals) == {"accuracy", "precision", "recall", "specificity", "f1", "auroc"}
    for name, (low, high) in report.intervals.items():
        assert low <= report.metrics[name] <= high, (name, low, report.metrics[name], high)
        assert 0.0 <= low <= high <= 1.0
    assert report.intervals["accuracy"][0] < report.intervals["accuracy"][1]  # 8 images: not a point


def test_per_subclass_reports_recall_or_specificity(run, tmp_path):
    export, _, _, probs, samples = run
    threshold = _threshold_between(probs)
    report = evaluate(export, "test", out_dir=tmp_path, threshold=threshold, n_boot=0, device="cpu")
    # Without resamples: the exact intervals of the proportions only, no F1/AUROC bootstrap.
    assert set(report.intervals) == {"accuracy", "precision", "recall", "specificity"}
    by_name = {s.name: s for s in report.per_subclass}
    assert set(by_name) == {"good_cancer", "bad_cancer", "good_non_cancer", "bad_non_cancer"}
    for name, result in by_name.items():
        chosen = np.array([s.subclass == name for s in samples])
        called_cancer = probs[chosen] >= threshold
        assert result.n == int(chosen.sum())
        if name.endswith("non_cancer"):
            assert (result.label, result.rate_name) == ("non_cancer", "specificity")
            assert result.rate == pytest.approx(float(np.mean(~called_cancer)))
        else:
            assert (result.label, result.rate_name) == ("cancer", "recall")
            assert result.rate == pytest.approx(float(np.mean(called_cancer)))
        assert result.accuracy == pytest.approx(result.rate)


def test_outputs_are_written_and_stamped_synthetic(run, tmp_path):
    export, _, _, probs, samples = run
    report = evaluate(export, "test", out_dir=tmp_path / "out", n_boot=50, device="cpu")
    assert set(report.files) == {"metrics", "predictions", "confusion_matrix", "roc", "reliability"}
    for key in ("confusion_matrix", "roc", "reliability"):
        with Image.open(report.files[key]) as image:
            image.load()
            assert image.format == "PNG" and image.width > 200
    document = json.loads(report.files["metrics"].read_text())
    assert document["synthetic_data"] is True and "synthetic demo data" in document["note"]
    assert document["metrics"]["accuracy"] == pytest.approx(report.metrics["accuracy"])
    assert document["confidence"]["n_boot"] == 50
    assert set(document["per_subclass"]["good_cancer"]) >= {"n", "accuracy", "rate_name", "rate"}
    with open(report.files["predictions"], newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["path", "label", "subclass", "group", "probability", "predicted", "logit"]
    assert [r["path"] for r in rows] == [s.path for s in samples]
    np.testing.assert_allclose([float(r["probability"]) for r in rows], probs, atol=2e-6)
    for row in rows:
        assert row["predicted"] == ("cancer" if float(row["probability"]) >= 0.5 else "non_cancer")
        assert row["label"] in ("cancer", "non_cancer")


def test_raw_checkpoint_and_moved_data(run, tmp_path):
    export, _, config, probs, _ = run
    moved = tmp_path / "moved"
    shutil.copytree(config.data.root, moved)
    checkpoint = next(export.parent.glob("checkpoint_*"))
    report = evaluate(checkpoint, "test", data_root=moved, out_dir=tmp_path / "out", n_boot=0, device="cpu")
    with open(report.files["predictions"], newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert all(r["path"].startswith(str(moved)) for r in rows)
    np.testing.assert_allclose([float(r["probability"]) for r in rows], probs, atol=2e-6)


def test_missing_or_empty_split_is_a_clear_error(run, tmp_path):
    export, _, config, _, _ = run
    lines = open(config.data.splits_file).read().splitlines()
    no_test = tmp_path / "no_test.csv"
    no_test.write_text("\n".join(line for line in lines if not line.endswith(",test")) + "\n")
    with pytest.raises(DataError, match="has no test samples"):
        evaluate(export, "test", splits_file=no_test, out_dir=tmp_path / "a", device="cpu")
    with pytest.raises(ConfigError, match="not train, validation or test"):
        evaluate(export, "holdout", out_dir=tmp_path / "b", device="cpu")
    with pytest.raises(DataError, match="file not found"):
        evaluate(export, "test", splits_file=tmp_path / "absent.csv", out_dir=tmp_path / "c", device="cpu")
    with pytest.raises(DataError, match="is not a folder"):
        evaluate(tmp_path / "no_model", out_dir=tmp_path / "d", device="cpu")
    assert not (tmp_path / "a").exists()


def test_cli_evaluate(run, tmp_path):
    import typer

    from raylung.cli import evaluate_cmd

    export = run[0]
    app = typer.Typer()
    evaluate_cmd.register(app)
    app.command("noop")(lambda: None)
    out = tmp_path / "cli"
    result = CliRunner().invoke(
        app,
        [
            "evaluate",
            str(export),
            "--split",
            "validation",
            "--out",
            str(out),
            "--n-boot",
            "20",
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 0, result.output
    for text in ("accuracy", "AUROC", "95% CI", "per subclass", "specificity", "synthetic demo data"):
        assert text in result.output
    assert json.loads((out / "metrics.json").read_text())["split"] == "validation"
