"""Discovery of the paper, folders and manifest layouts on small generated trees."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from data_factory import make_folder_tree, make_manifest_tree, make_paper_tree, write_image, write_manifest

from raylung.config import DataConfig
from raylung.data import detect_layout, discover, discover_all
from raylung.errors import DataError


def test_paper_layout_with_odd_spellings(tmp_path: Path) -> None:
    root = make_paper_tree(tmp_path, per_class=2)
    cfg = DataConfig(root=root)
    assert detect_layout(cfg)[0] == "paper"
    samples = discover(cfg)
    assert len(samples) == 3 * 4 * 2
    assert {s.split for s in samples} == {"train", "validation", "test"}
    assert {s.subclass for s in samples} == {"good_cancer", "bad_cancer", "good_non_cancer", "bad_non_cancer"}
    for s in samples:
        assert s.label == (0 if "non_cancer" in s.subclass else 1)
        assert Path(s.path).is_absolute() and Path(s.path).is_file()


def test_paper_layout_accepts_valid_alias_and_binary_class_folders(tmp_path: Path) -> None:
    splits, classes = ("Training", "valid", "testing"), ("Cancer", "Non-Cancer")
    root = make_paper_tree(tmp_path, per_class=1, splits=splits, classes=classes)
    samples = discover(DataConfig(root=root))
    assert {(s.split, s.label, s.subclass) for s in samples} == {
        (split, label, name)
        for split in ("train", "validation", "test")
        for label, name in ((1, "cancer"), (0, "non_cancer"))
    }


def test_folders_with_label_map_keep_folder_as_subclass(tmp_path: Path) -> None:
    root = make_folder_tree(tmp_path, {"lung_aca": 2, "lung_scc": 2, "lung_n": 3}, copies=1)
    label_map = {"LUNG_ACA": "cancer", "lung-scc": "cancer", "lung_n": "non_cancer"}  # spellings differ
    cfg = DataConfig(root=root, label_map=label_map)
    found = discover_all(cfg)
    assert found.layout == "folders" and found.group_source == "file"
    by_subclass = {s.subclass: s.label for s in found.samples}
    assert by_subclass == {"lung_aca": 1, "lung_scc": 1, "lung_n": 0}
    assert all(s.split is None for s in found.samples)
    assert len(found.samples) == 7


def test_folders_named_cancer_map_themselves(tmp_path: Path) -> None:
    root = make_folder_tree(tmp_path, {"Cancer": 2, "non cancer": 2}, copies=1)
    labels = sorted(s.label for s in discover(DataConfig(root=root)))
    assert labels == [0, 0, 1, 1]


def test_nested_folders_and_non_images_are_handled(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = make_folder_tree(tmp_path, {"cancer": 1, "non_cancer": 1}, copies=1)
    write_image(root / "cancer" / "patient_7" / "deep.png")
    (root / "cancer" / "notes.txt").write_text("not an image")
    (root / "cancer" / ".DS_Store").write_bytes(b"\0\0")
    with caplog.at_level(logging.DEBUG, logger="raylung.data.files"):
        samples = discover(DataConfig(root=root))
    names = sorted(Path(s.path).name for s in samples)
    assert names == ["cancer_g0_c0.png", "deep.png", "non_cancer_g0_c0.png"]
    assert "notes.txt" in caplog.text


def test_manifest_with_groups_splits_and_lc25000_aliases(tmp_path: Path) -> None:
    columns = ("path", "binary_label", "group_id")
    root = make_manifest_tree(tmp_path, groups_per_label=4, copies=2, split=True, columns=columns)
    found = discover_all(DataConfig(root=root))
    assert found.layout == "manifest" and found.group_source == "manifest"
    assert found.has_given_splits
    assert len(found.samples) == 16
    groups = {s.group for s in found.samples}
    assert len(groups) == 8
    assert {s.split for s in found.samples} == {"train", "validation", "test"}


def test_manifest_labels_through_label_map_and_absolute_paths(tmp_path: Path) -> None:
    a = write_image(tmp_path / "data" / "a.png")
    write_image(tmp_path / "data" / "b.png")
    manifest = write_manifest(
        tmp_path / "lists" / "m.csv",
        [{"path": str(a), "label": "lung_aca"}, {"path": "../data/b.png", "label": "lung_n"}],
    )
    label_map = {"lung_aca": "cancer", "lung_n": "non_cancer"}
    cfg = DataConfig(root=tmp_path, manifest=manifest, label_map=label_map)
    samples = discover(cfg)
    found = [(Path(s.path).name, s.label, s.subclass) for s in samples]
    assert found == [("a.png", 1, "lung_aca"), ("b.png", 0, "lung_n")]


def test_auto_prefers_manifest_then_split_folders(tmp_path: Path) -> None:
    root = make_folder_tree(tmp_path / "f", {"cancer": 1, "non_cancer": 1}, copies=1)
    assert detect_layout(DataConfig(root=root))[0] == "folders"
    write_manifest(root / "manifest.csv", [{"path": "cancer/cancer_g0_c0.png", "label": "1"}])
    layout, why = detect_layout(DataConfig(root=root))
    assert layout == "manifest" and "manifest.csv" in why


def test_group_regex_groups_copies(tmp_path: Path) -> None:
    root = make_folder_tree(tmp_path, {"cancer": 3, "non_cancer": 3}, copies=3)
    found = discover_all(DataConfig(root=root, group_regex=r"^(?P<group>\w+_g\d+)_c\d+"))
    assert found.group_source == "regex"
    assert len({s.group for s in found.samples}) == 6
    with pytest.raises(DataError, match="matches no group"):
        discover(DataConfig(root=root, group_regex=r"patient(\d+)"))
