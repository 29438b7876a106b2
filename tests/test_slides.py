"""Whole slides: tiling (counts, labels, resumes, bad slides), grouped splits, and slide prediction.

Real parts throughout: synthetic pyramidal TIFFs (``slide_factory``) read through OpenSlide when
the ``wsi`` extra is installed (else tifffile; both are tested where both exist), the real tissue
detector, the manifest reader and split, and a tiny model trained here on the tiles.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from model_factory import HISTORY
from slide_factory import MPP, SIZE, TISSUE, make_slides, slide_image, write_slide
from typer.testing import CliRunner

from raylung.artifacts.checkpoint import TrainState, save_checkpoint
from raylung.artifacts.export import export_checkpoint
from raylung.artifacts.slide_predict import predict_slides
from raylung.cli.main import app
from raylung.config import DataConfig, ExportConfig, ModelConfig, RaylungConfig
from raylung.config.model_build import build_model
from raylung.data import build_transform, resolve_splits
from raylung.slides import (
    TileSpec,
    load_annotations,
    open_slide,
    openslide_available,
    plan_tiles,
    probability_grid,
    tile_slides,
)

runner = CliRunner()
TILE = (64, 48)  # (width, height); at 0.5 um/px on the 0.25 um/px slides: 128x96 level-0 pixels
BACKENDS = ["tifffile"] + (["openslide"] if openslide_available() else [])
X0, Y0, X1, Y1 = TISSUE
MID_X = (X0 + X1) // 2  # cancer slides: violet left of this, pink right of it


@pytest.fixture(scope="module")
def slide_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("slides")
    make_slides(folder, cancer_slides=4, normal_slides=4)
    return folder


def _labels_csv(folder: Path, slides: list[Path]) -> Path:
    """Labels by name; cancer_0 and cancer_1 come from one patient, so they must share a split."""
    path = folder / "labels.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["slide", "label", "patient"])
        for slide in slides:
            patient = "patient_a" if slide.stem in ("cancer_0", "cancer_1") else ""
            writer.writerow([slide.name, "cancer" if slide.stem.startswith("cancer") else "0", patient])
    return path


@pytest.mark.parametrize("backend", BACKENDS)
def test_tile_count_matches_tissue_area(slide_dir: Path, backend: str) -> None:
    """Kept tiles cover the tissue rectangle: count within 10% of area / tile area, none centred on glass."""
    with open_slide(slide_dir / "normal_0.tif", backend=backend) as slide:
        assert slide.backend == backend and slide.mpp == pytest.approx(MPP, rel=1e-3)
        assert slide.dimensions[0] == SIZE and len(slide.dimensions) == 3
        plan = plan_tiles(slide, TileSpec(size=TILE))
    assert plan.downsample == pytest.approx(2.0) and plan.level == 1  # 0.5 um/px read from the 2x level
    box_area = TILE[0] * 2 * TILE[1] * 2
    expected = (X1 - X0) * (Y1 - Y0) / box_area
    assert abs(plan.keep.sum() - expected) <= 0.10 * expected, (plan.keep.sum(), expected)
    centres = plan.centres[plan.keep]
    assert (
        (centres[:, 0] >= X0) & (centres[:, 0] <= X1) & (centres[:, 1] >= Y0) & (centres[:, 1] <= Y1)
    ).all()


def test_tile_cli_manifest_check_and_grouped_split(slide_dir: Path, tmp_path: Path) -> None:
    slides = sorted(slide_dir.glob("*.tif"))
    labels = _labels_csv(tmp_path, slides)
    root = tmp_path / "tiles"
    args = ["data", "tile", str(slide_dir), "--out", str(root), "--labels", str(labels), "--size", "64x48"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "cancer_0" in result.output and "tiled" in result.output

    rows = list(csv.DictReader((root / "manifest.csv").open()))
    assert set(rows[0]) >= {"path", "label", "group", "slide", "x", "y"}
    assert {r["group"] for r in rows if r["slide"] in ("cancer_0", "cancer_1")} == {"patient_a"}
    assert {r["group"] for r in rows if r["slide"] == "normal_2"} == {"normal_2"}
    first = cv2.imread(str(root / rows[0]["path"]))
    assert first.shape == (TILE[1], TILE[0], 3)
    assert (root / rows[0]["path"]).name == f"{rows[0]['x']}_{rows[0]['y']}.png"

    check = runner.invoke(app, ["data", "check", "--root", str(root), "--no-decode"])
    assert check.exit_code == 0, check.output
    split_set = resolve_splits(DataConfig(root=root, cache=False, loader_workers=0))
    split_of: dict[str, set[str]] = {}
    for split, samples in split_set.items():
        for sample in samples:
            split_of.setdefault(Path(sample.path).parent.name, set()).add(split)
    assert len(split_of) == len(slides)
    assert all(len(s) == 1 for s in split_of.values()), split_of  # no slide in two splits
    assert split_of["cancer_0"] == split_of["cancer_1"]  # nor a patient


def test_bad_slide_is_named_others_tiled_and_rerun_skips(slide_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("cancer_0.tif", "normal_0.tif"):
        shutil.copy(slide_dir / name, folder / name)
    whole = (slide_dir / "normal_1.tif").read_bytes()
    (folder / "broken.tif").write_bytes(whole[: len(whole) // 3])  # truncated mid-pixels
    root = tmp_path / "out"

    result = runner.invoke(app, ["data", "tile", str(folder), "--out", str(root), "--size", "64x48"])
    assert result.exit_code == 1, result.output
    assert "broken" in result.output and "could not be read" in result.output
    summary = tile_slides(sorted(folder.glob("*.tif")), root, TileSpec(size=TILE), progress=False)
    status = {s.slide: s for s in summary.slides}
    assert status["broken"].status == "failed" and "broken.tif" in status["broken"].reason
    assert status["cancer_0"].status == status["normal_0"].status == "skipped"  # the rerun
    assert status["cancer_0"].kept > 50
    listed = {r["slide"] for r in csv.DictReader((root / "tiles.csv").open())}
    assert listed == {"cancer_0", "normal_0"}
    assert summary.manifest is None  # nothing labelled

    changed = tile_slides(
        [folder / "normal_0.tif"], root, TileSpec(size=TILE, min_tissue=0.9), progress=False
    )
    assert changed.slides[0].status == "tiled"  # other settings: tiled again, not skipped


def test_geojson_labels_only_tiles_whose_centre_is_inside(slide_dir: Path, tmp_path: Path) -> None:
    outer = [[700, 500], [1300, 500], [1300, 1000], [700, 1000], [700, 500]]
    hole = [[900, 650], [1100, 650], [1100, 850], [900, 850], [900, 650]]
    feature = {
        "type": "Feature",
        "geometry": {"type": "Polygon", "coordinates": [outer, hole]},
        "properties": {"objectType": "annotation", "classification": {"name": "Tumor", "color": [200, 0, 0]}},
    }
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "normal_0.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}))
    slide = slide_dir / "normal_0.tif"
    root = tmp_path / "tiles"
    annotations = load_annotations(notes, ["normal_0"])
    tile_slides([slide], root, TileSpec(size=TILE), annotations=annotations, progress=False)

    rows = list(csv.DictReader((root / "tiles.csv").open()))
    w, h = TILE[0] * 2, TILE[1] * 2
    labelled = 0
    for row in rows:
        cx, cy = int(row["x"]) + w / 2, int(row["y"]) + h / 2
        inside = 700 < cx < 1300 and 500 < cy < 1000 and not (900 < cx < 1100 and 650 < cy < 850)
        assert row["label"] == ("cancer" if inside else ""), row
        labelled += inside
    overlapping = [
        r
        for r in rows
        if int(r["x"]) < 1300 and int(r["x"]) + w > 700 and int(r["y"]) < 1000 and int(r["y"]) + h > 500
    ]
    assert 0 < labelled < len(overlapping)  # some tiles touch the polygon but their centre does not
    assert len(list(csv.DictReader((root / "manifest.csv").open()))) == labelled


def _train_tiny_model(root: Path, tmp: Path) -> Path:
    """resnet_ours_tiny trained on the manifest's tiles with plain PyTorch, then exported."""
    rows = list(csv.DictReader((root / "manifest.csv").open()))
    data = DataConfig(root=root, image_size=TILE, cache=False, loader_workers=0)
    transform = build_transform(data, train=False)
    images = torch.stack(
        [transform(cv2.cvtColor(cv2.imread(str(root / r["path"])), cv2.COLOR_BGR2RGB)) for r in rows]
    )
    labels = torch.tensor([float(r["label"] == "cancer") for r in rows])
    config = RaylungConfig(data=data, model=ModelConfig(name="resnet_ours_tiny"))
    torch.manual_seed(0)
    net = build_model(config.model, 3)
    optimizer = torch.optim.Adam(net.parameters(), lr=2e-3)
    generator = torch.Generator().manual_seed(0)
    net.train()
    for _ in range(40):  # the colours separate at once: stop when the loss says so
        pick = torch.randint(0, len(rows), (16,), generator=generator)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            net(images[pick]).squeeze(1), labels[pick]
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if loss.item() < 0.02:
            break
    with torch.no_grad():  # BatchNorm statistics of the final weights (they lag after a short run)
        for module in net.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.reset_running_stats()
                module.momentum = None  # a plain average over the pass below
        net(images)
    net.eval()
    state = TrainState(epoch=1, best_metric=loss.item(), best_epoch=1, history=[dict(HISTORY[0])])
    checkpoint = tmp / "checkpoint"
    save_checkpoint(checkpoint, net, optimizer, None, state, config)
    return export_checkpoint(checkpoint, tmp / "export", formats=[], settings=ExportConfig(calibrate=False))


