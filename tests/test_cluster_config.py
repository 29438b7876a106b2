"""cluster.yaml and cluster.onprem.yaml, checked by ``raylung.cluster.check`` and ``raylung cluster check``.

The package runs what ``ray up`` runs before it first talks to a machine (``prepare_config``, a
file read of the installed Ray's provider defaults; ``validate_config``: ray-schema.json and the
launcher's cross-field checks), then raylung's invariants: the head advertises the trial-driver
resource (in its node type on AWS, in its ``ray start`` for Ray's ``local`` provider), every AWS
worker type has GPUs and scales from zero, every ``pip install`` uses the mounted constraints.txt
whose torch, torchvision and Ray are this environment's, torch comes from the CUDA index before
the package, the package and search spaces are mounted where setup installs from, head and
workers share token auth, the W&B key reaches the nodes as a netrc file W&B reads there, and no
command carries a W&B key. Here: both committed files pass, a broken edit of each kind fails with
one line naming the problem and its key, and the CLI reports the same with its exit status. What
is true of this repository only (the lock lies inside pyproject's ranges; a single- and a
multi-GPU worker type on AWS) is checked here, not in the package.
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
    start_options,
    worker_types,
)
from raylung.cluster.check_setup import constraint_files, packages_in, pip_installs, read_constraints
from raylung.cluster.connect import TRIAL_DRIVER_RESOURCE
from raylung.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_YAML = ROOT / "cluster.yaml"
ONPREM_YAML = ROOT / "cluster.onprem.yaml"
FILES = {"aws": CLUSTER_YAML, "onprem": ONPREM_YAML}
LOCK = ROOT / "constraints.txt"
LOCK_AT = "file_mounts.~/raylung/constraints.txt"
SECRET = "s3cr3t-d0-not-print"
HERE = installed_versions()
# Warnings a committed file may give: local files `ray up` copies that this machine may lack.
MISSING_HERE = ("auth_token", "wandb.netrc")
runner = CliRunner()

pytestmark = pytest.mark.skipif(not LOCK.is_file(), reason="no constraints.txt (installed package)")


def torch_at(raw: dict[str, Any]) -> str:
    """Where setup_commands installs torch, as Ray's launcher numbers it."""
    return f"setup_commands[{next(i for i, c in enumerate(raw['setup_commands']) if 'torchvision' in c)}]"


def package_at(raw: dict[str, Any]) -> str:
    return f"setup_commands[{next(i for i, c in enumerate(raw['setup_commands']) if 'raylung[all]' in c)}]"


def ours_space() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "search_spaces" / "ours.yaml").read_text())


