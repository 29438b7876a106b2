"""Temperature scaling repairs an over-confident model: on synthetic logits with a known
temperature, and on a small model trained on real LC25000 images and exported."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from raylung.artifacts.calibration import (
    TEMPERATURE_BOUNDS,
    apply_temperature,
    brier_score,
    calibrate,
    expected_calibration_error,
    fit_temperature,
    reliability_bins,
)
from raylung.artifacts.inference import Predictions
from raylung.plots import reliability_diagram


def _calibrated_logits(n: int = 4000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits whose sigmoid is the true P(label): temperature 1 is right for them."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 2.5, n)
    return logits, rng.random(n) < apply_temperature(logits)


def test_temperature_undoes_over_confidence():
    logits, labels = _calibrated_logits()
    fit = calibrate(5 * logits, labels)
    assert fit.temperature == pytest.approx(5.0, rel=0.1)
    assert fit.ece_after < fit.ece_before / 4
    assert fit.brier_after < fit.brier_before and fit.nll_after < fit.nll_before
    assert fit_temperature(logits, labels) == pytest.approx(1.0, abs=0.1)
    document = fit.to_manifest("validation")
    assert document["method"] == "temperature" and document["n"] == 4000 and document["ece_bins"] == 15


def test_temperature_follows_the_scale_of_the_logits():
    logits, labels = _calibrated_logits(500, seed=1)
    base = fit_temperature(logits, labels)
    for scale in (0.5, 3.0, 8.0):
        assert fit_temperature(scale * logits, labels) == pytest.approx(scale * base, rel=1e-4)


def test_temperature_one_changes_nothing():
    logits = np.linspace(-30, 30, 61).astype(np.float32)
    expected = Predictions(np.arange(61), logits, np.zeros(61, np.float32)).probs
    np.testing.assert_allclose(apply_temperature(logits, 1.0), expected, rtol=1e-6)
    np.testing.assert_array_equal(apply_temperature(logits), apply_temperature(logits, 1.0))
    with pytest.raises(ValueError, match="temperature must be > 0"):
        apply_temperature(logits, 0.0)


def test_separated_data_keeps_a_finite_temperature():
    """No finite maximum-likelihood T exists here; Platt's targets keep it off the bound."""
    labels = np.repeat([True, False], 100)
    logits = np.where(labels, 4.0, -4.0) + np.random.default_rng(0).normal(0, 1, 200)
    temperature = fit_temperature(logits, labels)
    assert TEMPERATURE_BOUNDS[0] < temperature < TEMPERATURE_BOUNDS[1]
    with pytest.raises(ValueError, match="both classes"):
        fit_temperature(logits, np.ones(200, dtype=bool))


def test_reliability_bins_and_ece():
    probs = np.array([0.25] * 4 + [0.75] * 4 + [1.0])
    labels = np.array([1, 0, 0, 0, 1, 1, 1, 0, 1])
    bins = reliability_bins(labels, probs, n_bins=4)
    assert bins.count.tolist() == [0, 4, 0, 5]  # 0.25 opens bin 1; P = 1.0 falls in the top bin
    assert bins.frequency[1] == 0.25 and bins.probability[3] == pytest.approx(0.8)
    assert np.isnan(bins.probability[0]) and np.isnan(bins.frequency[2])
    assert bins.ece == pytest.approx(5 / 9 * 0.0)  # both filled bins are calibrated
    assert expected_calibration_error([1, 0], [0.9, 0.9], n_bins=10) == pytest.approx(0.4)
    assert brier_score([1, 0], [0.9, 0.9]) == pytest.approx((0.01 + 0.81) / 2)


def test_reliability_diagram_is_drawn(tmp_path):
    logits, labels = _calibrated_logits(800)
    fit = calibrate(5 * logits, labels)
    curves = {
        f"raw (ECE {fit.ece_before:.3f})": (fit.before.probability, fit.before.frequency, fit.before.count),
        f"T = {fit.temperature:.2f}": (fit.after.probability, fit.after.frequency, fit.after.count),
    }
    path = reliability_diagram(fit.before.edges, curves, tmp_path / "r.png", "synthetic")
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width > 300
    with pytest.raises(ValueError, match="one probability, frequency and count per bin"):
        reliability_diagram(np.linspace(0, 1, 4), {"x": ([0.5], [0.5], [1])}, tmp_path / "bad.png")


# ------------------------------------------------------------------ real LC25000 images