def test_slide_prediction_heatmap_finds_the_cancer_texture(slide_dir: Path, tmp_path: Path) -> None:
    """Train on annotated tiles (violet = cancer, pink = non_cancer), predict new slides."""
    cancer = {"name": "cancer"}
    normal = {"name": "non_cancer"}

    def box(x0: int, x1: int) -> list[list[list[int]]]:
        return [[[x0, Y0], [x1, Y0], [x1, Y1], [x0, Y1], [x0, Y0]]]

    features = [
        {
            "type": "Feature",
            "geometry": {"type": "Polygon", "coordinates": box(X0, MID_X)},
            "properties": cancer,
        },
        {
            "type": "Feature",
            "geometry": {"type": "Polygon", "coordinates": box(MID_X, X1)},
            "properties": normal,
        },
    ]
    notes = tmp_path / "cancer_0.geojson"
    notes.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    root = tmp_path / "tiles"
    tile_slides(
        [slide_dir / "cancer_0.tif"], root, TileSpec(size=TILE),
        annotations=load_annotations(notes, ["cancer_0"]), progress=False,
    )  # fmt: skip
    export = _train_tiny_model(root, tmp_path)

    # An unseen slide with the violet texture in the *top* half, and an all-pink one.
    fresh = write_slide(
        tmp_path / "new" / "fresh.tif", slide_image(cancer=(X0, Y0, X1, (Y0 + Y1) // 2), seed=7)
    )
    out = tmp_path / "pred"
    result = runner.invoke(app, ["predict", str(export), str(fresh),
                                 "--slides", "--out", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (out / "fresh_heatmap.png").stat().st_size > 1000
    slides = {r["group"]: r for r in csv.DictReader((out / "slides.csv").open())}
    assert slides["fresh"]["predicted_label"] == "cancer"
    normal = predict_slides(export, [slide_dir / "normal_3.tif"], tmp_path / "api", progress=False)
    assert normal.groups is not None and normal.groups.rows[0].predicted == 0  # all pink: non_cancer
    assert normal.heatmaps["normal_3"].is_file() and normal.n_tiles["normal_3"] > 50

    tiles = [r for r in csv.DictReader((out / "tiles.csv").open()) if r["slide"] == "fresh"]
    boxes = np.array([[int(r[k]) for k in ("x", "y", "width", "height")] for r in tiles])
    probs = np.array([float(r["probability_cancer"]) for r in tiles])
    grid = probability_grid(boxes, probs, (SIZE[1] // 4, SIZE[0] // 4), 4.0)
    mid = (Y0 + Y1) // 2 // 4
    top, bottom = np.nanmean(grid[: mid - 12]), np.nanmean(grid[mid + 12 :])
    assert top > 0.8 and bottom < 0.2, (top, bottom)  # the heatmap is hot where violet was drawn
