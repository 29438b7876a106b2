"""cluster.yaml: accepted by Ray's own cluster launcher, and true to what raylung needs of a cluster.

`check()` does what `ray up` does before it first talks to AWS: `prepare_config` (merges the
installed Ray's aws/defaults.yaml into the config, a file read: no boto3, no credentials) then
`validate_config` (ray-schema.json plus the launcher's cross-field checks). The AWS-only steps
that follow in `ray up` (resource autodetection, IAM and subnet bootstrap) need credentials and
are left out; cluster.yaml states every resource, so autodetection has nothing to add.

On top, raylung's invariants: the head advertises the trial-driver resource, every worker type
has GPUs and scales from zero, setup installs exactly pyproject's pins, the search spaces and the
package are mounted where setup installs from, and head and workers share token auth. A broken
edit of each kind fails with a message that names the problem.
"""

from __future__ import annotations

import copy
import os
import re
import shlex
import socket
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from packaging.requirements import InvalidRequirement, Requirement

from raylung.cluster.connect import TRIAL_DRIVER_RESOURCE

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_YAML = ROOT / "cluster.yaml"
PINNED = ("torch", "torchvision", "ray")
TORCH_INDEX = "https://download.pytorch.org/whl/cu"


class ClusterConfigError(ValueError):
    """cluster.yaml passes Ray's validator but breaks something raylung relies on."""


def pyproject_pins() -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = {r.name: r for r in map(Requirement, project["dependencies"])}
    return {name: reqs[name] for name in PINNED}


def ours_space() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "search_spaces" / "ours.yaml").read_text())


def requirements_in(command: str) -> dict[str, Requirement]:
    """The pinned packages a shell command installs (`pip install "torch==2.14.1" ...`)."""
    found = {}
    for token in shlex.split(command):
        try:
            req = Requirement(token)
        except InvalidRequirement:
            continue
        if req.name in PINNED and req.specifier:
            found[req.name] = req
    return found


# --- raylung's invariants, each returning its problems (empty: fine) ------------------------


def _worker_types(config: dict) -> dict[str, dict]:
    return {n: t for n, t in config["available_node_types"].items() if n != config["head_node_type"]}


def driver_problems(config: dict) -> list[str]:
    head_type = config["head_node_type"]
    head = config["available_node_types"][head_type]["resources"]
    problems = []
    slots = head.get(TRIAL_DRIVER_RESOURCE, 0)
    wanted = ours_space()["search"]["max_concurrent_trials"]
    if slots < wanted:
        problems.append(
            f"head node type {head_type} advertises {slots} '{TRIAL_DRIVER_RESOURCE}' units; trial "
            f"drivers reserve one each, so it needs >= {wanted} (ours.yaml max_concurrent_trials)"
        )
    if head.get("GPU", 0) or head.get("CPU", 0):
        problems.append(
            f"head node type {head_type} must advertise no CPUs and no GPUs for training workers, got {head}"
        )
    for name, node in _worker_types(config).items():
        if node["resources"].get(TRIAL_DRIVER_RESOURCE, 0):
            problems.append(
                f"worker type {name} advertises '{TRIAL_DRIVER_RESOURCE}': trial drivers "
                "belong on the head, which is never scaled down"
            )
    return problems


def worker_problems(config: dict) -> list[str]:
    workers = _worker_types(config)
    need = ours_space()["resources"]
    need_cpu, need_gpu = need["cpus_per_worker"], need["gpus_per_worker"]
    problems = [] if workers else ["no worker node types"]
    for name, node in workers.items():
        res = node["resources"]
        if res.get("GPU", 0) < 1:
            problems.append(f"worker type {name} advertises no GPU: {res}")
        if node.get("min_workers", 0) != 0:
            problems.append(
                f"worker type {name} has min_workers {node['min_workers']}; GPU nodes must "
                "scale from min_workers: 0"
            )
        if res.get("CPU", 0) < need_cpu or res.get("GPU", 0) < need_gpu:
            problems.append(
                f"worker type {name} ({res}) cannot host one ours.yaml training worker "
                f"({need_cpu} CPUs + {need_gpu} GPU)"
            )
    gpus = {node["resources"].get("GPU", 0) for node in workers.values()}
    if not ({1} <= gpus and max(gpus, default=0) > 1):
        problems.append(f"want a single-GPU and a multi-GPU worker type, GPU counts are {sorted(gpus)}")
    return problems


