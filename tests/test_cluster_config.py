"""cluster.yaml, checked by ``raylung.cluster.check`` and ``raylung cluster check``.

The package runs what ``ray up`` runs before it first talks to AWS (``prepare_config``, a file
read of the installed Ray's aws/defaults.yaml; ``validate_config``: ray-schema.json and the
launcher's cross-field checks), then raylung's invariants: the head advertises the trial-driver
resource, every worker type has GPUs and scales from zero, setup installs the torch, torchvision
and Ray of this environment, the package and search spaces are mounted where setup installs
from, and head and workers share token auth. Here: the committed file passes, a broken edit of
each kind fails with one line naming the problem and its key, and the CLI reports the same with
its exit status. What is true of this repository only (setup installs pyproject's exact pins, a
single- and a multi-GPU worker type) is checked here, not in the package.
"""

from __future__ import annotations

import copy
import os
import re
import socket
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from typer.testing import CliRunner

from raylung.cli.main import app
from raylung.cluster.check import (
    PINNED,
    TORCH_INDEX,
    ClusterConfigError,
    ClusterReport,
    check_cluster_config,
    check_config,
    installed_versions,
    reachable_gpus,
    requirements_in,
    worker_types,
)
from raylung.cluster.connect import TRIAL_DRIVER_RESOURCE
from raylung.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_YAML = ROOT / "cluster.yaml"
SECRET = "s3cr3t-d0-not-print"
HERE = installed_versions()
# Where setup_commands installs torch, as Ray's launcher numbers it.
TORCH_LINE = next(
    i for i, c in enumerate(yaml.safe_load(CLUSTER_YAML.read_text())["setup_commands"]) if "torch==" in c
)
TORCH_AT = f"setup_commands[{TORCH_LINE}]"
runner = CliRunner()


def ours_space() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "search_spaces" / "ours.yaml").read_text())