def raylung_cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """The installed command, as a user runs it (exit status and stderr included)."""
    return subprocess.run(
        [sys.executable, "-m", "raylung", *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def repo_copy(
    tmp_path: Path, raw: dict[str, Any], lock: str | None = None, name: str = "cluster.yaml"
) -> Path:
    """``raw`` as a config in tmp_path, beside links to what it mounts (as in the repository);
    ``lock`` replaces constraints.txt."""
    for entry in ("pyproject.toml", "raylung", "search_spaces", "constraints.txt"):
        if entry == "constraints.txt" and lock is not None:
            (tmp_path / entry).write_text(lock)
        else:
            (tmp_path / entry).symlink_to(ROOT / entry)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def keys(problems: list[Any]) -> list[str]:
    return [p.key for p in problems]


def not_missing_here(warnings: list[Any]) -> list[Any]:
    return [w for w in warnings if not any(name in w.key for name in MISSING_HERE)]


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture(params=list(FILES), scope="module")
def kind(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def raw_config(kind) -> dict[str, Any]:
    return yaml.safe_load(FILES[kind].read_text())


@pytest.fixture
def raw(raw_config: dict[str, Any]) -> dict[str, Any]:
    """A fresh copy to break."""
    return copy.deepcopy(raw_config)


@pytest.fixture(scope="module")
def aws_raw() -> dict[str, Any]:
    return yaml.safe_load(CLUSTER_YAML.read_text())


@pytest.fixture(scope="module")
def report() -> ClusterReport:
    return check_cluster_config(CLUSTER_YAML)


@pytest.fixture(scope="module")
def prepared(report: ClusterReport) -> dict[str, Any]:
    return report.config


# --- the files as committed ----------------------------------------------------------------


def test_both_configs_pass_offline(kind, raw_config, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("checking the cluster config tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    report = check_cluster_config(FILES[kind])
    assert report.ok and report.errors == [], report.errors
    report.raise_for_errors()  # no-op when fine
    # No warning either, but for local files (token, W&B netrc) missing on this machine.
    assert not_missing_here(report.warnings) == [], report.warnings
    config = report.config
    assert config["provider"]["type"] == {"aws": "aws", "onprem": "local"}[kind]
    # Every command list is ours, not one of Ray's defaults (on AWS: a nightly Ray wheel).
    for key in ("setup_commands", "head_start_ray_commands", "worker_start_ray_commands"):
        assert config[key] == raw_config[key]
    assert config["head_setup_commands"] == raw_config["setup_commands"] + raw_config["head_setup_commands"]


def test_head_runs_trial_drivers_and_no_training(prepared):
    head = prepared["available_node_types"][prepared["head_node_type"]]
    assert head["resources"][TRIAL_DRIVER_RESOURCE] >= ours_space()["search"]["max_concurrent_trials"]
    assert head["resources"]["CPU"] == 0 and "GPU" not in head["resources"]
    assert head["max_workers"] == 0  # filled by prepare_config: there is one head


def test_onprem_head_starts_with_the_trial_drivers_and_fixed_workers():
    report = check_cluster_config(ONPREM_YAML)
    config = report.config
    (head,) = [c for c in config["head_start_ray_commands"] if "ray start" in c]
    options = start_options(head)
    assert options["--num-cpus"] == "0"
    assert f'"{TRIAL_DRIVER_RESOURCE}": 8' in options["--resources"]
    assert 8 >= ours_space()["search"]["max_concurrent_trials"]
    # No autoscaling: every worker IP joins at `ray up` and stays (Ray's defaults for `local`).
    (node_type,) = config["available_node_types"].values()
    ips = len(config["provider"]["worker_ips"])
    assert node_type["min_workers"] == node_type["max_workers"] == config["max_workers"] == ips
    assert report.summary().startswith(
        f"{ONPREM_YAML}: OK (local provider: head {config['provider']['head_ip']} with 8 trial-driver slots, "
        f"{ips} worker machines"
    )


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


def test_setup_installs_everything_with_the_mounted_lock(kind, raw_config):
    config = check_cluster_config(FILES[kind]).config
    assert config["file_mounts"]["~/raylung/constraints.txt"] == "./constraints.txt"
    for role in ("head_setup_commands", "worker_setup_commands"):
        installs = [(c, args) for c in config[role] for args in pip_installs(c)]
        assert installs, role
        for command, args in installs:
            assert constraint_files(args) == ["~/raylung/constraints.txt"], command
        torch = [c for c, _ in installs if {"torch", "torchvision"} <= packages_in(c)]
        assert len(torch) == 1 and TORCH_INDEX.search(torch[0]), torch
        package = [c for c, args in installs if "$HOME/raylung[all]" in args]
        assert len(package) == 1 and config[role].index(torch[0]) < config[role].index(package[0])
        assert not any(requirements_in(c) for c, _ in installs)  # versions come from the lock alone


def test_the_lock_lies_inside_pyprojects_ranges():
    pyproject = ROOT / "pyproject.toml"
    ranges = {
        r.name: r for r in map(Requirement, tomllib.loads(pyproject.read_text())["project"]["dependencies"])
    }
    pins = read_constraints(LOCK)
    for name in PINNED:
        (spec,) = pins[name].specifier
        assert spec.operator == "==" and "+" not in spec.version, pins[name]  # one public release
        if name in ranges:  # pyproject leaves torchvision to pip (timm requires it)
            assert ranges[name].specifier.contains(spec.version), (pins[name], ranges[name])


def test_pins_match_this_environment(kind):
    report = check_cluster_config(FILES[kind])
    assert set(report.pins) == set(PINNED)
    lock = read_constraints(LOCK)
    for name, pin in report.pins.items():
        assert pin == str(lock[name])
        assert Requirement(pin).specifier.contains(HERE[name], prereleases=True), (pin, HERE[name])
        assert pin in report.summary()


def test_reachable_gpus_fills_the_biggest_nodes_first_within_max_workers():
    def node(gpus: int, most: int) -> dict[str, Any]:
        return {"resources": {"CPU": 8, "GPU": gpus}, "min_workers": 0, "max_workers": most}

    types = {"head": {"resources": {}}, "one": node(1, 8), "four": node(4, 2)}
    config = {"max_workers": 3, "head_node_type": "head", "available_node_types": types}
    assert reachable_gpus(config) == 2 * 4 + 1 * 1
    assert reachable_gpus({**config, "max_workers": 20}) == 2 * 4 + 8 * 1


def test_another_installed_version_fails_naming_both(kind):
    other = {"torch": "2.13.0", "torchvision": HERE["torchvision"], "ray": "2.59.1"}
    report = check_cluster_config(FILES[kind], installed=other)
    lines = list(map(str, report.errors))
    assert len(lines) == 2, lines
    at = re.escape(LOCK_AT)
    torch = rf"{at}: constraints\.txt pins torch==[\d.]+, but this environment has torch 2\.13\.0: .*"
    ray = rf"{at}: constraints\.txt pins ray==\S+, but this environment has ray 2\.59\.1: .*"
    assert re.fullmatch(torch, lines[0]) and re.fullmatch(ray, lines[1]), lines
    with pytest.raises(ClusterConfigError, match=r"(?s)2 problem.*torch 2\.13\.0.*ray 2\.59\.1") as caught:
        report.raise_for_errors()
    assert isinstance(caught.value, ConfigError)


def test_a_package_missing_here_warns_instead(kind):
    report = check_cluster_config(FILES[kind], installed={**HERE, "torchvision": None})
    assert report.ok
    assert any("torchvision is not installed here" in str(w) for w in report.warnings)


LOCK_TEXT = LOCK.read_text() if LOCK.is_file() else ""


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        pytest.param(
            lambda text: re.sub(r"(?m)^torch==\S+$", "torch==2.13.0", text),
            r"constraints\.txt pins torch==2\.13\.0, but this environment has torch "
            + re.escape(str(HERE["torch"])),
            id="lock-pins-another-torch",
        ),
        pytest.param(
            lambda text: re.sub(r"(?m)^ray==\S+\n", "", text),
            r"constraints\.txt pins no ray \(this environment has ray==",
            id="lock-without-ray",
        ),
        pytest.param(
            lambda text: re.sub(r"(?m)^(torch==\S+)$", r"\1+cpu", text),
            r"constraints\.txt pins torch==\S+\+cpu, a local build the CUDA index does not serve",
            id="lock-pins-a-cpu-build",
        ),
    ],
)
def test_a_lock_that_misses_this_environment_fails(kind, raw, tmp_path, edit, message):
    path = repo_copy(tmp_path, raw, lock=edit(LOCK_TEXT))
    report = check_cluster_config(path)
    assert keys(report.errors) == [LOCK_AT], report.errors
    assert re.search(message, report.errors[0].message), report.errors[0]


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


def _move_to_end(key: str, marker: str) -> Callable[[dict], None]:
    def mutate(config: dict) -> None:
        (found,) = [c for c in config[key] if marker in c]
        config[key] = [c for c in config[key] if c != found] + [found]

    return mutate


def _append(key: str, command: str) -> Callable[[dict], None]:
    def mutate(config: dict) -> None:
        config[key] = [*config[key], command]

    return mutate


def _last(key: str) -> Callable[[dict], str]:
    return lambda config: f"{key}[{len(config[key]) - 1}]"


HEAD = ("available_node_types", "ray.head.cpu")
GPU1, GPU4 = ("available_node_types", "ray.worker.gpu1"), ("available_node_types", "ray.worker.gpu4")
PACKAGE = '"$HOME/raylung[all]"'
RUNTIME_ENV_KEY = (
    'ray job submit --runtime-env-json \'{"env_vars": {"WANDB_API_KEY": "0123abcd"}}\' -- raylung tune'
)

# (edit, the key of the one error (or a function of the edited config), its message)
EITHER_EDITS = [
    pytest.param(
        _sub("setup_commands", r" torch torchvision", ' "torch==0.0.1" torchvision'),
        torch_at,
        rf"installs torch==0\.0\.1, but this environment has torch {re.escape(str(HERE['torch']))}",
        id="torch-pin-mismatch",
    ),
    pytest.param(
        _sub("setup_commands", r"\s+--index-url \S+", ""),
        torch_at,
        r"installs torch without --index-url https://download.pytorch.org/whl/cu",
        id="torch-from-pypi",
    ),
    pytest.param(
        _move_to_end("setup_commands", "torchvision"),
        package_at,
        r"installs ~/raylung before torch and torchvision: pip would take them from PyPI",
        id="torch-after-the-package",
    ),
    pytest.param(
        _drop("file_mounts", "~/raylung/constraints.txt"),
        "file_mounts",
        r"does not copy constraints\.txt to the nodes .*pip install -c",
        id="lock-not-mounted",
    ),
    pytest.param(
        _sub("setup_commands", rf"-c ~/raylung/constraints\.txt ({re.escape(PACKAGE)})", r"\1"),
        package_at,
        r"pip install without -c ~/raylung/constraints\.txt: the node would resolve versions of its own",
        id="pip-install-without-the-lock",
    ),
    pytest.param(
        _sub(
            "setup_commands", rf"-c ~/raylung/constraints\.txt ({re.escape(PACKAGE)})", r"-c /tmp/mine.txt \1"
        ),
        package_at,
        r"pip install -c /tmp/mine\.txt, but constraints\.txt is at ~/raylung/constraints\.txt",
        id="pip-install-with-another-lock",
    ),
    pytest.param(
        _append("head_start_ray_commands", RUNTIME_ENV_KEY),
        _last("head_start_ray_commands"),
        r"passes WANDB_API_KEY in --runtime-env-json: anyone with dashboard access reads a runtime env",
        id="wandb-key-in-a-runtime-env",
    ),
    pytest.param(
        _append("setup_commands", "echo 'export WANDB_API_KEY=0123abcd' >> ~/.bashrc"),
        _last("setup_commands"),
        r"sets WANDB_API_KEY: .* mount a W&B netrc file instead",
        id="wandb-key-in-a-command",
    ),
    pytest.param(
        _sub("setup_commands", r"export NETRC=\S+", "true"),
        "file_mounts.~/.raylung/wandb.netrc",
        r"W&B reads a netrc file at ~/.netrc or where NETRC points: setup must export NETRC=~/.raylung/",
        id="wandb-netrc-not-exported",
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
        _sub("setup_commands", re.escape(PACKAGE), "wheel"),
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

AWS_EDITS = [
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
        _sub("head_setup_commands", r"-c ~/raylung/constraints\.txt ", ""),
        "head_setup_commands[0]",
        r"pip install without -c ~/raylung/constraints\.txt",
        id="boto3-without-the-lock",
    ),
]

ONPREM_EDITS = [
    pytest.param(
        _drop("provider", "worker_ips"),
        "provider",
        r"Ray's launcher rejects the config: Please supply a `head_ip` and list of `worker_ips`",
        id="no-worker-ips",
    ),
    pytest.param(
        _set("available_node_types", value={"gpu": {"resources": {"GPU": 1}, "node_config": {}}}),
        "available_node_types",
        r"Ray's launcher rejects the config: The field available_node_types is not supported",
        id="node-types-given",
    ),
    pytest.param(
        _set("provider", "worker_ips", value=[]),
        "provider.worker_ips",
        r"no worker machines: nowhere to train",
        id="empty-worker-ips",
    ),
    pytest.param(
        _sub("head_start_ray_commands", rf'"{TRIAL_DRIVER_RESOURCE}": 8', f'"{TRIAL_DRIVER_RESOURCE}": 2'),
        "head_start_ray_commands[1]",
        rf"the head's `ray start` advertises 2 '{TRIAL_DRIVER_RESOURCE}' units; .* needs >= 8 "
        r"\(search_spaces/ours.yaml search.max_concurrent_trials\)",
        id="head-start-has-too-few-driver-slots",
    ),
    pytest.param(
        _sub("head_start_ray_commands", r" --resources='[^']*'", ""),
        "head_start_ray_commands[1]",
        rf"the head's `ray start` advertises 0 '{TRIAL_DRIVER_RESOURCE}' units",
        id="head-start-without-driver-slots",
    ),
    pytest.param(
        _sub(
            "worker_start_ray_commands",
            r"(ray start \S+)",
            rf"""\1 --resources='{{"{TRIAL_DRIVER_RESOURCE}": 1}}'""",
        ),
        "worker_start_ray_commands[1]",
        r"trial drivers belong on the head alone",
        id="worker-start-advertises-driver-slots",
    ),
    pytest.param(
        _sub("head_start_ray_commands", r"--resources='[^']*'", "--resources='{8}'"),
        "head_start_ray_commands[1]",
        r"--resources is not a JSON object",
        id="head-resources-not-json",
    ),
]


def _cases() -> list[Any]:
    cases = [(kind, e) for kind in FILES for e in EITHER_EDITS]
    cases += [("aws", e) for e in AWS_EDITS] + [("onprem", e) for e in ONPREM_EDITS]
    return [pytest.param(kind, *e.values, id=f"{kind}-{e.id}") for kind, e in cases]


@pytest.mark.parametrize(("which", "mutate", "key", "message"), _cases())
def test_broken_edit_fails_with_one_line_naming_it(which, mutate, key, message):
    raw = yaml.safe_load(FILES[which].read_text())
    mutate(raw)
    report = check_config(raw, ROOT)
    assert not report.ok
    assert len(report.errors) == 1, report.errors
    assert report.errors[0].key == (key(raw) if callable(key) else key)
    assert re.search(message, report.errors[0].message), report.errors[0]
    assert report.summary() == "cluster.yaml: 1 problem(s)"


def test_a_missing_local_token_and_wandb_netrc_warn(raw, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ray/auth_token or ~/.raylung/wandb.netrc here
    report = check_config(raw, ROOT)
    assert report.ok and sorted(map(str, report.warnings)) == [
        "file_mounts.~/.ray/auth_token: ~/.ray/auth_token does not exist on this machine "
        "(make it: ray get-auth-token --generate)",
        "file_mounts.~/.raylung/wandb.netrc: ~/.raylung/wandb.netrc does not exist on this machine "
        "(make it: NETRC=~/.raylung/wandb.netrc wandb login; an empty file keeps W&B offline)",
    ]


def test_no_wandb_netrc_mount_warns_and_mounting_the_whole_netrc_warns(raw):
    del raw["file_mounts"]["~/.raylung/wandb.netrc"]
    report = check_config(raw, ROOT)
    assert report.ok and "file_mounts: carries no W&B netrc file" in "\n".join(map(str, report.warnings))
    raw["file_mounts"]["~/.netrc"] = "~/.netrc"  # every password of the user's, to every node
    report = check_config(raw, ROOT)
    assert report.ok, report.errors  # ~/.netrc needs no NETRC
    assert "file_mounts.~/.netrc: copies your whole ~/.netrc" in "\n".join(map(str, report.warnings))


def test_onprem_head_that_may_train_warns():
    raw = yaml.safe_load(ONPREM_YAML.read_text())
    _sub("head_start_ray_commands", r" --num-cpus=0", "")(raw)
    report = check_config(raw, ROOT)
    assert report.ok
    lines = [str(w) for w in report.warnings]
    assert any(
        w.startswith("head_start_ray_commands[1]: the head's `ray start` lacks --num-cpus=0") for w in lines
    )


def test_smaller_cluster_warns_that_trials_queue(aws_raw):
    raw = copy.deepcopy(aws_raw)
    raw["max_workers"] = 1  # one node: at most 4 GPUs for ours.yaml's 8 concurrent single-GPU trials
    report = check_config(raw, ROOT)
    assert report.ok
    assert "max_workers: search_spaces/ours.yaml runs 8 GPUs at once, the cluster has 4" in map(
        str, report.warnings
    )


def test_secrets_are_never_echoed(aws_raw, tmp_path):
    raw = copy.deepcopy(aws_raw)
    raw["auth"]["ssh_private_key"] = {"token": SECRET}  # a schema error on a secret-bearing value
    report = check_config(raw, ROOT)
    assert keys(report.errors) == ["auth.ssh_private_key"] and SECRET not in str(report.errors)

    raw = copy.deepcopy(aws_raw)
    raw["setup_commands"].insert(0, f"export WANDB_API_KEY={SECRET}")  # shifts every index by one
    _sub("setup_commands", r" torch torchvision", ' "torch==0.0.1" torchvision')(raw)
    raw["head_start_ray_commands"].append(RUNTIME_ENV_KEY.replace("0123abcd", SECRET))
    raw["provider"]["api_token"] = SECRET  # provider settings are free-form for Ray's schema
    result = raylung_cli("cluster", "check", str(repo_copy(tmp_path, raw)))
    assert result.returncode == 1
    assert f"  error: {torch_at(raw)}: installs torch==0.0.1" in result.stdout
    assert "  error: setup_commands[0]: sets WANDB_API_KEY" in result.stdout
    assert f"  error: {_last('head_start_ray_commands')(raw)}: passes WANDB_API_KEY" in result.stdout
    assert SECRET not in result.stdout + result.stderr


def test_a_wandb_key_in_a_command_is_flagged_even_when_ray_rejects_the_rest(aws_raw):
    raw = copy.deepcopy(aws_raw)
    raw["max_worker"] = 8  # Ray's schema error
    raw["worker_start_ray_commands"].insert(0, "WANDB_API_KEY=0123 ray start --address=$RAY_HEAD_IP:6379")
    report = check_config(raw, ROOT)
    assert keys(report.errors) == ["(top level)", "worker_start_ray_commands[0]"], report.errors


def test_requirements_in_reads_quoted_pins_and_skips_paths_flags_and_unpinned():
    command = '~/venv/bin/pip install -q ~/raylung "ray[train]==2.60.*" torch --index-url https://x/cu130'
    assert {name: str(req) for name, req in requirements_in(command).items()} == {"ray": "ray[train]==2.60.*"}
    # A command the shell parser cannot split (an unbalanced quote) is read word by word.
    assert set(requirements_in("pip install ray==2.60.* && echo \"it's")) == {"ray"}


def test_pip_installs_are_found_in_compound_commands_with_their_constraints():
    command = (
        "test -d ~/v || (python3 -m venv ~/v && ~/v/bin/pip install -q -c ~/lock.txt torch --index-url X); "
        'python -m pip install -c$HOME/lock.txt "$HOME/raylung[all]" | tee log && '
        "pip3 install --constraint=c.txt ray>=2.60 && echo pip install nothing >> ~/.bashrc"
    )
    installs = pip_installs(command)
    assert [constraint_files(args) for args in installs] == [["~/lock.txt"], ["$HOME/lock.txt"], ["c.txt"]]
    assert packages_in(command) == {"torch", "ray"}  # the index URL and the path are not packages
    assert pip_installs("ray start --head && pip list") == []


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
    assert f"{HERE['torch']}" in first and "from constraints.txt" in first
    # Warnings only, and only for local files this machine lacks.
    assert all(any(name in line for name in MISSING_HERE) for line in rest), rest


def test_cli_accepts_the_onprem_config():
    result = raylung_cli("cluster", "check", "cluster.onprem.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    first, *rest = result.stdout.splitlines()
    assert first.startswith(
        "cluster.onprem.yaml: OK (local provider: head 10.0.0.10 with 8 trial-driver slots"
    )
    assert all(any(name in line for name in MISSING_HERE) for line in rest), rest
    assert result.stderr == ""


def test_cli_fails_on_a_broken_onprem_copy_with_rays_objection_only(tmp_path):
    raw = yaml.safe_load(ONPREM_YAML.read_text())
    del raw["provider"]["head_ip"]
    path = repo_copy(tmp_path, raw, name="cluster.onprem.yaml")
    result = raylung_cli("cluster", "check", str(path), cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout.splitlines()[1:] == [
        "  error: provider: Ray's launcher rejects the config: Please supply a `head_ip` and list of "
        "`worker_ips`. Alternatively, supply a `coordinator_address`."
    ]
    assert result.stderr == ""  # Ray's PANIC line is kept out


def test_cli_fails_on_a_broken_copy_naming_the_problem(aws_raw, tmp_path):
    raw = copy.deepcopy(aws_raw)
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
