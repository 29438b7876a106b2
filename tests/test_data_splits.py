"""Grouped, stratified, seeded splits; splits files; the real LC25000 dev set."""

from __future__ import annotations

import csv
import logging
from collections import Counter
from pathlib import Path

import pytest
from data_factory import make_folder_tree, make_manifest_tree, make_paper_tree

from raylung.config import DataConfig, SplitConfig
from raylung.data import SplitSet, discover, grouped_split, resolve_splits
from raylung.errors import DataError

REGEX = r"^(\w+_g\d+)_c\d+"


def _groups(split_set: SplitSet) -> dict[str, set[str]]:
    return {name: {s.group for s in samples} for name, samples in split_set.items()}


def test_grouped_split_keeps_groups_together_and_stratifies(tmp_path: Path) -> None:
    root = make_folder_tree(tmp_path, {"lung_aca": 10, "lung_scc": 10, "lung_n": 20}, copies=2)
    label_map = {"lung_aca": "cancer", "lung_scc": "cancer", "lung_n": "non_cancer"}
    cfg = DataConfig(root=root, group_regex=REGEX, label_map=label_map)
    split_set = resolve_splits(cfg)
    groups = _groups(split_set)
    assert not groups["train"] & groups["validation"]
    assert not groups["train"] & groups["test"]
    assert not groups["validation"] & groups["test"]
    counts = split_set.counts()
    assert sum(row["total"] for row in counts.values()) == 80
    assert counts["train"]["cancer"] == 32 and counts["train"]["non_cancer"] == 32  # 80 % of 40 each
    for row in counts.values():
        assert row["cancer"] > 0 and row["non_cancer"] > 0


def test_split_is_seeded(tmp_path: Path) -> None:
    root = make_folder_tree(tmp_path, {"cancer": 15, "non_cancer": 15}, copies=1)
    samples = discover(DataConfig(root=root))
    first = grouped_split(samples, SplitConfig(seed=3))
    again = grouped_split(samples, SplitConfig(seed=3))
    other = grouped_split(samples, SplitConfig(seed=4))
    assert first.to_csv() == again.to_csv()
    assert first.to_csv() != other.to_csv()


def test_too_few_groups_is_a_clear_error(tmp_path: Path) -> None:
    root = make_folder_tree(tmp_path, {"cancer": 2, "non_cancer": 5}, copies=3)
    with pytest.raises(DataError, match="cancer has 2 group"):
        resolve_splits(DataConfig(root=root, group_regex=REGEX))


def test_no_group_key_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = make_folder_tree(tmp_path, {"cancer": 4, "non_cancer": 4}, copies=1)
    with caplog.at_level(logging.WARNING):
        resolve_splits(DataConfig(root=root))
    assert "each file is its own group" in caplog.text


def test_given_splits_are_used(tmp_path: Path) -> None:
    root = make_paper_tree(tmp_path, per_class=2)
    split_set = resolve_splits(DataConfig(root=root))
    assert {name: len(v) for name, v in split_set.items()} == {"train": 8, "validation": 8, "test": 8}
    assert all(Path(s.path).parent.parent.name.lower() == "train" for s in split_set["train"])


def test_manifest_split_column_is_used(tmp_path: Path) -> None:
    root = make_manifest_tree(tmp_path, groups_per_label=4, copies=2, split=True)
    split_set = resolve_splits(DataConfig(root=root))
    assert {name: len(v) for name, v in split_set.items()} == {"train": 8, "validation": 4, "test": 4}


@pytest.mark.parametrize("uri", [False, True])
def test_splits_file_roundtrip_and_verbatim_use(tmp_path: Path, uri: bool) -> None:
    root = make_folder_tree(tmp_path / "d", {"cancer": 6, "non_cancer": 6}, copies=1)
    target = tmp_path / "exp" / "splits.csv"
    location = target.as_uri() if uri else str(target)
    made = resolve_splits(DataConfig(root=root, split=SplitConfig(seed=1)), out=location)
    assert target.is_file()
    header = next(csv.reader(target.open()))
    assert header == ["path", "label", "subclass", "group", "split"]
    loaded = SplitSet.load(location)
    assert loaded.to_csv() == made.to_csv()
    # verbatim: a different seed in the config does not change a fixed split
    reused = resolve_splits(DataConfig(root=root, split=SplitConfig(seed=99), splits_file=location))
    assert reused.to_csv() == made.to_csv()


def test_splits_file_with_vanished_files_is_rejected(tmp_path: Path) -> None:
    root = make_folder_tree(tmp_path / "d", {"cancer": 6, "non_cancer": 6}, copies=1)
    target = tmp_path / "splits.csv"
    made = resolve_splits(DataConfig(root=root), out=target)
    gone = made["test"][0].path
    Path(gone).unlink()
    with pytest.raises(DataError, match="no longer exist") as info:
        resolve_splits(DataConfig(root=root, splits_file=str(target)))
    assert gone in str(info.value)


@pytest.mark.shared_data
def test_lc25000_grouped_split_shares_no_group(lc25000_root: Path, tmp_path: Path) -> None:
    split_set = resolve_splits(DataConfig(root=lc25000_root), out=tmp_path / "splits.csv")
    groups = _groups(split_set)
    assert not groups["train"] & groups["validation"]
    assert not groups["train"] & groups["test"]
    assert not groups["validation"] & groups["test"]
    with (lc25000_root / "manifest.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    expected = Counter(row["binary_label"] for row in rows)
    got = Counter(s.label_name for s in split_set.all_samples())
    assert got == expected == Counter({"cancer": 500, "non_cancer": 500})
    manifest_group = {str((lc25000_root / row["path"]).resolve()): row["group_id"] for row in rows}
    assert all(manifest_group[s.path] == s.group for s in split_set.all_samples())
    for row in split_set.counts().values():
        assert row["cancer"] >= 40 and row["non_cancer"] >= 40