def raylung_cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """The installed command, as a user runs it (exit status and stderr included)."""
    return subprocess.run(
        [sys.executable, "-m", "raylung", *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def repo_copy(tmp_path: Path, raw: dict[str, Any]) -> Path:
    """``raw`` as cluster.yaml in tmp_path, beside links to what it mounts (as in the repository)."""
    for name in ("pyproject.toml", "raylung", "search_spaces"):
        (tmp_path / name).symlink_to(ROOT / name)
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def keys(problems: list[Any]) -> list[str]:
    return [p.key for p in problems]


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def raw_config() -> dict[str, Any]:
    return yaml.safe_load(CLUSTER_YAML.read_text())


@pytest.fixture
def raw(raw_config: dict[str, Any]) -> dict[str, Any]:
    """A fresh copy to break."""
    return copy.deepcopy(raw_config)


@pytest.fixture(scope="module")
def report() -> ClusterReport:
    return check_cluster_config(CLUSTER_YAML)


@pytest.fixture(scope="module")
def prepared(report: ClusterReport) -> dict[str, Any]:
    return report.config


# --- the file as committed -----------------------------------------------------------------


def test_cluster_yaml_passes_offline(raw_config, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("checking cluster.yaml tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    report = check_cluster_config(CLUSTER_YAML)
    assert report.ok and report.errors == [], report.errors
    report.raise_for_errors()  # no-op when fine
    # No warning either, but for a local auth token missing on this machine (`ray up` copies it).
    assert [w for w in report.warnings if "auth_token" not in w.key] == [], report.warnings
    config = report.config
    assert config["provider"]["type"] == "aws"
    # Every command list is ours, not one of Ray's AWS defaults (a nightly Ray wheel).
    for key in ("setup_commands", "head_start_ray_commands", "worker_start_ray_commands"):
        assert config[key] == raw_config[key]
    assert config["head_setup_commands"] == raw_config["setup_commands"] + raw_config["head_setup_commands"]


def test_head_runs_trial_drivers_and_no_training(prepared):
    head = prepared["available_node_types"][prepared["head_node_type"]]
    assert head["resources"][TRIAL_DRIVER_RESOURCE] >= ours_space()["search"]["max_concurrent_trials"]
    assert head["resources"]["CPU"] == 0 and "GPU" not in head["resources"]
    assert head["max_workers"] == 0  # filled by prepare_config: there is one head


def test_gpu_workers_scale_from_zero_and_fit_ours(prepared):
    space = ours_space()
    workers = worker_types(prepared)
    for name, node in workers.items():
        assert node["min_workers"] == 0, name
        assert node["resources"]["GPU"] >= space["resources"]["gpus_per_worker"], name
        assert node["resources"]["CPU"] >= space["resources"]["cpus_per_worker"], name
    need = space["search"]["max_concurrent_trials"] * space["resources"]["gpus_per_worker"]
    assert reachable_gpus(prepared) >= need
    # This repository's shape: single-GPU nodes for single-GPU trials, multi-GPU ones for DDP.
    gpus = {node["resources"]["GPU"] for node in workers.values()}
    assert 1 in gpus and max(gpus) > 1, gpus


def test_setup_installs_exactly_pyprojects_pins(prepared):
    pyproject = ROOT / "pyproject.toml"
    if not pyproject.is_file():
        pytest.skip("no pyproject.toml (installed package)")
    deps = {
        r.name: r for r in map(Requirement, tomllib.loads(pyproject.read_text())["project"]["dependencies"])
    }
    for role in ("head_setup_commands", "worker_setup_commands"):
        installed: dict[str, Requirement] = {}
        for command in prepared[role]:
            installed.update(requirements_in(command))
            if "torch" in requirements_in(command):
                assert TORCH_INDEX.search(command), command
        for name in PINNED:
            got, pin = installed[name], deps[name]
            assert (got.specifier, got.extras) == (pin.specifier, pin.extras), f"{role}: {got} vs {pin}"


def test_pins_match_this_environment(report):
    assert set(report.pins) == set(PINNED)
    for name, pin in report.pins.items():
        assert Requirement(pin).specifier.contains(HERE[name], prereleases=True), (pin, HERE[name])
        assert pin in report.summary()


def test_reachable_gpus_fills_the_biggest_nodes_first_within_max_workers():
    def node(gpus: int, most: int) -> dict[str, Any]:
        return {"resources": {"CPU": 8, "GPU": gpus}, "min_workers": 0, "max_workers": most}

    types = {"head": {"resources": {}}, "one": node(1, 8), "four": node(4, 2)}
    config = {"max_workers": 3, "head_node_type": "head", "available_node_types": types}
    assert reachable_gpus(config) == 2 * 4 + 1 * 1
    assert reachable_gpus({**config, "max_workers": 20}) == 2 * 4 + 8 * 1


def test_another_installed_version_fails_naming_both():
    other = {"torch": "2.13.0", "torchvision": "0.29.1", "ray": "2.59.1"}
    report = check_cluster_config(CLUSTER_YAML, installed=other)
    lines = list(map(str, report.errors))
    assert len(lines) == 2, lines
    torch = r"setup_commands\[\d+\]: installs torch==[\d.]+, but this environment has torch 2\.13\.0: .*"
    ray = r"setup_commands\[\d+\]: installs ray\[.*\]==\S+, but this environment has ray 2\.59\.1: .*"
    assert re.fullmatch(torch, lines[0]) and re.fullmatch(ray, lines[1]), lines
    with pytest.raises(ClusterConfigError, match=r"(?s)2 problem.*torch 2\.13\.0.*ray 2\.59\.1") as caught:
        report.raise_for_errors()
    assert isinstance(caught.value, ConfigError)


def test_a_package_missing_here_warns_instead():
    report = check_cluster_config(
        CLUSTER_YAML, installed={"torch": "2.14.1", "torchvision": None, "ray": "2.60.0"}
    )
    assert report.ok
    assert any("torchvision is not installed here" in str(w) for w in report.warnings)


# --- broken edits are caught, each with a line that names it --------------------------------


def _set(*path: str, value: Any) -> Callable[[dict], None]:
    def mutate(config: dict) -> None:
        *parents, leaf = path
        for key in parents:
            config = config[key]
        config[leaf] = value

    return mutate


def _drop(*path: str) -> Callable[[dict], None]:
    def mutate(config: dict) -> None:
        *parents, leaf = path
        for key in parents:
            config = config[key]
        del config[leaf]

    return mutate


def _sub(key: str, pattern: str, replacement: str) -> Callable[[dict], None]:
    def mutate(config: dict) -> None:
        config[key] = [re.sub(pattern, replacement, c) for c in config[key]]

    return mutate


HEAD = ("available_node_types", "ray.head.cpu")
GPU1, GPU4 = ("available_node_types", "ray.worker.gpu1"), ("available_node_types", "ray.worker.gpu4")

BROKEN_EDITS = [  # (edit, the key of the one error, its message)
    # Ray's schema, with the path of the field it points at.
    pytest.param(
        _set("max_worker", value=8),
        "(top level)",
        r"Additional properties are not allowed \('max_worker' was unexpected\) \(Ray's schema\)",
        id="unknown-top-level-key",
    ),
    pytest.param(
        _set("max_workers", value="8"),
        "max_workers",
        r"'8' is not of type 'integer'",
        id="max_workers-not-int",
    ),
    pytest.param(
        _set(*GPU1, "resources", "GPU", value=0.5),
        "available_node_types.ray.worker.gpu1.resources.GPU",
        r"0.5 is not of type 'integer'",
        id="fractional-gpu",
    ),
    # The launcher's cross-field checks and provider lookup.
    pytest.param(
        _set("head_node_type", value="ray.head.default"),
        "head_node_type",
        r"`head_node_type` must be one of `available_node_types`",
        id="head-type-missing",
    ),
    pytest.param(_drop("provider"), "provider", r"missing; Ray's launcher needs it", id="no-provider"),
    pytest.param(
        _set("provider", "type", value="nope"),
        "provider.type",
        r"Unsupported node provider: nope",
        id="provider",
    ),
    # raylung's invariants.
    pytest.param(
        _drop(*HEAD, "resources", TRIAL_DRIVER_RESOURCE),
        f"available_node_types.ray.head.cpu.resources.{TRIAL_DRIVER_RESOURCE}",
        rf"head node type 'ray.head.cpu' advertises 0 '{TRIAL_DRIVER_RESOURCE}' units.* needs >= 8 "
        r"\(search_spaces/ours.yaml search.max_concurrent_trials\)",
        id="driver-resource-removed",
    ),
    pytest.param(
        _set(*HEAD, "resources", "CPU", value=8),
        "available_node_types.ray.head.cpu.resources",
        r"the head must advertise CPU: 0 and no GPU",
        id="head-advertises-cpus",
    ),
    pytest.param(
        _set(*GPU4, "resources", TRIAL_DRIVER_RESOURCE, value=4),
        f"available_node_types.ray.worker.gpu4.resources.{TRIAL_DRIVER_RESOURCE}",
        r"trial drivers belong on the head",
        id="driver-resource-on-a-worker",
    ),
    pytest.param(
        _set(*GPU1, "min_workers", value=1),
        "available_node_types.ray.worker.gpu1.min_workers",
        r"worker type 'ray.worker.gpu1' has min_workers 1; GPU workers must scale from 0",
        id="worker-min_workers-not-0",
    ),
    pytest.param(
        _set(*GPU4, "resources", value={"CPU": 48}),
        "available_node_types.ray.worker.gpu4.resources.GPU",
        r"worker type 'ray.worker.gpu4' has no GPU",
        id="worker-without-gpu",
    ),
    pytest.param(
        lambda c: [_set(*t, "resources", "CPU", value=4)(c) for t in (GPU1, GPU4)],
        "available_node_types",
        r"no worker type fits a training worker \(7 CPUs \+ 1 GPU\) of search_spaces/ablation.yaml, "
        r"search_spaces/baselines.yaml, search_spaces/ours.yaml$",
        id="no-worker-fits-a-trial",
    ),
    pytest.param(
        _sub("setup_commands", r'"torch==[^"]+"', '"torch==0.0.1"'),
        TORCH_AT,
        rf"installs torch==0\.0\.1, but this environment has torch {re.escape(HERE['torch'])}",
        id="torch-pin-mismatch",
    ),
    pytest.param(
        _sub("setup_commands", r" --index-url \S+", ""),
        TORCH_AT,
        r"installs torch without --index-url https://download.pytorch.org/whl/cu",
        id="torch-from-pypi",
    ),
    pytest.param(
        _sub("setup_commands", r' "ray\[[^"]+"', ""),
        "setup_commands",
        rf"never installs a pinned ray \(this environment has ray=={re.escape(HERE['ray'])}\)",
        id="ray-unpinned",
    ),
    pytest.param(
        _drop("file_mounts", "~/raylung/search_spaces"),
        "file_mounts",
        r"search_spaces/ is not in file_mounts",
        id="search-spaces-not-mounted",
    ),
    pytest.param(
        _set("file_mounts", "~/raylung/raylung", value="./raylung/models"),
        "file_mounts",
        r"pyproject.toml and raylung/ must be mounted side by side",
        id="package-mounted-elsewhere",
    ),
    pytest.param(
        _set("file_mounts", "~/raylung/notes", value="./notes"),
        "file_mounts.~/raylung/notes",
        r"\./notes does not exist \(relative to /",
        id="mount-source-missing",
    ),
    pytest.param(
        _sub("setup_commands", r"install -q ~/raylung ", "install -q "),
        "setup_commands",
        r"never pip-installs ~/raylung, where the package is mounted",
        id="package-not-installed",
    ),
    pytest.param(
        _sub("worker_start_ray_commands", "RAY_AUTH_MODE=token ", ""),
        "worker_start_ray_commands",
        r"`ray start` must run with RAY_AUTH_MODE=token on every node",
        id="worker-without-token-auth",
    ),
    pytest.param(
        _drop("file_mounts", "~/.ray/auth_token"),
        "file_mounts",
        r"must carry ~/.ray/auth_token",
        id="token-not-mounted",
    ),
]


@pytest.mark.parametrize(("mutate", "key", "message"), BROKEN_EDITS)
def test_broken_edit_fails_with_one_line_naming_it(raw, mutate, key, message):
    mutate(raw)
    report = check_config(raw, ROOT)
    assert not report.ok
    assert len(report.errors) == 1, report.errors
    assert report.errors[0].key == key
    assert re.search(message, report.errors[0].message), report.errors[0]
    assert report.summary() == "cluster.yaml: 1 problem(s)"


def test_a_missing_local_auth_token_warns(raw, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ray/auth_token here
    report = check_config(raw, ROOT)
    assert report.ok and list(map(str, report.warnings)) == [
        "file_mounts.~/.ray/auth_token: ~/.ray/auth_token does not exist on this machine "
        "(make it: ray get-auth-token --generate)"
    ]


def test_smaller_cluster_warns_that_trials_queue(raw):
    raw["max_workers"] = 1  # one node: at most 4 GPUs for ours.yaml's 8 concurrent single-GPU trials
    report = check_config(raw, ROOT)
    assert report.ok
    assert "max_workers: search_spaces/ours.yaml runs 8 GPUs at once, the cluster has 4" in map(
        str, report.warnings
    )


def test_secrets_are_never_echoed(raw, tmp_path):
    raw["auth"]["ssh_private_key"] = {"token": SECRET}  # a schema error on a secret-bearing value
    report = check_config(raw, ROOT)
    assert keys(report.errors) == ["auth.ssh_private_key"] and SECRET not in str(report.errors)

    raw = yaml.safe_load(CLUSTER_YAML.read_text())
    raw["setup_commands"].insert(0, f"export WANDB_API_KEY={SECRET}")  # shifts every index by one
    _sub("setup_commands", r'"torch==[^"]+"', '"torch==0.0.1"')(raw)
    raw["provider"]["api_token"] = SECRET  # provider settings are free-form for Ray's schema
    result = raylung_cli("cluster", "check", str(repo_copy(tmp_path, raw)))
    shifted = f"setup_commands[{TORCH_LINE + 1}]"
    assert result.returncode == 1 and f"  error: {shifted}: installs torch==0.0.1" in result.stdout
    assert SECRET not in result.stdout + result.stderr


def test_requirements_in_reads_quoted_pins_and_skips_paths_flags_and_unpinned():
    command = '~/venv/bin/pip install -q ~/raylung "ray[train]==2.60.*" torch --index-url https://x/cu130'
    assert {name: str(req) for name, req in requirements_in(command).items()} == {"ray": "ray[train]==2.60.*"}
    # A command the shell parser cannot split (an unbalanced quote) is read word by word.
    assert set(requirements_in("pip install ray==2.60.* && echo \"it's")) == {"ray"}


# --- unreadable files ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (None, r"cluster config /.*/cluster\.yaml not found"),
        (
            f"auth: {{ssh_user: ubuntu, token: {SECRET}\nmax_workers: [",
            r"/.*/cluster\.yaml:2:12: not valid YAML: .*",
        ),
        ("- just\n- a list\n", r"/.*/cluster\.yaml: expected a mapping of cluster settings, got list"),
    ],
    ids=["missing", "invalid-yaml", "not-a-mapping"],
)
def test_unreadable_file_is_one_clear_error(tmp_path, text, message):
    path = tmp_path / "cluster.yaml"
    if text is not None:
        path.write_text(text)
    with pytest.raises(ConfigError, match=message) as caught:
        check_cluster_config(path)
    assert SECRET not in str(caught.value)
    result = raylung_cli("cluster", "check", str(path))
    assert result.returncode == 2 and result.stdout == ""
    assert re.fullmatch(rf"error: {message}\n", result.stderr), result.stderr


# --- the command ---------------------------------------------------------------------------


def test_cli_accepts_the_repositorys_cluster_yaml_by_default(monkeypatch):
    monkeypatch.chdir(ROOT)
    result = runner.invoke(app, ["cluster", "check"])
    assert result.exit_code == 0, result.output
    first, *rest = result.output.splitlines()
    assert first.startswith("cluster.yaml: OK (3 node types: head ray.head.cpu with 8 trial-driver slots")
    assert all("auth_token" in line for line in rest), rest  # warnings only, and only if it is missing


def test_cli_fails_on_a_broken_copy_naming_the_problem(raw, tmp_path):
    raw["available_node_types"]["ray.worker.gpu1"]["min_workers"] = 2
    path = repo_copy(tmp_path, raw)
    result = raylung_cli("cluster", "check", str(path), cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"{path}: 1 problem(s)"
    errors = [line for line in lines if line.startswith("  error: ")]
    assert errors == [
        "  error: available_node_types.ray.worker.gpu1.min_workers: worker type 'ray.worker.gpu1' has "
        "min_workers 2; GPU workers must scale from 0, or idle ones bill around the clock"
    ]
    assert result.stderr == ""  # Ray's own chatter (the Docker file-mount note) is kept out


def test_cli_reads_mounts_relative_to_the_file_not_the_working_directory(raw, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # which has raylung/, pyproject.toml and search_spaces/
    path = tmp_path / "elsewhere" / "cluster.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(raw))  # no pyproject.toml, raylung/ or search_spaces/ beside it
    result = runner.invoke(app, ["cluster", "check", os.fspath(path)])
    assert result.exit_code == 1
    assert "  error: file_mounts.~/raylung/raylung: ./raylung does not exist" in result.output
