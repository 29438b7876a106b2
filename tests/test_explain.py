"""Explanations: per-stage spatial attention and Grad-CAM figures, their index, the test sample.

No Ray: checkpoints come from ``make_checkpoint`` (a tiny random model on a 64x48 synthetic demo
set, W x H, so a swapped height and width shows up as a wrong shape).
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from model_factory import SIZE, make_checkpoint
from typer.testing import CliRunner

from raylung.artifacts.export import export_checkpoint
from raylung.artifacts.predict import read_image
from raylung.data import Sample, SplitSet, build_transform
from raylung.errors import DataError, RaylungError
from raylung.explain import (
    CATEGORIES,
    INDEX_FILE,
    Explainer,
    categorise,
    explain_images,
    explain_test_sample,
    gradcam_maps,
    has_spatial_attention,
    pick_test_sample,
    stage_attention,
)
from raylung.explain import explainer as explainer_mod
from raylung.models import gradcam_target_layer

pytestmark = pytest.mark.usefixtures("one_torch_thread")

WIDTH, HEIGHT = SIZE


@pytest.fixture(scope="module")
def ours(tmp_path_factory):
    """(export dir, eager model, config) of resnet_ours_tiny; the export has no extra formats."""
    tmp = tmp_path_factory.mktemp("explain_ours")
    checkpoint, net, config = make_checkpoint(tmp)
    return export_checkpoint(checkpoint, tmp / "export", formats=[]), net, config


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    """(checkpoint dir, eager model, config) of timm's resnet50d at one block per stage."""
    return make_checkpoint(tmp_path_factory.mktemp("explain_timm"), "resnet50d", (1, 1, 1, 1))


def _test_images(config) -> list[Path]:
    return sorted(Path(config.data.root, "test").rglob("*.png"))


def _batch(config, paths: list[Path]) -> torch.Tensor:
    transform = build_transform(config.data, train=False)
    return torch.stack([transform(read_image(p, config.data)) for p in paths])


@pytest.fixture
def drawn(monkeypatch):
    """Records what every figure was drawn from: (input image, attention maps, Grad-CAM, axes)."""
    calls: list[dict] = []
    original = explainer_mod.explanation_figure

    def recording(image, attention, gradcam, title, attention_raw=None):
        fig = original(image, attention, gradcam, title, attention_raw)
        calls.append({"image": image, "attention": list(attention), "gradcam": gradcam,
                      "title": title, "axes": len(fig.axes)})  # fmt: skip
        return fig

    monkeypatch.setattr(explainer_mod, "explanation_figure", recording)
    return calls


def test_attention_maps_have_the_input_and_feature_map_aspect(ours):
    _, net, config = ours
    images = _batch(config, _test_images(config)[:2])
    features: list[torch.Tensor] = []
    hooks = [s.register_forward_hook(lambda _m, _i, out: features.append(out)) for s in net.stages]
    try:
        stages = stage_attention(net, images)
    finally:
        for hook in hooks:
            hook.remove()
    assert [s.stage for s in stages] == [1, 2, 3, 4]
    for s, feature, stride in zip(stages, features, (4, 8, 16, 32), strict=True):
        h, w = feature.shape[-2:]
        assert s.raw.shape == (2, h, w)  # the map lives on its stage's feature grid ...
        assert (h, w) == (math.ceil(HEIGHT / stride), math.ceil(WIDTH / stride))  # ... never transposed
        assert s.upsampled.shape == (2, HEIGHT, WIDTH)
        assert 0.0 < s.raw.min() and s.raw.max() < 1.0  # sigmoid gate values
        # bilinear interpolation stays within the values it interpolates
        assert s.raw.min() - 1e-6 <= s.upsampled.min() and s.upsampled.max() <= s.raw.max() + 1e-6
        if HEIGHT % stride == 0 and WIDTH % stride == 0:
            assert h / w == pytest.approx(HEIGHT / WIDTH)
            # averaged back over each cell, the upsampled map follows the raw one (no flip)
            pooled = F.avg_pool2d(torch.from_numpy(s.upsampled)[:, None], stride)[:, 0].numpy()
            assert np.corrcoef(pooled.ravel(), s.raw.ravel())[0, 1] > 0.9


def test_attention_maps_differ_between_images(ours):
    _, net, config = ours
    paths = _test_images(config)
    cancer = next(p for p in paths if "/good_cancer/" in p.as_posix())
    other = next(p for p in paths if "/good_non_cancer/" in p.as_posix())
    stages = stage_attention(net, _batch(config, [cancer, cancer, other]))
    for s in stages:
        # a random model's gates sit near 0.5, so the differences are small, but far above float
        # noise (the same image twice agrees to 1e-7) and a visible share of the map's own range
        np.testing.assert_allclose(s.upsampled[0], s.upsampled[1], atol=1e-7)
        difference = np.abs(s.upsampled[0] - s.upsampled[2]).max()
        assert difference > 1e-6 and difference > 0.02 * np.ptp(s.upsampled[0]), s.stage


