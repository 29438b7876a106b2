"""Every bad input gets one clear message naming the file or folder and the fix."""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from data_factory import (
    make_folder_tree,
    make_manifest_tree,
    make_paper_tree,
    truncate,
    write_garbage,
    write_manifest,
)

from raylung.config import DataConfig
from raylung.data import LungDataset, discover, discover_all, resolve_splits
from raylung.errors import DataError

REPO = Path(__file__).resolve().parents[1]
SIZE = (32, 24)


def test_missing_split_folder_is_named(tmp_path: Path) -> None:
    root = make_paper_tree(tmp_path, per_class=1)
    shutil.rmtree(root / "Test")
    with pytest.raises(DataError, match=r"missing split folder\(s\) test/") as info:
        discover(DataConfig(root=root))
    assert "train/" in str(info.value) and "VAL/" in str(info.value)


def test_empty_class_folder_is_named(tmp_path: Path) -> None:
    root = make_paper_tree(tmp_path, per_class=1)
    for image in (root / "VAL" / "bad-cancer").iterdir():
        image.unlink()
    with pytest.raises(DataError, match="holds no images") as info:
        discover(DataConfig(root=root))
    assert "bad-cancer" in str(info.value)


def test_unknown_class_folder_suggests_label_map(tmp_path: Path) -> None:
    root = make_folder_tree(tmp_path, {"lung_aca": 1, "lung_n": 1}, copies=1)
    with pytest.raises(DataError) as info:
        discover(DataConfig(root=root))
    message = str(info.value)
    assert "lung_aca" in message and "lung_n" in message and "--label-map" in message
    with pytest.raises(DataError, match="unknown class folder"):
        discover(DataConfig(root=root, label_map={"lung_aca": "cancer"}))


def test_missing_root_mentions_demo(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist.*demo"):
        discover(DataConfig(root=tmp_path / "nowhere"))


def test_garbage_image_errors_or_is_skipped_and_counted(tmp_path: Path) -> None:
    root = make_folder_tree(tmp_path, {"cancer": 3, "non_cancer": 3}, copies=1)
    bad = write_garbage(root / "cancer" / "page.jpeg")
    empty = write_garbage(root / "non_cancer" / "empty.png", b"")
    with pytest.raises(DataError, match="2 unreadable image file") as info:
        discover(DataConfig(root=root))
    assert str(bad) in str(info.value) and "on_bad_image: skip" in str(info.value)
    found = discover_all(DataConfig(root=root, on_bad_image="skip"))
    assert sorted(p for p, _ in found.skipped) == sorted([str(bad), str(empty)])
    assert len(found.samples) == 6


def test_truncated_image_fails_fast_or_is_excluded(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = make_folder_tree(tmp_path / "d", {"cancer": 3, "non_cancer": 3}, copies=1, suffix=".jpg")
    broken = truncate(root / "cancer" / "cancer_g1_c0.jpg")
    samples = discover(DataConfig(root=root))  # header screening passes a truncated JPEG
    assert broken.as_posix() in [s.path for s in samples]
    for cache in (True, False):
        cfg = DataConfig(root=root, image_size=SIZE, cache=cache, cache_dir=tmp_path / "c")
        with pytest.raises(DataError, match="truncated") as info:
            LungDataset(samples, cfg, train=False)
        assert str(broken) in str(info.value)
        with caplog.at_level(logging.WARNING):
            dataset = LungDataset(samples, cfg.model_copy(update={"on_bad_image": "skip"}), train=False)
        assert len(dataset) == len(samples) - 1
        assert [p for p, _ in dataset.skipped] == [str(broken)]
        assert "skipping 1 unreadable" in caplog.text


def test_manifest_row_pointing_nowhere(tmp_path: Path) -> None:
    root = make_manifest_tree(tmp_path, groups_per_label=3, copies=1)
    (root / "img" / "cancer_1_0.png").unlink()
    with pytest.raises(DataError, match=r"line 3 of manifest.csv but not found"):
        discover(DataConfig(root=root))
    assert len(discover(DataConfig(root=root, on_bad_image="skip"))) == 5


def test_manifest_unknown_label_and_missing_column(tmp_path: Path) -> None:
    root = make_manifest_tree(tmp_path, groups_per_label=3, copies=1, labels=("lung_aca", "lung_n"))
    with pytest.raises(DataError, match="'lung_aca'.*--label-map lung_aca=cancer"):
        discover(DataConfig(root=root))
    write_manifest(root / "manifest.csv", [{"file": "img/lung_aca_0_0.png", "diagnosis": "cancer"}])
    with pytest.raises(DataError, match="no label column.*file, diagnosis"):
        discover(DataConfig(root=root))


def test_manifest_duplicate_rows_and_partial_splits(tmp_path: Path) -> None:
    root = make_manifest_tree(tmp_path, groups_per_label=3, copies=1)
    rows = [{"path": "img/cancer_0_0.png", "label": "cancer"}] * 2
    write_manifest(root / "manifest.csv", rows)
    with pytest.raises(DataError, match="twice"):
        discover(DataConfig(root=root))
    rows = [
        {"path": "img/cancer_0_0.png", "label": "1", "split": "train"},
        {"path": "img/cancer_1_0.png", "label": "1", "split": ""},
    ]
    write_manifest(root / "manifest.csv", rows)
    with pytest.raises(DataError, match="empty split"):
        discover(DataConfig(root=root))


def test_split_missing_a_class(tmp_path: Path) -> None:
    root = make_paper_tree(tmp_path, per_class=1)
    shutil.rmtree(root / "Test" / "Good Cancer")
    shutil.rmtree(root / "Test" / "bad-cancer")
    with pytest.raises(DataError, match="test split has no cancer images"):
        resolve_splits(DataConfig(root=root))


def test_cli_prints_one_line_and_exits_2(tmp_path: Path) -> None:
    root = make_folder_tree(tmp_path, {"lung_aca": 1, "lung_n": 1}, copies=1)
    command = ["data", "split", "--root", str(root), "--out", str(tmp_path / "s.csv")]
    result = subprocess.run(
        [sys.executable, "-m", "raylung", *command], capture_output=True, text=True, cwd=REPO, timeout=120
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "unknown class folder" in errors[0]