def pin_problems(config: dict, pins: dict[str, Requirement]) -> list[str]:
    problems = []
    for role in ("head_setup_commands", "worker_setup_commands"):
        commands = config[role]
        installed: dict[str, Requirement] = {}
        for command in commands:
            installed.update(requirements_in(command))
        for name, pin in pins.items():
            got = installed.get(name)
            if got is None:
                problems.append(f"{role} never installs {name} (pyproject: {pin})")
            elif (got.specifier, got.extras) != (pin.specifier, pin.extras):
                problems.append(f"{role} installs {got}, pyproject.toml pins {pin}")
        torch_commands = [c for c in commands if "torch" in requirements_in(c)]
        if not all(f"--index-url {TORCH_INDEX}" in c for c in torch_commands):
            problems.append(f"{role} must install torch from the PyTorch CUDA index ({TORCH_INDEX}...)")
    return problems


def _remote_of(config: dict, local: Path) -> str | None:
    """Where `local` (a repository path) lands on the nodes, through the file mounts."""
    for remote, source in config["file_mounts"].items():
        mounted = (ROOT / os.path.expanduser(source)).resolve()
        if local == mounted or mounted in local.parents:
            return str(Path(remote) / local.relative_to(mounted))
    return None


def mount_problems(config: dict) -> list[str]:
    problems = []
    for remote, source in config["file_mounts"].items():
        local = ROOT / source
        if not source.startswith("~") and not local.exists():
            problems.append(f"file_mounts {remote}: {source} does not exist in the repository")
    if _remote_of(config, ROOT / "search_spaces") is None:
        problems.append("search_spaces/ is not in file_mounts")
    remote_pyproject = _remote_of(config, ROOT / "pyproject.toml")
    remote_repo = str(Path(remote_pyproject).parent) if remote_pyproject else None
    if remote_repo is None or _remote_of(config, ROOT / "raylung") != f"{remote_repo}/raylung":
        problems.append("pyproject.toml and raylung/ must be mounted side by side, for `pip install`")
    else:
        installs_it = any(
            "install" in c and remote_repo in [t.rstrip("/") for t in shlex.split(c)]
            for c in config["setup_commands"]
        )
        if not installs_it:
            problems.append(f"setup_commands never pip-install {remote_repo}, where the repo is mounted")
    return problems


def auth_problems(config: dict) -> list[str]:
    problems = []
    for role in ("head_start_ray_commands", "worker_start_ray_commands"):
        starts = [c for c in config[role] if "ray start" in c]
        if not starts or not all("RAY_AUTH_MODE=token" in c for c in starts):
            problems.append(f"{role}: `ray start` must run with RAY_AUTH_MODE=token on every node")
    if not any(remote.endswith(".ray/auth_token") for remote in config["file_mounts"]):
        problems.append("file_mounts must carry ~/.ray/auth_token: head and workers share one token")
    return problems


