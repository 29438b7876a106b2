"""Prediction on files and folders: one row per readable image, corrupt files listed, threshold,
the export's calibration, TTA and group-level rows."""

from __future__ import annotations

import csv
import json
import shutil

import cv2
import numpy as np
import pytest
import torch
from model_factory import make_checkpoint
from typer.testing import CliRunner

from raylung.artifacts.export import export_checkpoint
from raylung.artifacts.loader import load_export
from raylung.artifacts.predict import CSV_COLUMNS, find_images, group_csv_path, predict
from raylung.config.schema import ExportConfig
from raylung.data import build_transform, load_image
from raylung.errors import ConfigError, DataError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(export dir, eager model, config, folder of images with odd cases, readable image paths)."""
    tmp = tmp_path_factory.mktemp("predict")
    checkpoint, net, config = make_checkpoint(tmp)
    # uncalibrated (temperature 1, threshold 0.5), so thresholds between the tiny random model's
    # probabilities stay far apart; test_stored_threshold_and_temperature_are_used covers calibration
    export = export_checkpoint(checkpoint, tmp / "export", formats=[], settings=ExportConfig(calibrate=False))
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


def _eager_logit(net, config, path: str, view=lambda x: x) -> float:
    image = load_image(path, 3, config.data.image_size) if not path.endswith(".bmp") else None
    if image is None:  # the training decoder has no BMP; the test decodes it independently
        bgr = cv2.imread(path)
        image = cv2.resize(
            cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), config.data.image_size, interpolation=cv2.INTER_AREA
        )
    x = build_transform(config.data, train=False)(image)[None]
    with torch.no_grad():
        return float(net(view(x)).reshape(()))


def _eager_probability(net, config, path: str, temperature: float = 1.0) -> float:
    return float(1 / (1 + np.exp(-_eager_logit(net, config, path) / temperature)))


def test_folder_gives_one_row_per_readable_image(setup, tmp_path):
    export, net, config, folder, readable = setup
    loaded = load_export(export)
    summary = predict(
        export, [folder], tmp_path / "out" / "p.csv", batch_size=2, progress=False, device="cpu"
    )
    rows = _rows(summary.out_csv)
    assert list(rows[0]) == ["path", "probability_cancer", "predicted_label", "logit", "runtime", "tta"]
    assert list(rows[0]) == list(CSV_COLUMNS)
    assert sorted(r["path"] for r in rows) == sorted(readable)
    assert summary.n_found == 5 and summary.n_predicted == 4
    assert [path for path, _ in summary.unreadable] == [str(folder / "corrupt.png")]
    assert summary.unreadable[0][1]  # with a reason
    for row in rows:
        assert float(row["probability_cancer"]) == pytest.approx(
            _eager_probability(net, config, row["path"], loaded.temperature), abs=2e-6
        )
        assert float(row["logit"]) == pytest.approx(_eager_logit(net, config, row["path"]), abs=2e-6)
        assert (row["runtime"], row["tta"]) == ("torch", "off")
    assert summary.synthetic_model is True
    # the export's fitted calibration and operating point are what predict uses by default
    assert (summary.threshold, summary.threshold_source) == (loaded.threshold, "export")
    assert summary.temperature == loaded.temperature


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


def test_stored_threshold_and_temperature_are_used(setup, tmp_path):
    """An export calibrated at training time: P = sigmoid(logit / T), cancer at its own threshold."""
    export, net, config, folder, _ = setup
    calibrated = shutil.copytree(export, tmp_path / "calibrated")
    manifest = json.loads((calibrated / "manifest.json").read_text())
    logits = sorted(_eager_logit(net, config, p) for p in (str(folder / "a.png"), str(folder / "B.PNG"),
                                                             str(folder / "nested" / "c.png")))  # fmt: skip
    stored = float(torch.sigmoid(torch.tensor((logits[0] + logits[1]) / 2 / 3.0)))  # between the lowest two
    manifest.update(threshold=stored, calibration={"temperature": 3.0})
    (calibrated / "manifest.json").write_text(json.dumps(manifest))
    summary = predict(calibrated, [folder], tmp_path / "p.csv", progress=False, device="cpu")
    assert (summary.threshold, summary.threshold_source, summary.temperature) == (stored, "export", 3.0)
    for row in _rows(summary.out_csv):
        logit = float(row["logit"])
        assert float(row["probability_cancer"]) == pytest.approx(1 / (1 + np.exp(-logit / 3.0)), abs=1e-6)
        assert row["predicted_label"] == (
            "cancer" if 1 / (1 + np.exp(-logit / 3.0)) >= stored else "non_cancer"
        )
    assert 0 < summary.n_cancer < summary.n_predicted
    given = predict(calibrated, [folder], tmp_path / "g.csv", threshold=0.0, progress=False, device="cpu")
    assert (given.threshold_source, given.n_cancer) == ("given", 4)


def test_tta_rows_average_the_hand_made_views(setup, tmp_path):
    export, net, config, folder, _ = setup
    temperature = load_export(export).temperature
    summary = predict(export, [folder], tmp_path / "tta.csv", tta=True, progress=False, device="cpu")
    assert summary.views == ("identity", "hflip", "vflip", "rot180")  # 64x48: no quarter turns
    flips = [
        lambda x: x,
        lambda x: torch.flip(x, [3]),
        lambda x: torch.flip(x, [2]),
        lambda x: torch.flip(x, [2, 3]),
    ]
    for row in _rows(summary.out_csv):
        assert row["tta"] == "identity+hflip+vflip+rot180"
        by_hand = np.mean(
            [1 / (1 + np.exp(-_eager_logit(net, config, row["path"], f) / temperature)) for f in flips]
        )
        assert float(row["probability_cancer"]) == pytest.approx(by_hand, abs=2e-6)
        assert float(row["logit"]) == pytest.approx(_eager_logit(net, config, row["path"]), abs=2e-6)


def test_cli_group_by_writes_the_group_csv(setup, tmp_path):
    import typer

    from raylung.cli import predict_cmd

    export, _, _, folder, _ = setup
    rule = f"mean tile probability >= {load_export(export).threshold:g}"  # the export's threshold
    app = typer.Typer()
    predict_cmd.register(app)
    app.command("noop")(lambda: None)
    out = tmp_path / "tiles.csv"
    args = ["predict", str(export), str(folder), "--out", str(out), "--device", "cpu", "--tta"]
    result = CliRunner().invoke(app, [*args, "--group-by", "folder"])
    assert result.exit_code == 0, result.output
    assert "runtime torch, TTA identity+hflip+vflip+rot180" in result.stdout
    assert "2 group(s):" in result.stdout and rule in result.stdout
    tiles, groups = _rows(out), _rows(group_csv_path(out))
    assert group_csv_path(out) == tmp_path / "tiles_groups.csv"
    # a.png, B.PNG and d.bmp lie in images/, c.png in images/nested/ (corrupt.png has no row)
    members = {"images": [], "nested": []}
    for row in tiles:
        members["nested" if "/nested/" in row["path"] else "images"].append(float(row["probability_cancer"]))
    assert [(g["group"], int(g["n_tiles"])) for g in groups] == [("images", 3), ("nested", 1)]
    for group in groups:
        probs = members[group["group"]]
        assert float(group["mean_probability"]) == pytest.approx(np.mean(probs), abs=2e-6)
        assert group["predicted_label"] == (
            "cancer" if np.mean(probs) >= load_export(export).threshold else "non_cancer"
        )
        assert group["rule"] == rule and "label" not in group
    # a regex on the file name, the fraction rule with a cutoff: every tile its own group here
    result = CliRunner().invoke(app, [*args, "--group-by", r"^(\w+)\.", "--group-rule", "fraction",
                                      "--group-cutoff", "1", "--threshold", "0"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert [(g["group"], g["fraction_cancer"], g["predicted_label"]) for g in _rows(group_csv_path(out))] == [
        ("B", "1.000000", "cancer"), ("a", "1.000000", "cancer"), ("c", "1.000000", "cancer"),
        ("d", "1.000000", "cancer")
    ]  # fmt: skip
    # a regex that misses a file is refused before any image is run
    result = CliRunner().invoke(app, [*args, "--group-by", r"^([a-c])\."])
    assert isinstance(result.exception, DataError) and "d.bmp" in str(result.exception)
