"""The Python API: a predictor that gives what `raylung predict` gives (calibration and threshold
included), config objects in, result objects out, and the README's example run as written."""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT, ray_env
from model_factory import make_checkpoint
from PIL import Image

from raylung import api
from raylung.artifacts.export import export_checkpoint
from raylung.artifacts.predict import predict
from raylung.config.schema import ExportConfig
from raylung.data import build_transform, load_image
from raylung.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    """An export with a stored temperature and threshold (not 1 and 0.5), its net and images."""
    tmp = tmp_path_factory.mktemp("api")
    checkpoint, net, config = make_checkpoint(tmp)
    export = export_checkpoint(checkpoint, tmp / "export", formats=[], settings=ExportConfig(calibrate=False))
    images = sorted((tmp / "data" / "test").rglob("*.png"))[:6]
    logits = []
    for path in images:
        x = build_transform(config.data, train=False)(load_image(path, 3, config.data.image_size))[None]
        with torch.no_grad():
            logits.append(float(net(x).reshape(())))
    manifest = json.loads((export / "manifest.json").read_text())
    temperature = 2.5
    middle = float(np.median(logits))  # half the images either side of the stored threshold
    manifest.update(
        threshold=float(1 / (1 + np.exp(-middle / temperature))), calibration={"temperature": temperature}
    )
    (export / "manifest.json").write_text(json.dumps(manifest))
    return export, images, np.array(logits), temperature


def test_predictor_gives_the_cli_numbers(calibrated, tmp_path):
    export, images, logits, temperature = calibrated
    predictor = api.load_predictor(export, device="cpu")
    result = predictor(images)
    expected = 1 / (1 + np.exp(-logits / temperature))
    np.testing.assert_allclose(result.probabilities, expected, atol=1e-6)
    assert predictor.threshold == json.loads((export / "manifest.json").read_text())["threshold"]
    assert result.labels == ["cancer" if p >= predictor.threshold else "non_cancer" for p in expected]
    assert 0 < int(result.is_cancer.sum()) < len(images)
    summary = predict(export, images, tmp_path / "p.csv", progress=False, device="cpu")
    with open(summary.out_csv, newline="") as handle:
        rows = {row["path"]: row for row in csv.DictReader(handle)}
    for path, probability, label in zip(images, result.probabilities, result.labels, strict=True):
        assert float(rows[str(path)]["probability_cancer"]) == pytest.approx(probability, abs=1e-6)
        assert rows[str(path)]["predicted_label"] == label


def test_predictor_takes_arrays_and_pil_images_like_files(calibrated):
    export, images, _, _ = calibrated
    predictor = api.load_predictor(export, device="cpu", batch_size=2)
    from_files = predictor(images[:3]).probabilities
    arrays = [np.asarray(Image.open(path).convert("RGB")) for path in images[:3]]
    np.testing.assert_allclose(predictor(arrays).probabilities, from_files, atol=1e-6)
    pil = [Image.open(path) for path in images[:3]]
    np.testing.assert_allclose(predictor(pil).probabilities, from_files, atol=1e-6)
    assert len(predictor(images[0])) == 1  # one image, not a sequence
    with pytest.raises(ConfigError, match="shape"):
        predictor([np.zeros((2, 2, 2, 2), np.uint8)])


def test_train_refuses_a_searching_config():
    with pytest.raises(TypeError, match="fixed values"):
        api.train(REPO_ROOT / "search_spaces" / "smoke.yaml")


def readme_example() -> str:
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme.split("### From Python", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "README's 'From Python' section has no python block"
    return match.group(1)


@pytest.mark.slow
def test_readme_python_example_runs_as_written(tmp_path):
    """Run from a copy of the repository root (its relative paths), in a fresh process and Ray."""
    (tmp_path / "search_spaces").symlink_to(REPO_ROOT / "search_spaces")
    script = tmp_path / "example.py"
    script.write_text(readme_example() + "\nprint('EXPORT', result.export)\nprint('N', len(predictions))\n")
    env = ray_env()
    env.pop("RAY_ADDRESS", None)  # the example starts its own local Ray, as in a notebook
    proc = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    export = Path(re.search(r"^EXPORT (.+)$", proc.stdout, re.M).group(1))
    assert (export / "manifest.json").is_file() and export.is_relative_to(tmp_path)
    assert re.search(r"^N 4$", proc.stdout, re.M)
    best = json.loads(next((tmp_path / "experiments").glob("smoke-*/best.json")).read_text())
    assert str(export) == best["export"]
    shutil.rmtree(tmp_path / "experiments", ignore_errors=True)


@pytest.mark.slow
def test_tune_result_and_the_printed_ray_snippet_read_the_same_search(smoke):
    """`raylung tune` ends with a snippet for Ray's own API; run it as printed."""
    from rich.console import Console

    from raylung.cli.tune_cmd import print_tune_result

    result = api._tune_result(smoke)
    best = json.loads(smoke.experiment.best_json.read_text())
    assert (result.best_trial, result.best_params, result.export) == (
        best["trial_id"],
        best["params"],
        Path(best["export"]),
    )
    assert result.best_config is not None and result.best_config.train.lr == best["params"]["train.lr"]
    console = Console(record=True, width=400)
    print_tune_result(console, result)
    text = console.export_text()
    snippet = text.split("with Ray's own API:\n", 1)[1].split("retrain and test", 1)[0]
    scope: dict = {}
    exec(
        "\n".join(line[2:] for line in snippet.splitlines()).replace(
            "grid.get_dataframe()", "df = grid.get_dataframe()"
        ),
        scope,
    )
    frame = scope["df"]
    assert len(frame) == len(result.trials)
    by_trial = dict(zip(frame["trial_id"], frame["val_loss"], strict=True))
    assert set(by_trial) == {t.trial_id for t in result.trials}
