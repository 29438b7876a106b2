"""`predict --runtime onnx`: the export's model.onnx calls images as the eager model does.

Both runtimes read the same CSV columns from the same decoded, normalised batches; they must
agree within PROBABILITY_ATOL on synthetic images (always) and on real LC25000 tiles (when the
shared data is present). An export without a usable ONNX file is a clear error, not a crash.
"""

from __future__ import annotations

import csv
import json
import shutil
import sys

import numpy as np
import pytest
from model_factory import make_checkpoint

from raylung.artifacts import formats as export_mod
from raylung.artifacts.export import export_checkpoint
from raylung.artifacts.onnx_runtime import PROBABILITY_ATOL, OnnxLogits, onnx_providers
from raylung.artifacts.predict import predict
from raylung.config.schema import ExportConfig
from raylung.errors import ConfigError, DataError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def onnx_export(tmp_path_factory):
    """(export with model.onnx, its training checkpoint, the synthetic test images' folder)."""
    tmp = tmp_path_factory.mktemp("onnx")
    checkpoint, _, _ = make_checkpoint(tmp)
    # uncalibrated: the tiny random model's fitted temperature would squeeze every P to ~0.5
    export = export_checkpoint(
        checkpoint, tmp / "export", formats=["onnx"], settings=ExportConfig(calibrate=False)
    )
    assert json.loads((export / "manifest.json").read_text())["formats"]["onnx"]["status"] == "ok"
    return export, checkpoint, tmp / "data" / "test"


def _columns(path) -> dict[str, list[str]]:
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {key: [row[key] for row in rows] for key in rows[0]}


def _both_runtimes(export, inputs, tmp_path, **options) -> tuple[dict, dict]:
    runs = {}
    for runtime in ("torch", "onnx"):
        summary = predict(export, inputs, tmp_path / f"{runtime}.csv", runtime=runtime, progress=False,
                          device="cpu", batch_size=16, **options)  # fmt: skip
        assert summary.runtime == runtime
        runs[runtime] = _columns(summary.out_csv)
        assert set(runs[runtime]["runtime"]) == {runtime}
    torch_run, onnx_run = runs["torch"], runs["onnx"]
    assert onnx_run["path"] == torch_run["path"]
    return torch_run, onnx_run


def _agree(torch_run: dict, onnx_run: dict, manifest: dict) -> float:
    """Max |p_onnx - p_torch|, after checking probabilities, logits and (clear-cut) labels agree."""
    p_torch, p_onnx = (np.array(run["probability_cancer"], dtype=float) for run in (torch_run, onnx_run))
    z_torch, z_onnx = (np.array(run["logit"], dtype=float) for run in (torch_run, onnx_run))
    gap = float(np.abs(p_onnx - p_torch).max())
    assert gap <= PROBABILITY_ATOL
    tolerance = manifest["tolerance"]  # what the exporter verified the ONNX logits to
    assert np.all(np.abs(z_onnx - z_torch) <= tolerance["atol"] + tolerance["rtol"] * np.abs(z_torch) + 1e-6)
    clear = np.abs(p_torch - 0.5) > PROBABILITY_ATOL
    assert np.array_equal(
        np.array(onnx_run["predicted_label"])[clear], np.array(torch_run["predicted_label"])[clear]
    )
    return gap


def test_onnx_agrees_with_torch_on_synthetic_images(onnx_export, tmp_path):
    export, _, images = onnx_export
    manifest = json.loads((export / "manifest.json").read_text())
    everything = images.parent  # the synthetic set's train, validation and test folders
    torch_run, onnx_run = _both_runtimes(export, [everything], tmp_path)
    assert len(torch_run["path"]) > 30 and set(onnx_run["tta"]) == {"off"}
    assert np.ptp(np.array(torch_run["probability_cancer"], dtype=float)) > 1e-3  # a spread to compare
    _agree(torch_run, onnx_run, manifest)
    tta_torch, tta_onnx = _both_runtimes(export, [everything], tmp_path / "tta", tta=True)
    assert set(tta_onnx["tta"]) == {"identity+hflip+vflip+rot180"}  # 64x48: no quarter turns
    _agree(tta_torch, tta_onnx, manifest)


