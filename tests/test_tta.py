"""Test-time augmentation: the mean calibrated probability over the views training augments with."""

from __future__ import annotations

import albumentations as A
import numpy as np
import pytest
import torch

from raylung.artifacts.loader import LoadedModel
from raylung.artifacts.tta import ALL_VIEWS, apply_view, tta_probabilities, tta_views, view_logits
from raylung.config import ModelConfig, RaylungConfig
from raylung.config.model_build import build_model
from raylung.data.transforms import QuarterTurn

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def loaded() -> LoadedModel:
    """A tiny real network, calibrated with temperature 2, as `load_export` would return it."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="resnet_ours_tiny"), 3)
    with torch.no_grad():
        model.fc.weight.mul_(40.0)  # spread the probabilities away from 0.5
    model.eval()
    return LoadedModel(model, RaylungConfig(), {"calibration": {"temperature": 2.0}})


def _batch(height: int, width: int, n: int = 3) -> torch.Tensor:
    return torch.randn(n, 3, height, width, generator=torch.Generator().manual_seed(height * width))


def _calibrated(net: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        logits = net(x).double().reshape(-1)
    return torch.sigmoid(logits / 2.0).numpy()


def test_square_input_averages_six_hand_made_views(loaded):
    x = _batch(32, 32)
    by_hand = [
        x,
        torch.flip(x, dims=[3]),
        torch.flip(x, dims=[2]),
        torch.rot90(x, 1, dims=[2, 3]),
        torch.rot90(x, 2, dims=[2, 3]),
        torch.rot90(x, 3, dims=[2, 3]),
    ]
    expected = np.mean([_calibrated(loaded.model, view) for view in by_hand], axis=0)
    assert tta_views(32, 32) == ALL_VIEWS
    got = tta_probabilities(x, loaded.model, probabilities=loaded.probabilities)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    # the views really differ (else the average proves nothing), and probabilities are
    # averaged after the temperature-scaled sigmoid, not the logits before it
    per_view = loaded.probabilities(view_logits(x, loaded.model))
    assert per_view.shape == (6, 3) and np.ptp(per_view, axis=0).max() > 1e-3
    mean_logit = loaded.probabilities(view_logits(x, loaded.model).mean(axis=0))
    assert np.abs(mean_logit - got).max() > 1e-6


def test_non_square_input_gets_no_quarter_turns(loaded):
    x = _batch(24, 40)
    assert tta_views(24, 40) == ("identity", "hflip", "vflip", "rot180")
    by_hand = [x, torch.flip(x, dims=[3]), torch.flip(x, dims=[2]), torch.flip(x, dims=[2, 3])]
    expected = np.mean([_calibrated(loaded.model, view) for view in by_hand], axis=0)
    got = tta_probabilities(x, loaded.model, probabilities=loaded.probabilities)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    for turn in ("rot90", "rot270"):
        with pytest.raises(ValueError, match="square"):
            apply_view(x, turn)


def test_views_are_the_training_flips_and_turns():
    """Each view of a CxHxW tensor is what training's transform does to the HxWxC image."""
    image = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    chw = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None]
    training = {
        "hflip": A.HorizontalFlip(p=1.0)(image=image)["image"],
        "vflip": A.VerticalFlip(p=1.0)(image=image)["image"],
        **{f"rot{90 * k}": QuarterTurn(p=1.0).apply(image, k=k) for k in (1, 2, 3)},
    }
    for view, expected in training.items():
        np.testing.assert_array_equal(apply_view(chw, view)[0].numpy().transpose(1, 2, 0), expected, view)
    assert torch.equal(apply_view(chw, "identity"), chw)


def test_any_logit_function_and_explicit_views(loaded):
    """A callable returning numpy logits (an ONNX session) works; ('identity',) is plain inference."""
    x = _batch(20, 20, n=2)

    def numpy_logits(batch: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            return loaded.model(batch).numpy()

    plain = tta_probabilities(x, numpy_logits, views=("identity",))
    np.testing.assert_allclose(plain, torch.sigmoid(loaded.model(x).detach().double()).reshape(-1), atol=1e-7)
    assert view_logits(x, numpy_logits, views=("vflip", "identity")).shape == (2, 2)
    with pytest.raises(ValueError, match="unknown TTA view"):
        view_logits(x, numpy_logits, views=("transpose",))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        view_logits(x[0], numpy_logits)
