"""The package's structure says what the system does: layers that only point down, no cycles.

models -> config -> data -> artifacts -> training -> tuning -> workflows -> CLI, read from the
source with every import counted, those inside functions included (see import_graph.py).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from import_graph import LAYERS, PACKAGE, build, cycles

ROOT = PACKAGE.parent
MAX_LINES = 400


@pytest.fixture(scope="module")
def graph():
    return build()


def test_every_package_and_top_level_module_has_a_layer(graph):
    units = {graph.unit(module) for module in graph.modules}
    named = {unit for layer in LAYERS for unit in layer}
    assert units <= named, f"give these a layer in tests/import_graph.py: {sorted(units - named)}"


def test_no_import_points_up(graph):
    assert graph.upward() == []


def test_no_cycle_between_files_or_packages(graph):
    assert cycles(graph.edges) == []
    assert cycles(graph.unit_edges()) == []


def test_what_comes_after_training_needs_no_ray_training(graph):
    """Evaluate, predict, export and explain run on an export alone, on any machine."""
    for module, targets in graph.edges.items():
        if graph.unit(module) in ("artifacts", "explain"):
            assert not {graph.unit(t) for t in targets} & {"train", "tune", "workflows", "cluster"}, module
            source = graph.modules[module].read_text()
            assert not re.search(r"^\s*(import|from) ray\b", source, re.M), module


def test_the_checker_sees_imports_inside_functions_and_relative_ones(tmp_path):
    """The graph would be worthless if a lazy or relative import slipped past it."""
    pkg = tmp_path / "raylung"
    (pkg / "models").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "models" / "__init__.py").write_text("")
    (pkg / "models" / "net.py").write_text("def f():\n    from raylung.tune import tuner\n")
    (pkg / "models" / "other.py").write_text("from . import net\n")
    (pkg / "tune").mkdir()
    (pkg / "tune" / "__init__.py").write_text("")
    (pkg / "tune" / "tuner.py").write_text("from raylung.models.net import f\n")
    small = build(pkg)
    assert small.upward() == [("raylung.models.net", "raylung.tune.tuner")]
    assert "raylung.models.net" in small.edges["raylung.models.other"]
    assert cycles(small.edges) == [["raylung.models.net", "raylung.tune.tuner"]]


@pytest.mark.parametrize("folder", ["raylung", "benchmarks"])
def test_no_module_grows_past_a_few_hundred_lines(folder):
    long = {
        str(path.relative_to(ROOT)): n
        for path in sorted((ROOT / folder).rglob("*.py"))
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}, f"split these (over {MAX_LINES} lines): {long}"


def test_benchmarks_call_raylung_rather_than_patch_it():
    for path in sorted((ROOT / "benchmarks").rglob("*.py")):
        source = path.read_text()
        assert "setattr(" not in source and "monkeypatch" not in source, path.name


def test_the_readme_folder_map_lists_every_package():
    readme = (ROOT / "README.md").read_text()
    packages = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file())
    missing = [name for name in packages if f"{name}/" not in readme]
    assert missing == [], f"README's layout section lacks: {missing}"


def test_import_graph_script_prints_the_figures(capsys):
    import import_graph

    import_graph.main([])
    out = capsys.readouterr().out
    assert "upward_edges" in out and "package_cycles" in out
    assert Path(import_graph.__file__).parent == ROOT / "tests"