@pytest.mark.shared_data
def test_onnx_agrees_with_torch_on_real_lc25000_tiles(onnx_export, lc25000_root, tmp_path):
    export = onnx_export[0]
    manifest = json.loads((export / "manifest.json").read_text())
    tiles = (
        sorted((lc25000_root / "cancer").glob("*.jpeg"))[:40]
        + sorted((lc25000_root / "non_cancer").glob("*.jpeg"))[:40]
    )
    torch_run, onnx_run = _both_runtimes(export, tiles, tmp_path)
    assert len(onnx_run["path"]) == 80
    gap = _agree(torch_run, onnx_run, manifest)
    print(f"max |p_onnx - p_torch| over 80 LC25000 tiles: {gap:.3g}")


def test_an_export_without_onnx_is_a_clear_error(onnx_export, tmp_path, monkeypatch, capsys):
    export, checkpoint, images = onnx_export

    def unsupported(model, probe, out, program=None):
        raise RuntimeError("unsupported operator aten::frobnicate")

    monkeypatch.setitem(export_mod._EXPORTERS, "onnx", unsupported)  # an exporter that really fails
    failed = export_checkpoint(checkpoint, tmp_path / "failed", formats=["onnx"])
    with pytest.raises(DataError, match=r"has no ONNX model: its ONNX export failed \(RuntimeError: unsup"):
        predict(failed, [images], tmp_path / "p.csv", runtime="onnx", progress=False)
    skipped = export_checkpoint(checkpoint, tmp_path / "skipped", formats=[])
    with pytest.raises(DataError, match=r"its ONNX export skipped \(not requested\); re-export"):
        predict(skipped, [images], tmp_path / "p.csv", runtime="onnx", progress=False)
    with pytest.raises(DataError, match="is a training checkpoint, not an export"):
        predict(checkpoint, [images], tmp_path / "p.csv", runtime="onnx", progress=False)
    deleted = shutil.copytree(export, tmp_path / "deleted")
    (deleted / "model.onnx").unlink()
    with pytest.raises(DataError, match="model.onnx is missing, though the manifest records"):
        predict(deleted, [images], tmp_path / "p.csv", runtime="onnx", progress=False)
    changed = shutil.copytree(export, tmp_path / "changed")
    with open(changed / "model.onnx", "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(DataError, match="does not match the sha256"):
        predict(changed, [images], tmp_path / "p.csv", runtime="onnx", progress=False)
    # and on the command line: one red line, exit status 2, no traceback
    from raylung.cli.main import main

    monkeypatch.setattr(sys, "argv", ["raylung", "predict", str(failed), str(images), "--runtime", "onnx",
                                      "--out", str(tmp_path / "cli.csv")])  # fmt: skip
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "has no ONNX model" in err and "aten::frobnicate" in err and "Traceback" not in err


def test_providers_cpu_by_default_and_cuda_only_when_installed(onnx_export):
    import onnxruntime as ort

    assert onnx_providers() == onnx_providers("cpu") == ["CPUExecutionProvider"]
    assert OnnxLogits(
        onnx_export[0], json.loads((onnx_export[0] / "manifest.json").read_text())
    ).providers == ["CPUExecutionProvider"]
    with pytest.raises(ConfigError, match="cpu, cuda or cuda:N"):
        onnx_providers("gpu0")
    if "CUDAExecutionProvider" in ort.get_available_providers():
        assert onnx_providers("cuda:1")[0] == ("CUDAExecutionProvider", {"device_id": 1})
    else:
        with pytest.raises(ConfigError, match="install onnxruntime-gpu"):
            onnx_providers("cuda")