def check(raw: dict, pins: dict[str, Requirement]) -> dict:
    """Ray's validation as `ray up` runs it, then raylung's; returns the prepared config."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = prepare_config(copy.deepcopy(raw))
    validate_config(config)
    problems = (
        driver_problems(config)
        + worker_problems(config)
        + pin_problems(config, pins)
        + mount_problems(config)
        + auth_problems(config)
    )
    if problems:
        raise ClusterConfigError("cluster.yaml:\n  " + "\n  ".join(problems))
    return config


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pins() -> dict[str, Requirement]:
    return pyproject_pins()


@pytest.fixture(scope="module")
def raw_config() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


@pytest.fixture
def raw(raw_config) -> dict:
    """A fresh copy to break."""
    return copy.deepcopy(raw_config)


@pytest.fixture(scope="module")
def prepared(raw_config, pins) -> dict:
    return check(raw_config, pins)


# --- the file as committed -----------------------------------------------------------------


def test_ray_validator_accepts_cluster_yaml_offline(raw_config, pins, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("validating cluster.yaml tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    config = check(raw_config, pins)
    assert config["provider"]["type"] == "aws"
    # Every command list is ours, not one of Ray's AWS defaults (a nightly Ray wheel).
    for key in ("setup_commands", "head_start_ray_commands", "worker_start_ray_commands"):
        assert config[key] == raw_config[key]
    assert config["head_setup_commands"] == raw_config["setup_commands"] + raw_config["head_setup_commands"]


def test_head_runs_trial_drivers_and_no_training(prepared):
    assert driver_problems(prepared) == []
    head = prepared["available_node_types"][prepared["head_node_type"]]
    assert head["resources"][TRIAL_DRIVER_RESOURCE] >= 1
    assert head["max_workers"] == 0  # filled by prepare_config: there is one head


def test_gpu_workers_scale_from_zero_and_fit_a_trial(prepared):
    assert worker_problems(prepared) == []
    space = ours_space()
    need = space["search"]["max_concurrent_trials"] * space["resources"]["gpus_per_worker"]
    reachable = max(
        min(t["max_workers"], prepared["max_workers"]) * t["resources"]["GPU"]
        for t in _worker_types(prepared).values()
    )
    assert reachable >= need, f"the cluster reaches {reachable} GPUs, ours.yaml runs {need} trials at once"


def test_setup_installs_exactly_pyprojects_pins(prepared, pins):
    assert pin_problems(prepared, pins) == []


def test_search_spaces_and_package_are_mounted_where_setup_installs(prepared):
    assert mount_problems(prepared) == []
    assert _remote_of(prepared, ROOT / "search_spaces" / "ours.yaml") == "~/raylung/search_spaces/ours.yaml"


def test_head_and_workers_share_token_auth(prepared):
    assert auth_problems(prepared) == []


# --- broken edits are caught, each with a message that names it --------------------------


def _set(path: str, value: Any) -> Callable[[dict], None]:
    def mutate(config: dict) -> None:
        *parents, leaf = path.split("/")
        for key in parents:
            config = config[key]
        config[leaf] = value

    return mutate


def _drop_driver_resource(config: dict) -> None:
    del config["available_node_types"][config["head_node_type"]]["resources"][TRIAL_DRIVER_RESOURCE]


def _other_torch_pin(config: dict) -> None:
    commands = config["setup_commands"]
    config["setup_commands"] = [re.sub(r'"torch==[^"]+"', '"torch==0.0.1"', c) for c in commands]


def _drop_search_spaces_mount(config: dict) -> None:
    del config["file_mounts"]["~/raylung/search_spaces"]


def _worker_without_token_auth(config: dict) -> None:
    config["worker_start_ray_commands"] = [
        c.replace("RAY_AUTH_MODE=token ", "") for c in config["worker_start_ray_commands"]
    ]


SCHEMA_BREAKS = [  # (edit, Ray's message, the path of the field it points at)
    pytest.param(
        _set("max_worker", 8),
        r"Additional properties are not allowed \('max_worker' was unexpected\)",
        (),
        id="unknown-top-level-key",
    ),
    pytest.param(
        _set("max_workers", "8"),
        r"'8' is not of type 'integer'",
        ("max_workers",),
        id="max_workers-not-an-integer",
    ),
    pytest.param(
        _set("available_node_types/ray.worker.gpu1/resources/GPU", 0.5),
        r"0.5 is not of type 'integer'",
        ("available_node_types", "ray.worker.gpu1", "resources", "GPU"),
        id="fractional-gpu",
    ),
]


@pytest.mark.parametrize(("mutate", "message", "where"), SCHEMA_BREAKS)
def test_schema_break_fails_naming_the_field(raw, pins, mutate, message, where):
    mutate(raw)
    with pytest.raises(jsonschema.ValidationError, match=message) as caught:
        check(raw, pins)
    assert tuple(caught.value.absolute_path) == where


BROKEN_EDITS = [
    # The launcher's cross-field check.
    pytest.param(
        _set("head_node_type", "ray.head.default"),
        ValueError,
        r"`head_node_type` must be one of `available_node_types`",
        id="head-type-missing",
    ),
    # raylung's invariants.
    pytest.param(
        _drop_driver_resource,
        ClusterConfigError,
        rf"advertises 0 '{TRIAL_DRIVER_RESOURCE}' units",
        id="driver-resource-removed",
    ),
    pytest.param(
        _other_torch_pin,
        ClusterConfigError,
        r"installs torch==0\.0\.1, pyproject.toml pins torch==",
        id="torch-pin-mismatch",
    ),
    pytest.param(
        _set("available_node_types/ray.worker.gpu1/min_workers", 1),
        ClusterConfigError,
        r"ray.worker.gpu1 has min_workers 1",
        id="worker-min_workers-not-0",
    ),
    pytest.param(
        _set("available_node_types/ray.worker.gpu4/resources", {"CPU": 48}),
        ClusterConfigError,
        r"worker type ray.worker.gpu4 advertises no GPU",
        id="worker-without-gpu",
    ),
    pytest.param(
        _drop_search_spaces_mount,
        ClusterConfigError,
        r"search_spaces/ is not in file_mounts",
        id="search-spaces-not-mounted",
    ),
    pytest.param(
        _worker_without_token_auth,
        ClusterConfigError,
        r"worker_start_ray_commands: `ray start` must run with RAY_AUTH_MODE=token",
        id="worker-without-token-auth",
    ),
]


@pytest.mark.parametrize(("mutate", "error", "message"), BROKEN_EDITS)
def test_broken_edit_fails_with_a_clear_error(raw, pins, mutate, error, message):
    mutate(raw)
    with pytest.raises(error, match=message):
        check(raw, pins)


def test_requirements_in_reads_quoted_pins_and_skips_paths_flags_and_unpinned():
    command = '~/venv/bin/pip install -q ~/raylung "ray[train]==2.60.*" torch --index-url https://x/cu130'
    assert {name: str(req) for name, req in requirements_in(command).items()} == {"ray": "ray[train]==2.60.*"}