def _gradcam_by_hand(net: torch.nn.Module, images: torch.Tensor) -> np.ndarray:
    """Grad-CAM of logit 0 from autograd, resized and scaled the way pytorch_grad_cam does."""
    captured: list[torch.Tensor] = []
    hook = gradcam_target_layer(net).register_forward_hook(lambda _m, _i, out: captured.append(out))
    try:
        with torch.enable_grad():
            logits = net(images)
            (grads,) = torch.autograd.grad(logits[:, 0].sum(), captured[0])
    finally:
        hook.remove()
    cams = torch.relu((grads.mean((2, 3), keepdim=True) * captured[0]).sum(1)).detach().numpy()
    out = []
    for cam in cams:
        cam = (cam - cam.min()) / (1e-7 + (cam - cam.min()).max())
        cam = cv2.resize(np.float32(cam), (images.shape[-1], images.shape[-2]))
        cam = np.maximum(cam, 0)
        out.append((cam - cam.min()) / (1e-7 + (cam - cam.min()).max()))
    return np.asarray(out, dtype=np.float32)


def test_gradcam_maps_the_cancer_logit_at_the_input_size(ours, baseline):
    for _, net, config in (ours, baseline):
        images = _batch(config, _test_images(config))
        maps = gradcam_maps(net, images)
        assert maps.shape == (len(images), HEIGHT, WIDTH)
        assert maps.min() >= 0.0 and maps.max() <= 1.0 + 1e-6
        np.testing.assert_allclose(maps, _gradcam_by_hand(net, images), atol=1e-5)
        assert all(p.grad is None for p in net.parameters())
    # the check above is not vacuous: some maps are not all zero (resnet_ours' head is scaled)
    assert np.any(gradcam_maps(ours[1], _batch(ours[2], _test_images(ours[2]))).max(axis=(1, 2)) > 0.5)


def test_explain_images_writes_figures_and_an_index(ours, tmp_path, drawn):
    export, net, config = ours
    folder = tmp_path / "in"
    sources = _test_images(config)[:3]
    (folder / "sub").mkdir(parents=True)
    shutil.copy(sources[0], folder / "a.png")
    shutil.copy(sources[1], folder / "sub" / "a.png")  # same name in another folder
    square = cv2.resize(cv2.imread(str(sources[2])), (90, 90))  # not the model's size or aspect
    cv2.imwrite(str(tmp_path / "square.png"), square)
    inputs = [folder, tmp_path / "square.png"]

    explained = explain_images(export, inputs, tmp_path / "out", batch_size=2)

    paths = [folder / "a.png", folder / "sub" / "a.png", tmp_path / "square.png"]
    assert [e.image for e in explained] == paths
    assert len({e.png for e in explained}) == 3
    with torch.no_grad():
        expected = torch.sigmoid(net(_batch(config, paths))[:, 0]).numpy()
    index = json.loads((tmp_path / "out" / INDEX_FILE).read_text())
    assert index["model"] == "resnet_ours_tiny" and index["threshold"] == 0.5
    assert index["synthetic_data"] is True
    assert list(index["images"]) == [str(p) for p in paths]
    for entry, prob, e in zip(index["images"].values(), expected, explained, strict=True):
        assert entry["probability"] == pytest.approx(float(prob), abs=1e-6)
        assert entry["label"] == ("cancer" if prob >= 0.5 else "non_cancer")
        png = tmp_path / "out" / entry["png"]
        assert png == e.png and png.parent == tmp_path / "out"
        decoded = cv2.imread(str(png))
        assert decoded is not None and decoded.ndim == 3 and min(decoded.shape[:2]) > 100
    for call, path in zip(drawn, paths, strict=True):
        assert call["axes"] == 6  # input, four stages, Grad-CAM
        assert call["image"].shape == (HEIGHT, WIDTH, 3)
        # the input panel is the model's input with the normalisation undone
        np.testing.assert_allclose(call["image"], read_image(path, config.data) / 255.0, atol=1e-5)
        assert [a.shape for a in call["attention"]] == [(HEIGHT, WIDTH)] * 4
        assert call["gradcam"].shape == (HEIGHT, WIDTH)
        assert "P(cancer) =" in call["title"] and "synthetic demo data" in call["title"]


def test_baseline_figures_show_input_and_gradcam_only(baseline, tmp_path, drawn):
    checkpoint, net, config = baseline
    assert not has_spatial_attention(net)
    with pytest.raises(ValueError, match="no spatial attention"):
        stage_attention(net, _batch(config, _test_images(config)[:1]))
    explained = explain_images(checkpoint, _test_images(config)[:2], tmp_path / "out")
    assert len(explained) == 2 and all(e.png.is_file() for e in explained)
    assert [c["axes"] for c in drawn] == [2, 2]
    assert all(c["attention"] == [] and c["gradcam"].shape == (HEIGHT, WIDTH) for c in drawn)
    index = json.loads((tmp_path / "out" / INDEX_FILE).read_text())
    assert index["attention"].startswith("none")