def _train_tiny(config, samples, steps: int) -> torch.nn.Module:
    from raylung.config.model_build import build_model
    from raylung.data import LungDataset

    torch.manual_seed(0)
    net = build_model(config.model, config.data.in_chans)
    loader = DataLoader(LungDataset(samples, config.data, train=True), batch_size=16, shuffle=True)
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    net.train()
    for _, (images, targets, _) in zip(range(steps), loader, strict=False):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(net(images).reshape(-1), targets.float())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return net.eval()


def _logits(net: torch.nn.Module, config, samples) -> tuple[np.ndarray, np.ndarray]:
    from raylung.data import LungDataset

    dataset = LungDataset(samples, config.data, train=False)
    with torch.no_grad():
        parts = [(net(x).reshape(-1), y) for x, y, _ in DataLoader(dataset, batch_size=64)]
    return torch.cat([p[0] for p in parts]).numpy(), torch.cat([p[1] for p in parts]).numpy()


@pytest.mark.shared_data
def test_export_calibrates_an_over_confident_lc25000_model(lc25000_root, tmp_path, one_torch_thread):
    """A small model trained for one short epoch on real tiles, made over-confident on purpose
    (logits x5 beyond its own calibrated scale), is exported: the export's fit on validation
    finds that factor, lowers ECE there and on the unseen test split, and its sensitivity rule
    reaches the target on validation through the reloaded export.

    Grey 32x32 tiles and 40% of the data for training keep accuracy near 90%: a near-perfect
    model makes few mistakes for over-confidence to show in a binned ECE on ~300 images.
    """
    from raylung.artifacts.checkpoint import TrainState, save_checkpoint
    from raylung.artifacts.export import export_checkpoint
    from raylung.artifacts.loader import load_export
    from raylung.config import DataConfig, ModelConfig, RaylungConfig, SplitConfig
    from raylung.config.schema import ExportConfig
    from raylung.data import resolve_splits

    data = DataConfig(
        root=lc25000_root, image_size=(32, 32), in_chans=1, cache=False, loader_workers=0,
        split=SplitConfig(train=0.4, validation=0.3, test=0.3),
    )  # fmt: skip
    splits = resolve_splits(data, out=tmp_path / "splits.csv")
    config = RaylungConfig(
        data=data.model_copy(update={"splits_file": str(tmp_path / "splits.csv")}),
        model=ModelConfig(name="resnet_ours_tiny"),
        export=ExportConfig(threshold={"rule": "sensitivity", "target": 0.95}),
    )
    net = _train_tiny(config, splits["train"], steps=25)
    own = fit_temperature(*_logits(net, config, splits["validation"]))
    with torch.no_grad():  # logit = w.f + b: scaling both scales every logit
        net.fc.weight.mul_(5.0 / own)
        net.fc.bias.mul_(5.0 / own)
    checkpoint = tmp_path / "checkpoint"
    save_checkpoint(checkpoint, net, torch.optim.Adam(net.parameters()), None, TrainState(), config)
    out = export_checkpoint(checkpoint, tmp_path / "export", formats=[], device="cpu")

    manifest = json.loads((out / "manifest.json").read_text())
    calibration, point = manifest["calibration"], manifest["operating_point"]
    assert calibration["fitted_on"] == "validation" and calibration["n"] == len(splits["validation"])
    assert calibration["temperature"] == pytest.approx(5.0, rel=0.01)
    assert calibration["ece_after"] < calibration["ece_before"]
    assert calibration["brier_after"] < calibration["brier_before"]
    assert "reliability.png" in manifest["files"]

    loaded = load_export(out)
    assert loaded.temperature == calibration["temperature"] and loaded.threshold == point["threshold"]
    logits, labels = _logits(loaded.model, config, splits["validation"])
    called = loaded.probabilities(logits) >= loaded.threshold
    assert called[labels == 1].mean() >= 0.95
    assert called[labels == 1].mean() == pytest.approx(point["sensitivity"])

    test_logits, test_labels = _logits(loaded.model, config, splits["test"])
    raw, scaled = loaded.probabilities(test_logits, calibrated=False), loaded.probabilities(test_logits)
    ece = expected_calibration_error(test_labels, raw), expected_calibration_error(test_labels, scaled)
    brier = brier_score(test_labels, raw), brier_score(test_labels, scaled)
    print(f"LC25000: T {loaded.temperature:.2f}; ECE validation {calibration['ece_before']:.3f} -> "
          f"{calibration['ece_after']:.3f}, test {ece[0]:.3f} -> {ece[1]:.3f}; test Brier {brier[0]:.3f} -> "
          f"{brier[1]:.3f}")  # fmt: skip
    assert ece[1] < ece[0] and brier[1] < brier[0]
