"""``raylung data split|check|preview|demo`` through typer's CliRunner."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from data_factory import make_folder_tree, make_manifest_tree
from typer.testing import CliRunner

from raylung.cli.data_cmd import build_config, parse_label_map, parse_size
from raylung.cli.main import app
from raylung.errors import ConfigError

runner = CliRunner()
CHECK = ("data", "check", "--root")


def test_demo_split_check_preview_roundtrip(tmp_path: Path) -> None:
    root = tmp_path / "demo"
    result = runner.invoke(app, ["data", "demo", str(root), "--per-subclass", "3", "--size", "40x30"])
    assert result.exit_code == 0, result.output
    assert (root / "SYNTHETIC_DEMO_DATA.txt").is_file()

    splits = tmp_path / "splits.csv"
    result = runner.invoke(app, ["data", "split", "--root", str(root), "--out", str(splits)])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(splits.open()))
    assert len(rows) == 4 * (3 + 2 + 2) and {r["split"] for r in rows} == {"train", "validation", "test"}

    result = runner.invoke(app, ["data", "check", "--root", str(root), "--splits-file", str(splits)])
    assert result.exit_code == 0, result.output
    assert "synthetic demo data" in result.output and "no leakage found" in result.output

    png = tmp_path / "preview.png"
    args = ["data", "preview", "--root", str(root), "--out", str(png), "--rows", "2", "--columns", "3",
            "--policy", "custom", "--strengths", "blur=1,hflip=0.5"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_check_exits_1_on_shared_groups(tmp_path: Path) -> None:
    root = make_manifest_tree(tmp_path / "d", groups_per_label=5, copies=3)
    leaky = tmp_path / "leaky.csv"
    # a split made without the manifest's groups: file by file
    args = ["data", "split", "--root", str(root), "--manifest", str(root / "manifest.csv"),
            "--group-regex", r"^(.*)\.png$", "--out", str(leaky)]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, [*CHECK, str(root), "--splits-file", str(leaky), "--no-decode"])
    assert result.exit_code == 1, result.output
    assert "LEAKAGE" in result.output

    clean = tmp_path / "clean.csv"
    assert runner.invoke(app, ["data", "split", "--root", str(root), "--out", str(clean)]).exit_code == 0
    result = runner.invoke(app, [*CHECK, str(root), "--splits-file", str(clean), "--no-decode"])
    assert result.exit_code == 0, result.output


def test_yaml_config_and_label_map_option(tmp_path: Path) -> None:
    root = make_folder_tree(tmp_path / "d", {"lung_aca": 3, "lung_scc": 3, "lung_n": 6}, copies=2)
    config = tmp_path / "raylung.yaml"
    config.write_text(
        "experiment: {name: t}\n"
        f"data:\n  root: {root}\n  group_regex: '^(\\w+_g\\d+)_c\\d+'\n  split: {{seed: 3}}\n"
    )
    out = tmp_path / "s.csv"
    args = ["data", "split", "--config", str(config), "--label-map",
            "lung_aca=cancer,lung_scc=cancer,lung_n=non-cancer", "--out", str(out)]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out.open()))
    assert {r["subclass"] for r in rows} == {"lung_aca", "lung_scc", "lung_n"}
    sides: dict[str, set[str]] = {}
    for row in rows:
        sides.setdefault(row["group"], set()).add(row["split"])
    assert all(len(v) == 1 for v in sides.values()) and len(sides) == 12


def test_option_parsing_errors_are_config_errors(tmp_path: Path) -> None:
    assert parse_label_map("a=cancer, b = Non-Cancer") == {"a": "cancer", "b": "non_cancer"}
    assert parse_size("160x120") == (160, 120)
    for bad in ("a", "a=tumour", "a=1"):
        with pytest.raises(ConfigError):
            parse_label_map(bad)
    with pytest.raises(ConfigError, match="WIDTHxHEIGHT"):
        parse_size("160")
    with pytest.raises(ConfigError, match="image_size"):
        build_config(None, image_size=(8, 8))
    (tmp_path / "bad.yaml").write_text("data: [1, 2]\n")
    with pytest.raises(ConfigError, match="data: section"):
        build_config(tmp_path / "bad.yaml")