def test_pick_test_sample_is_seeded_and_stops_when_full():
    samples = [Sample(f"/data/{i:02d}.png", i % 2, None, str(i), "test") for i in range(40)]

    def probabilities(batch):
        calls.append(len(batch))
        return np.array([0.9 if int(Path(s.path).stem) % 3 else 0.1 for s in batch])

    calls: list[int] = []
    first = pick_test_sample(samples, probabilities, 0.5, per_group=2, seed=3, scan_batch=4)
    assert sum(calls) < len(samples)  # every category filled before the end
    calls.clear()
    again = pick_test_sample(samples[::-1], probabilities, 0.5, per_group=2, seed=3, scan_batch=1)
    assert first == again  # independent of the file's row order and of the batch size
    other = pick_test_sample(samples, probabilities, 0.5, per_group=2, seed=4)
    assert [p.sample for p in other] != [p.sample for p in first]
    assert [p.category for p in first] == ["TP", "TP", "TN", "TN", "FP", "FP", "FN", "FN"]
    for pick in first:
        assert pick.category == categorise(pick.sample.label, int(pick.probability >= 0.5))
    # a category the model never produces is simply absent
    no_fn = pick_test_sample(samples, lambda b: np.array([0.9] * len(b)), 0.5, per_group=2)
    assert [p.category for p in no_fn] == ["TP", "TP", "FP", "FP"]


def test_explain_test_sample_covers_both_classes_and_all_categories(ours, tmp_path):
    export, net, config = ours
    test = SplitSet.load(config.data.splits_file, root=config.data.root)["test"]
    with torch.no_grad():
        probs = torch.sigmoid(net(_batch(config, [Path(s.path) for s in test]))[:, 0]).numpy()
    threshold = float(np.median(probs))  # a random model: split its outputs so both labels occur
    available = {c: 0 for c in CATEGORIES}
    for sample, prob in zip(test, probs, strict=True):
        available[categorise(sample.label, int(prob >= threshold))] += 1

    result = explain_test_sample(
        export, config.data.splits_file, tmp_path / "sample", per_group=1, seed=0, threshold=threshold
    )

    assert result.counts() == {c: min(1, n) for c, n in available.items()}
    assert len(result) == sum(result.counts().values()) >= 2
    assert all(isinstance(p, Path) and p.is_file() for p in result)
    assert {e.true_label for e in result.explanations} == {"cancer", "non_cancer"}
    for png, category in result.categories.items():
        assert png.name.startswith(category.lower() + "_")
    index = json.loads(result.index.read_text())
    assert index["categories"] == result.counts() and index["seed"] == 0
    for e in result.explanations:
        entry = index["images"][str(e.image)]
        assert entry["category"] == e.category == categorise(int(e.true_label == "cancer"),
                                                             int(e.probability >= threshold))  # fmt: skip
        assert entry["probability"] == pytest.approx(float(probs[[s.path for s in test].index(str(e.image))]))
    again = explain_test_sample(
        export, None, tmp_path / "again", per_group=1, seed=0, threshold=threshold
    )  # None: the config's splits file
    assert [p.name for p in again] == [p.name for p in result]


def test_bad_inputs_give_clear_errors(ours, tmp_path):
    export, _, config = ours
    with pytest.raises(DataError, match="no such file or folder"):
        explain_images(export, [tmp_path / "missing.png"], tmp_path / "out")
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"<html>not an image</html>")
    with pytest.raises(RaylungError, match=r"unreadable image .*corrupt\.png"):
        explain_images(export, [_test_images(config)[0], corrupt], tmp_path / "out")
    assert not (tmp_path / "out" / INDEX_FILE).exists()
    with pytest.raises(DataError, match="not a folder"):
        explain_images(tmp_path / "no_model", [corrupt], tmp_path / "out")
    with pytest.raises(RaylungError, match="threshold"):
        Explainer.from_path(export, threshold=1.5)


def test_cli_explain(ours, tmp_path):
    import typer

    from raylung.cli import explain_cmd

    export, _, config = ours
    app = typer.Typer()
    explain_cmd.register(app)
    app.command("noop")(lambda: None)  # two commands, so `explain` stays a subcommand
    image = _test_images(config)[0]
    result = CliRunner().invoke(app, ["explain", str(export), str(image), "--out", str(tmp_path / "cli")])
    assert result.exit_code == 0, result.output
    assert "1 figure(s)" in result.output
    index = json.loads((tmp_path / "cli" / INDEX_FILE).read_text())
    assert list(index["images"]) == [str(image)]
    assert (tmp_path / "cli" / index["images"][str(image)]["png"]).is_file()
    missing = CliRunner().invoke(
        app, ["explain", str(export), str(tmp_path / "nope.png"), "--out", str(tmp_path / "none")]
    )
    assert isinstance(missing.exception, DataError) and "no such file" in str(missing.exception)
