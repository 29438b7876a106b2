"""A core `pip install raylung` (no extras) into a fresh virtualenv that already holds the user's
torch: torch is left alone, the smoke tune and `predict` run, and the features of missing extras
stop with one line naming the install, never a traceback."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import REPO_ROOT, ray_env

pytestmark = [pytest.mark.slow, pytest.mark.install]

EXTRA_MODULES = ("onnx", "onnxruntime", "onnxscript", "pytorch_grad_cam", "openslide")


def _run(args: list[str], cwd: Path, env: dict[str, str], timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _ok(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, f"{proc.args}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def core_venv(tmp_path_factory):
    """A fresh venv: the user's torch first, then raylung's core install, at the tested versions."""
    root = tmp_path_factory.mktemp("core-install")
    venv = root / "venv"
    env = ray_env()
    env.pop("RAY_ADDRESS", None)
    _ok(_run(["python3", "-m", "venv", str(venv)], root, env))
    pip = [
        str(venv / "bin" / "python"),
        "-m",
        "pip",
        "install",
        "--quiet",
        "-c",
        str(REPO_ROOT / "constraints.txt"),
    ]
    _ok(_run([*pip, "torch"], root, env))
    torch_record = next((venv / "lib").glob("python3*/site-packages/torch-*.dist-info/RECORD"))
    before = torch_record.stat().st_mtime_ns
    _ok(_run([*pip, str(REPO_ROOT)], root, env))
    yield venv, root, env, torch_record, before
    shutil.rmtree(venv, ignore_errors=True)  # several GB


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
