"""Prediction on files and folders: one row per readable image, corrupt files listed, threshold."""

from __future__ import annotations

import csv
import shutil

import cv2
import numpy as np
import pytest
import torch
from model_factory import make_checkpoint
from typer.testing import CliRunner

from raylung.artifacts.export import export_checkpoint
from raylung.artifacts.predict import find_images, predict
from raylung.data import build_transform, load_image
from raylung.errors import ConfigError, DataError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(export dir, eager model, config, folder of images with odd cases, readable image paths)."""
    tmp = tmp_path_factory.mktemp("predict")
    checkpoint, net, config = make_checkpoint(tmp)
    export = export_checkpoint(checkpoint, tmp / "export", formats=[])
    folder = tmp / "images"
    sources = sorted((tmp / "data" / "test").rglob("*.png"))
    (folder / "nested" / ".hidden").mkdir(parents=True)
    readable = [shutil.copy(sources[0], folder / "a.png"), shutil.copy(sources[1], folder / "B.PNG"),
                shutil.copy(sources[2], folder / "nested" / "c.png")]  # fmt: skip
    bmp = folder / "d.bmp"
    cv2.imwrite(str(bmp), cv2.imread(str(sources[3])))
    readable.append(bmp)
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"truncated")
    (folder / "notes.txt").write_text("not an image")
    shutil.copy(sources[4], folder / "nested" / ".hidden" / "e.png")
    return export, net, config, folder, [str(p) for p in readable]


def _rows(path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _eager_probability(net, config, path: str) -> float:
    image = load_image(path, 3, config.data.image_size) if not path.endswith(".bmp") else None
    if image is None:  # the training decoder has no BMP; the test decodes it independently
        bgr = cv2.imread(path)
        image = cv2.resize(
            cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), config.data.image_size, interpolation=cv2.INTER_AREA
        )
    x = build_transform(config.data, train=False)(image)[None]
    with torch.no_grad():
        return float(torch.sigmoid(net(x)).reshape(()))


def test_folder_gives_one_row_per_readable_image(setup, tmp_path):
    export, net, config, folder, readable = setup
    summary = predict(
        export, [folder], tmp_path / "out" / "p.csv", batch_size=2, progress=False, device="cpu"
    )
    rows = _rows(summary.out_csv)
    assert list(rows[0]) == ["path", "probability_cancer", "predicted_label"]
    assert sorted(r["path"] for r in rows) == sorted(readable)
    assert summary.n_found == 5 and summary.n_predicted == 4
    assert [path for path, _ in summary.unreadable] == [str(folder / "corrupt.png")]
    assert summary.unreadable[0][1]  # with a reason
    for row in rows:
        assert float(row["probability_cancer"]) == pytest.approx(
            _eager_probability(net, config, row["path"]), abs=2e-6
        )
    assert summary.synthetic_model is True


def test_threshold_decides_the_label(setup, tmp_path):
    export, _, _, folder, _ = setup
    probs = sorted(
        float(r["probability_cancer"])
        for r in _rows(predict(export, [folder], tmp_path / "a.csv", progress=False, device="cpu").out_csv)
    )
    assert probs[-1] - probs[0] > 1e-3
    threshold = (probs[1] + probs[2]) / 2
    summary = predict(export, [folder], tmp_path / "b.csv", threshold=threshold, progress=False, device="cpu")
    rows = _rows(summary.out_csv)
    for row in rows:
        expected = "cancer" if float(row["probability_cancer"]) >= threshold else "non_cancer"
        assert row["predicted_label"] == expected
    assert summary.n_cancer == 2 and summary.n_non_cancer == 2
    everything = predict(export, [folder], tmp_path / "c.csv", threshold=0.0, progress=False, device="cpu")
    assert everything.n_cancer == 4
    with pytest.raises(ConfigError, match="threshold"):
        predict(export, [folder], tmp_path / "d.csv", threshold=1.5)
    with pytest.raises(ConfigError, match="not a torch device"):
        predict(export, [folder], tmp_path / "d.csv", device="gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            predict(export, [folder], tmp_path / "d.csv", device="cuda")


def test_files_and_non_recursive_search(setup):
    _, _, _, folder, _ = setup
    top_level = [folder / name for name in ("B.PNG", "a.png", "corrupt.png", "d.bmp")]
    assert find_images([folder], recursive=False) == sorted(top_level)
    # a file named explicitly is taken whatever its extension, and only once
    assert find_images([folder / "notes.txt", folder / "a.png", folder / "a.png"]) == [
        folder / "notes.txt",
        folder / "a.png",
    ]


def test_bad_paths_are_clear_errors(setup, tmp_path):
    export, _, _, folder, _ = setup
    with pytest.raises(DataError, match=f"no such file or folder: {tmp_path / 'missing'}"):
        predict(export, [tmp_path / "missing"], tmp_path / "p.csv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images"):
        predict(export, [tmp_path / "empty"], tmp_path / "p.csv")
    with pytest.raises(DataError, match="neither an export"):
        predict(folder, [folder], tmp_path / "p.csv")
    assert not (tmp_path / "p.csv").exists()


def test_cli_predict_lists_unreadable_files(setup, tmp_path):
    import typer

    from raylung.cli import predict_cmd

    export, _, _, folder, _ = setup
    app = typer.Typer()
    predict_cmd.register(app)
    app.command("noop")(lambda: None)
    out = tmp_path / "cli.csv"
    result = CliRunner().invoke(
        app, ["predict", str(export), str(folder), "--out", str(out), "--threshold", "0", "--device", "cpu"]
    )
    assert result.exit_code == 0, result.output
    assert "4 image(s): 4 cancer, 0 non_cancer" in result.stdout
    assert "1 unreadable file(s)" in result.stderr and "corrupt.png" in result.stderr
    assert len(_rows(out)) == 4
    assert np.all([r["predicted_label"] == "cancer" for r in _rows(out)])
