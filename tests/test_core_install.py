"""A core `pip install raylung` (no extras) into a fresh virtualenv that already holds the user's
torch: torch is left alone, the smoke tune and `predict` run, and the features of missing extras
stop with one line naming the install, never a traceback."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from importlib import metadata
from pathlib import Path

import pytest
from conftest import REPO_ROOT, ray_env
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

pytestmark = [pytest.mark.slow, pytest.mark.install]

EXTRA_MODULES = ("onnx", "onnxruntime", "onnxscript", "pytorch_grad_cam", "openslide")


def _run(args: list[str], cwd: Path, env: dict[str, str], timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _ok(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, f"{proc.args}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def _installed_closure(name: str) -> list[metadata.Distribution]:
    """`name` and every distribution it needs on this platform (extras followed), as installed
    beside this test."""
    found: dict[str, metadata.Distribution] = {}
    seen: set[tuple[str, str]] = set()
    todo = [(name, "")]
    while todo:
        key, extra = todo.pop()
        key = canonicalize_name(key)
        if (key, extra) in seen:
            continue
        seen.add((key, extra))
        try:
            dist = found.get(key) or metadata.distribution(key)
        except metadata.PackageNotFoundError:
            continue  # an optional need this platform's markers leave out
        found[key] = dist
        for line in dist.requires or []:
            need = Requirement(line)
            if need.marker is None or need.marker.evaluate({"extra": extra}):
                todo += [(need.name, "")] + [(need.name, wanted) for wanted in need.extras]
    return list(found.values())


def _link_in(dists: list[metadata.Distribution], site_packages: Path) -> None:
    """Puts installed distributions into another venv's site-packages, file by file as their RECORD
    lists them: hard links where the disk allows (the CUDA build of torch is 5 GB), else copies.
    pip sees them exactly as if it had installed them there; removing one unlinks only its copy.
    A distribution the new venv already has (its own setuptools) keeps the venv's version."""
    present = {canonicalize_name(info.name.split("-")[0]) for info in site_packages.glob("*.dist-info")}
    for dist in dists:
        if canonicalize_name(dist.metadata["Name"]) in present:
            continue
        for entry in dist.files or []:
            if entry.parts[0] == "..":
                continue  # console scripts: they name the other venv's interpreter
            source, target = Path(dist.locate_file(entry)), site_packages / entry
            if not source.is_file() or target.exists():
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(source, target)
            except OSError:
                shutil.copy2(source, target)


@pytest.fixture(scope="module")
def core_venv(tmp_path_factory):
    """A fresh venv that already holds the user's torch (the tested one), then raylung's core
    install into it at the tested versions."""
    root = tmp_path_factory.mktemp("core-install")
    venv = root / "venv"
    env = ray_env()
    env.pop("RAY_ADDRESS", None)
    try:
        _ok(_run(["python3", "-m", "venv", str(venv)], root, env))
        site_packages = next((venv / "lib").glob("python3*/site-packages"))
        _link_in(_installed_closure("torch"), site_packages)
        torch_record = next(site_packages.glob("torch-*.dist-info/RECORD"))
        before = torch_record.stat().st_mtime_ns
        python = str(venv / "bin" / "python")
        probe = "import torch, importlib.metadata as m; print(m.version('torch'))"
        assert _ok(_run([python, "-c", probe], root, env)).strip() == metadata.version("torch")
        pip = [python, "-m", "pip", "install", "--quiet", "-c", str(REPO_ROOT / "constraints.txt")]
        _ok(_run([*pip, str(REPO_ROOT)], root, env))
        yield venv, root, env, torch_record, before
    finally:
        shutil.rmtree(venv, ignore_errors=True)  # a GB of raylung's own dependencies


def test_core_install_keeps_torch_and_leaves_extras_out(core_venv):
    venv, root, env, torch_record, before = core_venv
    assert torch_record.stat().st_mtime_ns == before, "installing raylung reinstalled torch"
    probe = f"import importlib.util as u; print([m for m in {EXTRA_MODULES!r} if u.find_spec(m)])"
    assert _ok(_run([str(venv / "bin" / "python"), "-c", probe], root, env)).strip() == "[]"


def test_core_install_tunes_predicts_and_names_missing_extras(core_venv):
    venv, root, env, _, _ = core_venv
    raylung = str(venv / "bin" / "raylung")
    work = root / "work"
    work.mkdir()
    tune = _run(
        [raylung, "tune", str(REPO_ROOT / "search_spaces" / "smoke.yaml"), "-n", "1",
         "--set", "train.epochs=1", "--set", f"experiment.storage={work / 'experiments'}",
         "--set", f"data.root={work / 'demo'}", "--set", "wandb.mode=offline"],
        work, env,
    )  # fmt: skip
    _ok(tune)
    best = json.loads(next((work / "experiments").glob("smoke-*/best.json")).read_text())
    manifest = json.loads((Path(best["export"]) / "manifest.json").read_text())
    assert manifest["formats"]["onnx"]["status"] == "skipped"
    assert "raylung[export]" in manifest["formats"]["onnx"]["reason"]
    assert manifest["formats"]["torch_export"]["status"] == "ok"

    images = sorted((work / "demo").rglob("*.png"))[:5]
    predict = _run(
        [raylung, "predict", best["export"], *map(str, images), "--out", str(work / "p.csv")], work, env
    )
    _ok(predict)
    assert len((work / "p.csv").read_text().splitlines()) == 1 + len(images)

    for args, extra in (
        (["export", best["checkpoint"], "--out", str(work / "onnx"), "--format", "onnx"], "export"),
        (
            ["predict", best["export"], str(images[0]), "--out", str(work / "o.csv"), "--runtime", "onnx"],
            "export",
        ),
        (["explain", best["export"], str(images[0]), "--out", str(work / "explain")], "explain"),
    ):
        proc = _run([raylung, *args], work, env)
        said = (proc.stdout + proc.stderr).strip()
        assert proc.returncode == 2, said
        assert "Traceback" not in said and len(said.splitlines()) == 1, said
        assert re.search(rf"pip install 'raylung\[{extra}\]'", said), said
