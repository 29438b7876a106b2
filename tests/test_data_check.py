"""``check_splits``: shared groups, shared and byte-identical files, unreadable files."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from data_factory import make_folder_tree, make_manifest_tree, truncate, write_image

from raylung.config import DataConfig
from raylung.data import SplitSet, check_splits, resolve_splits
from raylung.data.samples import Sample


def test_clean_grouped_split_has_no_leakage(tmp_path: Path) -> None:
    root = make_manifest_tree(tmp_path, groups_per_label=6, copies=2)
    cfg = DataConfig(root=root)
    report = check_splits(resolve_splits(cfg), cfg)
    assert not report.has_leakage
    assert report.group_source == "manifest" and report.shared_data_groups == {}
    assert sum(report.histogram["train"].values()) == report.counts["train"]["total"]
    assert "32x24 uint8 x3" in report.histogram["train"]
    assert report.channel_mean is not None and len(report.channel_mean) == 3
    assert "no leakage found" in str(report)


def test_split_by_file_leaks_through_the_data_groups(tmp_path: Path) -> None:
    root = make_manifest_tree(tmp_path, groups_per_label=6, copies=3)
    cfg = DataConfig(root=root)
    per_file = SplitSet.from_samples(
        [Sample(s.path, s.label, s.subclass, Path(s.path).name, s.split) for s in _file_split(cfg)]
    )
    report = check_splits(per_file, cfg, decode_images=False)
    assert not report.shared_groups  # the split's own per-file groups look clean ...
    assert report.shared_data_groups  # ... but the manifest's groups straddle splits
    assert report.has_leakage and "LEAKAGE" in str(report)


def _file_split(cfg: DataConfig) -> list[Sample]:
    """Round-robin files over the splits, ignoring groups (what a naive split does)."""
    from raylung.data import discover

    names = ("train", "validation", "test")
    samples = sorted(discover(cfg), key=lambda s: s.path)
    return [Sample(s.path, s.label, s.subclass, s.group, names[i % 3]) for i, s in enumerate(samples)]


def test_byte_identical_files_across_splits_are_leakage(tmp_path: Path) -> None:
    root = make_folder_tree(tmp_path, {"cancer": 5, "non_cancer": 5}, copies=1)
    split_set = resolve_splits(DataConfig(root=root))
    victim = split_set["test"][0]
    source = next(s for s in split_set["train"] if s.label == victim.label)
    shutil.copyfile(source.path, victim.path)
    report = check_splits(split_set, DataConfig(root=root), decode_images=False)
    assert report.has_leakage
    assert [sorted(split for split, _ in items) for items in report.identical_files] == [["test", "train"]]
    assert "the data has no group key" in " ".join(report.notes)
    assert report.shared_data_groups is None  # not checkable, rendered as n/a


def test_same_file_in_two_splits(tmp_path: Path) -> None:
    a = write_image(tmp_path / "a.png")
    samples = [Sample(str(a), 1, None, "g1", "train"), Sample(str(a), 1, None, "g2", "validation")]
    report = check_splits(SplitSet.from_samples(samples), decode_images=False)
    assert report.shared_paths == {str(a): ["train", "validation"]}
    assert report.has_leakage


def test_unreadable_files_are_reported(tmp_path: Path) -> None:
    root = make_folder_tree(tmp_path, {"cancer": 5, "non_cancer": 5}, copies=1, suffix=".jpg")
    cfg = DataConfig(root=root)
    split_set = resolve_splits(cfg)
    broken = truncate(split_set["validation"][0].path)
    report = check_splits(split_set, cfg)
    assert [(split, path) for split, path, _ in report.unreadable] == [("validation", str(broken))]
    assert report.histogram["validation"]["unreadable"] == 1
    assert not report.has_leakage


@pytest.mark.shared_data
def test_lc25000_file_split_is_flagged(lc25000_root: Path) -> None:
    cfg = DataConfig(root=lc25000_root)
    grouped = check_splits(resolve_splits(cfg), cfg, decode_images=False)
    assert not grouped.has_leakage
    naive = resolve_splits(DataConfig(root=lc25000_root, layout="folders"))  # each file its own group
    report = check_splits(naive, cfg, decode_images=False)
    assert report.has_leakage and len(report.shared_data_groups) > 50
