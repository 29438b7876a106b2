"""Export and reload: every written format reproduces the trained model's outputs, and the
temperature and threshold fitted on the validation split round-trip through the manifest.

The checkpoint is built directly with ``save_checkpoint`` (no Ray) from a tiny model whose
config points at a small synthetic demo set; :func:`make_checkpoint` is shared with the
evaluate and predict tests.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from model_factory import HISTORY, SIZE, make_checkpoint
from typer.testing import CliRunner

from raylung.artifacts import formats as export_mod
from raylung.artifacts.export import export_checkpoint
from raylung.artifacts.formats import EXPORT_FORMATS
from raylung.artifacts.loader import load_export, sha256
from raylung.config import RaylungConfig
from raylung.config.schema import ExportConfig
from raylung.data import LungDataset, SplitSet
from raylung.errors import ConfigError, DataError

# TorchScript is deprecated in torch 2.14 (a FutureWarning on every call); it is still exported.
pytestmark = [
    pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning"),
    pytest.mark.usefixtures("one_torch_thread"),
]


def _inputs(batch: int) -> torch.Tensor:
    return torch.randn(batch, 3, SIZE[1], SIZE[0], generator=torch.Generator().manual_seed(batch))


@pytest.fixture(
    scope="module", params=[("resnet_ours_tiny", None), ("resnet50d", (1, 1, 1, 1))], ids=["ours", "timm"]
)
def exported(request, tmp_path_factory):
    name, depths = request.param
    tmp = tmp_path_factory.mktemp(name)
    checkpoint, net, config = make_checkpoint(tmp, name, depths)
    out = export_checkpoint(checkpoint, tmp / "export", metrics={"test_accuracy": 0.75})
    return out, net, config


def test_every_format_is_written_and_recorded(exported):
    out, _, config = exported
    manifest = json.loads((out / "manifest.json").read_text())
    for name in ("safetensors", *EXPORT_FORMATS):
        assert manifest["formats"][name]["status"] == "ok", (name, manifest["formats"][name])
    for name in EXPORT_FORMATS:
        assert manifest["formats"][name]["max_abs_diff"] <= 1e-3
    # The manifest hashes every file but itself and the card, which is regenerated from it.
    on_disk = {p.name for p in out.iterdir()} - {"manifest.json", "MODEL_CARD.md"}
    assert set(manifest["files"]) == on_disk
    assert {"model.safetensors", "config.yaml", "metrics.json", "model.pt2", "model.torchscript.pt",
            "model.onnx", "learning_curves.png"} <= on_disk  # fmt: skip
    for name, info in manifest["files"].items():
        assert info["sha256"] == sha256(out / name)
    assert manifest["synthetic_data"] is True
    assert manifest["threshold"] == 0.5  # the default rule: fixed 0.5, the paper's
    assert manifest["operating_point"]["rule"] == "fixed" and manifest["operating_point"]["n"] == 8
    calibration = manifest["calibration"]
    assert calibration["method"] == "temperature" and calibration["fitted_on"] == "validation"
    assert calibration["n"] == 8
    assert calibration["temperature"] > 0 and "warning" in calibration  # 8 images: indicative only
    assert "reliability.png" in on_disk
    assert manifest["model"] == config.model.name
    assert manifest["input"]["shape"] == ["batch", 3, SIZE[1], SIZE[0]]
    assert manifest["input"]["mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert not list(out.parent.glob(".export.staging-*"))


def test_config_and_metrics_round_trip(exported):
    out, _, config = exported
    assert RaylungConfig.model_validate(yaml.safe_load((out / "config.yaml").read_text())) == config
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["best_epoch"] == 2
    assert metrics["best"]["val_loss"] == 0.58
    assert metrics["history"] == HISTORY
    assert metrics["metrics"] == {"test_accuracy": 0.75}
    assert metrics["monitor"] == "val_loss"


def test_reloaded_model_matches_trained_model(exported):
    out, net, config = exported
    loaded = load_export(out)
    assert loaded.source == "export" and not loaded.model.training
    assert loaded.config == config
    x = _inputs(4)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), net(x))


def test_program_torchscript_and_onnx_match_eager(exported):
    import onnxruntime as ort

    out, net, _ = exported
    x = _inputs(5)  # neither the traced batch (2) nor the checked ones (1, 3)
    with torch.no_grad():
        expected = net(x)
        program = torch.export.load(out / "model.pt2").module()
        torch.testing.assert_close(program(x), expected)
        scripted = torch.jit.load(str(out / "model.torchscript.pt"))
        torch.testing.assert_close(scripted(x), expected)
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[0] == "batch"
    onnx_out = session.run(None, {"image": x.numpy()})[0]
    np.testing.assert_allclose(onnx_out, expected.numpy(), rtol=1e-4, atol=1e-4)


@pytest.fixture(scope="module")
def ours(tmp_path_factory):
    """One resnet_ours_tiny checkpoint shared by the tests that only export it cheaply."""
    return make_checkpoint(tmp_path_factory.mktemp("ours"))


def test_raw_checkpoint_loads_like_an_export(ours):
    checkpoint, net, _ = ours
    loaded = load_export(checkpoint)
    assert loaded.source == "checkpoint" and loaded.manifest == {} and loaded.threshold == 0.5
    x = _inputs(2)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), net(x))


def test_failed_format_keeps_the_export_and_hides_exporter_noise(ours, tmp_path, monkeypatch, capfd):
    checkpoint, net, _ = ours

    def broken_onnx(model, probe, out, program=None):
        import os
        import warnings

        print("exporter chatter on stdout")
        os.write(2, b"native exporter chatter\n")
        warnings.warn("exporter warning", UserWarning, stacklevel=1)
        out.write_bytes(b"half a file")
        raise RuntimeError("unsupported operator aten::frobnicate")

    monkeypatch.setitem(export_mod._EXPORTERS, "onnx", broken_onnx)
    out = export_checkpoint(checkpoint, tmp_path / "export", formats=["onnx"])
    captured = capfd.readouterr()
    assert "chatter" not in captured.out + captured.err
    assert "exporter warning" not in captured.out + captured.err
    manifest = json.loads((out / "manifest.json").read_text())
    onnx = manifest["formats"]["onnx"]
    assert onnx["status"] == "failed" and "aten::frobnicate" in onnx["reason"]
    assert any("exporter chatter on stdout" in line for line in onnx["exporter_output"])
    assert any("native exporter chatter" in line for line in onnx["exporter_output"])
    assert any("exporter warning" in line for line in onnx["exporter_output"])
    assert manifest["formats"]["torch_export"] == {"status": "skipped", "reason": "not requested"}
    assert not (out / "model.onnx").exists() and "model.onnx" not in manifest["files"]
    with torch.no_grad():
        torch.testing.assert_close(load_export(out).model(_inputs(2)), net(_inputs(2)))


def test_torchscript_falls_back_to_tracing(ours, tmp_path, monkeypatch):
    checkpoint, net, _ = ours

    def unscriptable(module):
        raise RuntimeError("Unknown type annotation: 'bool'")

    monkeypatch.setattr(torch.jit, "script", unscriptable)
    out = export_checkpoint(checkpoint, tmp_path / "export", formats=["torchscript"])
    info = json.loads((out / "manifest.json").read_text())["formats"]["torchscript"]
    assert (info["status"], info["method"]) == ("ok", "trace")
    assert "Unknown type annotation" in info["script_error"] and "(48, 64)" in info["note"]
    x = _inputs(5)
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.load(str(out / "model.torchscript.pt"))(x), net(x))


def test_reexport_replaces_an_export_but_not_other_folders(ours, tmp_path):
    checkpoint = ours[0]
    out = export_checkpoint(checkpoint, tmp_path / "export", formats=[])
    first = json.loads((out / "manifest.json").read_text())["created"]
    ray_like = {"val_auroc": float("nan"), "date": datetime(2025, 1, 2), "epoch": np.int64(3)}
    assert export_checkpoint(checkpoint, out, formats=[], metrics=ray_like) == out
    assert json.loads((out / "manifest.json").read_text())["created"] >= first
    text = (out / "metrics.json").read_text()
    assert "NaN" not in text  # strict JSON
    assert json.loads(text)["metrics"] == {"val_auroc": None, "date": "2025-01-02 00:00:00", "epoch": 3}
    other = tmp_path / "notes"
    other.mkdir()
    (other / "mine.txt").write_text("keep me")
    with pytest.raises(DataError, match="not a raylung export"):
        export_checkpoint(checkpoint, other, formats=[])
    assert (other / "mine.txt").read_text() == "keep me"
    export_checkpoint(checkpoint, other, formats=[], overwrite=True)
    assert (other / "manifest.json").is_file() and not (other / "mine.txt").exists()


def test_bad_requests_give_clear_errors(ours, tmp_path):
    checkpoint = ours[0]
    with pytest.raises(DataError, match="not a training checkpoint"):
        export_checkpoint(checkpoint.parent / "data", tmp_path / "out")
    with pytest.raises(ConfigError, match="unknown export format"):
        export_checkpoint(checkpoint, tmp_path / "out", formats=["tflite"])
    with pytest.raises(DataError, match="is not a folder"):
        load_export(tmp_path / "missing")
    with pytest.raises(DataError, match="neither an export"):
        load_export(checkpoint.parent / "data")
    with pytest.raises(DataError, match="must differ"):
        export_checkpoint(checkpoint, checkpoint)


def test_changed_weights_are_detected(ours, tmp_path):
    checkpoint = ours[0]
    out = export_checkpoint(checkpoint, tmp_path / "export", formats=[])
    weights = out / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\1")
    with pytest.raises(DataError, match="sha256"):
        load_export(out)
    (out / "manifest.json").write_text("{not json")
    with pytest.raises(DataError, match="not a raylung export manifest"):
        load_export(out)


def test_cli_export(ours, tmp_path):
    import typer

    from raylung.cli import export_cmd

    checkpoint = ours[0]
    app = typer.Typer()
    export_cmd.register(app)
    app.command("noop")(lambda: None)  # two commands, so `export` stays a subcommand
    result = CliRunner().invoke(
        app, ["export", str(checkpoint), "--out", str(tmp_path / "cli"), "-f", "torchscript"]
    )
    assert result.exit_code == 0, result.output
    assert "torchscript" in result.output and "ok" in result.output
    manifest = json.loads((tmp_path / "cli" / "manifest.json").read_text())
    assert manifest["formats"]["torchscript"]["status"] == "ok"
    assert manifest["formats"]["onnx"]["status"] == "skipped"


def _validation_logits(loaded, config) -> tuple[np.ndarray, np.ndarray]:
    dataset = LungDataset(SplitSet.load(config.data.splits_file)["validation"], config.data, train=False)
    with torch.no_grad():
        images = torch.stack([dataset[i][0] for i in range(len(dataset))])
        logits = loaded.model(images).reshape(-1).double().numpy()
    return logits, np.array([s.label for s in dataset.samples], dtype=bool)


def test_fitted_threshold_and_temperature_round_trip(ours, tmp_path):
    checkpoint, _, config = ours
    settings = ExportConfig(threshold={"rule": "sensitivity", "target": 0.75})
    out = export_checkpoint(checkpoint, tmp_path / "export", formats=[], settings=settings)
    manifest = json.loads((out / "manifest.json").read_text())
    point = manifest["operating_point"]
    assert (point["rule"], point["target"], point["split"]) == ("sensitivity", 0.75, "validation")
    loaded = load_export(out)
    assert loaded.threshold == manifest["threshold"] == point["threshold"]
    assert loaded.temperature == manifest["calibration"]["temperature"] != 1.0
    logits, labels = _validation_logits(loaded, config)
    called = loaded.probabilities(logits) >= loaded.threshold  # calibrated, as the rule was fitted
    assert called[labels].mean() >= 0.75
    assert (called[labels].mean(), (~called[~labels]).mean()) == pytest.approx(
        (point["sensitivity"], point["specificity"])
    )


def test_calibrate_false_keeps_temperature_one_but_fits_the_rule(ours, tmp_path):
    checkpoint, _, config = ours
    # (Youden would keep 0.5 here: the random test model separates nothing on validation.)
    settings = ExportConfig(threshold={"rule": "sensitivity", "target": 0.75}, calibrate=False)
    out = export_checkpoint(checkpoint, tmp_path / "export", formats=[], settings=settings)
    loaded = load_export(out)
    calibration = loaded.manifest["calibration"]
    assert calibration["method"] == "none" and calibration["reason"] == "export.calibrate is false"
    assert (
        loaded.temperature == 1.0
        and "ece" in calibration
        and "reliability.png" not in loaded.manifest["files"]
    )
    logits, _ = _validation_logits(loaded, config)
    np.testing.assert_array_equal(
        loaded.probabilities(logits), loaded.probabilities(logits, calibrated=False)
    )
    assert loaded.manifest["operating_point"]["split"] == "validation" and loaded.threshold != 0.5
    plain = export_checkpoint(
        checkpoint, tmp_path / "plain", formats=[], settings=ExportConfig(calibrate=False)
    )
    manifest = json.loads((plain / "manifest.json").read_text())  # nothing to fit: the split is not run
    assert manifest["threshold"] == 0.5 and manifest["calibration"]["temperature"] == 1.0
    assert "nothing to fit" in manifest["operating_point"]["reason"]


def test_unreachable_validation_split_falls_back_and_says_why(tmp_path):
    checkpoint, _, config = make_checkpoint(tmp_path)
    Path(config.data.splits_file).unlink()  # the data moved, or the checkpoint travelled alone
    settings = ExportConfig(threshold={"rule": "youden", "value": 0.4})
    out = export_checkpoint(checkpoint, tmp_path / "export", formats=[], settings=settings)
    loaded = load_export(out)
    calibration, point = loaded.manifest["calibration"], loaded.manifest["operating_point"]
    assert loaded.temperature == 1.0 and loaded.threshold == 0.4
    assert calibration["method"] == "none" and calibration["fitted_on"] is None
    assert "file not found" in calibration["reason"] and point["reason"] == calibration["reason"]
    assert (point["rule"], point["n"], point["sensitivity"]) == ("youden", 0, None)
