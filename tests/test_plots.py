"""The PNG writers produce decodable images of a sensible size and reject malformed input."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from raylung.plots import best_epoch, confusion_matrix_plot, learning_curves, roc_plot

HISTORY = [
    {"epoch": 1, "train_loss": 0.70, "val_loss": 0.66, "val_accuracy": 0.55, "val_auroc": float("nan")},
    {"epoch": 2, "train_loss": 0.61, "val_loss": 0.52, "val_accuracy": 0.72, "val_auroc": 0.80},
    {"epoch": 3, "train_loss": 0.50, "val_loss": 0.57, "val_accuracy": 0.78, "val_auroc": 0.83},
]


def _decoded(path) -> Image.Image:
    with Image.open(path) as image:
        image.load()  # raises on a truncated or corrupt PNG
        assert image.format == "PNG"
        return image.copy()


def test_learning_curves_png(tmp_path):
    path = learning_curves(HISTORY, tmp_path / "sub" / "curves.png", monitor="val_loss", title="demo")
    image = _decoded(path)
    assert image.width > 600 and image.height > 250
    # a plot, not a blank canvas
    assert np.asarray(image.convert("L")).std() > 5


def test_best_epoch_follows_the_monitor_direction():
    assert best_epoch(HISTORY, "val_loss") == 2  # lowest loss
    assert best_epoch(HISTORY, "val_accuracy") == 3  # highest metric
    assert best_epoch(HISTORY, "val_auroc") == 3  # NaN epochs are ignored
    assert best_epoch(HISTORY, "val_f1") is None


def test_learning_curves_accepts_numpy_numbers_and_rejects_empty(tmp_path):
    rows = [{"epoch": np.int64(i), "val_loss": np.float32(1.0 / i), "note": "text"} for i in (1, 2)]
    _decoded(learning_curves(rows, tmp_path / "np.png"))
    with pytest.raises(ValueError, match="at least one epoch"):
        learning_curves([], tmp_path / "empty.png")


def test_confusion_matrix_png(tmp_path):
    path = confusion_matrix_plot(np.array([[5, 1], [2, 7]]), tmp_path / "cm.png", "test split")
    image = _decoded(path)
    assert image.width > 300 and image.height > 300
    with pytest.raises(ValueError, match="square"):
        confusion_matrix_plot(np.ones((2, 3)), tmp_path / "bad.png", "bad")


def test_confusion_matrix_with_an_empty_row(tmp_path):
    # no true cancer images at all: fractions of an empty row are 0, not NaN warnings
    with np.errstate(all="raise"):
        _decoded(confusion_matrix_plot([[4, 0], [0, 0]], tmp_path / "cm.png", "one class"))


def test_roc_png(tmp_path):
    path = roc_plot([0.0, 0.0, 0.5, 1.0], [0.0, 0.5, 1.0, 1.0], 0.875, tmp_path / "roc.png", "ROC")
    image = _decoded(path)
    assert image.width > 300 and image.height > 300
    _decoded(roc_plot([0.0, 1.0], [0.0, 1.0], math.nan, tmp_path / "nan.png"))
    with pytest.raises(ValueError, match="equal length"):
        roc_plot([0.0, 1.0], [0.0], 0.5, tmp_path / "bad.png")
