"""The install story: ranges in pyproject.toml, exact pins in constraints.txt, extras that match
what the code imports, and an environment that is exactly the one CI pins."""

from __future__ import annotations

import ast
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from raylung.extras import EXTRAS, MissingExtraError, install_hint, require_extra

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
CORE = [Requirement(r) for r in PYPROJECT["dependencies"]]
OPTIONAL = {name: [Requirement(r) for r in reqs] for name, reqs in PYPROJECT["optional-dependencies"].items()}
FEATURE_EXTRAS = ("export", "explain", "wsi")
# Declared but never imported by name, each for a stated reason.
NOT_IMPORTED = {
    "onnxscript": "torch.onnx.export(dynamo=True) imports it",
    "openslide-bin": "the OpenSlide C library that openslide-python loads",
}


def constraints() -> dict[str, Version]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not name==version"
            pins[canonicalize_name(name)] = Version(version)
    return pins


def imported_distributions(paths: list[Path]) -> set[str]:
    """Distributions whose modules raylung's source imports (inside functions too)."""
    modules: set[str] = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    owners = metadata.packages_distributions()
    found = set()
    for module in modules - set(sys.stdlib_module_names) - {"raylung"}:
        assert module in owners, f"raylung imports {module!r}, which no installed distribution provides"
        found |= {canonicalize_name(d) for d in owners[module]}
    return found


def test_every_declared_dependency_is_pinned_inside_its_range() -> None:
    pins = constraints()
    for req in [*CORE, *(r for name in FEATURE_EXTRAS for r in OPTIONAL[name])]:
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is declared but constraints.txt does not pin it"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"constraints.txt pins {req.name}=={pins[name]}, outside pyproject's {req.specifier}"
        )


def test_ranges_admit_other_torch_builds_and_pin_no_torchvision() -> None:
    """A user's own torch stays: any 2.x from 2.7 on is accepted, and torchvision is not asked for."""
    torch_req = next(r for r in CORE if r.name == "torch")
    for version in ("2.7.0", "2.8.0+cu128", "2.10.1", "2.14.1"):
        assert torch_req.specifier.contains(version), version
    assert not torch_req.specifier.contains("2.6.0")
    assert not any(r.name == "torchvision" for r in CORE)
    assert all("==" not in str(r.specifier) for r in CORE), "exact pins belong in constraints.txt"


def test_declared_dependencies_match_imports() -> None:
    """Core dependencies are what core modules import; each extra is what its feature imports."""
    imported = imported_distributions(sorted((ROOT / "raylung").rglob("*.py")))
    declared_core = {canonicalize_name(r.name) for r in CORE}
    declared_extras = {canonicalize_name(r.name) for n in FEATURE_EXTRAS for r in OPTIONAL[n]}
    undeclared = imported - declared_core - declared_extras
    assert not undeclared, f"imported but not declared: {sorted(undeclared)}"
    unused = (declared_core | declared_extras) - imported - set(NOT_IMPORTED)
    assert not unused, f"declared but never imported: {sorted(unused)}"


def test_extras_registry_matches_pyproject() -> None:
    owners = metadata.packages_distributions()
    for name in FEATURE_EXTRAS:
        dists = {canonicalize_name(r.name) for r in OPTIONAL[name]}
        for module in EXTRAS[name].modules:
            assert {canonicalize_name(d) for d in owners.get(module, [])} & dists, (name, module)
    assert {canonicalize_name(r.name) for r in OPTIONAL["all"]} == {"raylung"}
    assert set(OPTIONAL["all"][0].extras) == set(FEATURE_EXTRAS)


def test_missing_extra_is_one_line_naming_the_install() -> None:
    fake = "export"
    saved = EXTRAS[fake]
    EXTRAS[fake] = type(saved)(fake, ("raylung_no_such_module",), saved.gives)
    try:
        with pytest.raises(MissingExtraError) as info:
            require_extra(fake, "ONNX export")
    finally:
        EXTRAS[fake] = saved
    message = str(info.value)
    assert "\n" not in message and install_hint(fake) in message and "raylung_no_such_module" in message


@pytest.mark.skipif(
    not (ROOT / ".venv" / ".installed").is_file() or Path(sys.prefix).resolve() != (ROOT / ".venv").resolve(),
    reason="checks the environment `make` installs (.venv); this interpreter is another one",
)
def test_installed_environment_is_exactly_the_lock() -> None:
    """CI tests what it pins: every package of constraints.txt is installed at its pinned version."""
    wrong = {}
    for name, pinned in constraints().items():
        try:
            installed = Version(metadata.version(name))
        except metadata.PackageNotFoundError:
            wrong[name] = "not installed"
            continue
        if installed != pinned:
            wrong[name] = f"{installed} (pinned {pinned})"
    assert not wrong, f"the environment differs from constraints.txt: {wrong}"
