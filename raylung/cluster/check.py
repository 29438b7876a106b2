"""Check a Ray cluster-launcher config (``cluster.yaml``) offline, before ``ray up``.

A bad edit otherwise shows late and costs money: Ray rejects a typo only at ``ray up``, and a
cluster that starts without what raylung needs (the trial-driver resource, GPUs, the driver's
torch and Ray, token auth) burns GPU hours before a trial fails or waits forever. This runs what
``ray up`` runs first, with no credentials or network (``prepare_config``: the installed Ray's
provider defaults, a file read; ``validate_config``: ray-schema.json and cross-field checks),
then raylung's checks. Local paths are relative to cluster.yaml's folder (the repository root).
"""

from __future__ import annotations

import contextlib
import copy
import importlib.metadata
import io
import logging
import os
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import yaml
from packaging.requirements import InvalidRequirement, Requirement

from raylung.cluster.connect import TRIAL_DRIVER_RESOURCE
from raylung.errors import ConfigError

Config = dict[str, Any]
Versions = Mapping[str, str | None]
# Driver and cluster must run the same Ray, and the same torch: checkpoints cross between them.
PINNED = ("torch", "torchvision", "ray")
SAME = {"ray": "driver and cluster need one Ray", "torch": "checkpoints need one torch everywhere"}
SAME["torchvision"] = "it must match torch"
TORCH_INDEX = re.compile(r"--index-url[ =]https://download\.pytorch\.org/whl/cu")
SETUP_LISTS = ("setup_commands", "head_setup_commands", "worker_setup_commands")
START_LISTS = ("head_start_ray_commands", "worker_start_ray_commands")
# Values under such keys, or text like `TOKEN=...`, are never echoed: the YAML may hold secrets.
_SECRET_KEY = re.compile(r"token|secret|passw|credential|key", re.IGNORECASE)
_SECRET_TEXT = re.compile(r"(token|secret|passw|credential|key)\w*\s*[=:]", re.IGNORECASE)


class ClusterConfigError(ConfigError):
    """cluster.yaml has problems; the message lists them, one per line."""


class Problem(NamedTuple):
    """One finding: the dotted YAML key it is about and what is wrong there."""

    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.key}: {self.message}"


@dataclass
class ClusterReport:
    """Findings on one config: errors break ``ray up`` or raylung, warnings may."""

    name: str
    config: Config = field(default_factory=dict)  # Ray's prepared config ({} if Ray rejected it)
    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    pins: dict[str, str] = field(default_factory=dict)  # package -> what setup installs: ray==2.60.*

    @property
    def ok(self) -> bool:
        return not self.errors

    def error(self, key: str, message: str) -> None:
        self.errors.append(Problem(key, message))

    def warn(self, key: str, message: str) -> None:
        self.warnings.append(Problem(key, message))

    def summary(self) -> str:
        """The first line the CLI prints: OK and the cluster's shape, or the problem count."""
        if not self.ok:
            return f"{self.name}: {len(self.errors)} problem(s)"
        cfg, head = self.config, self.config["head_node_type"]
        slots = _res(cfg["available_node_types"][head]).get(TRIAL_DRIVER_RESOURCE, 0)
        return (
            f"{self.name}: OK ({len(cfg['available_node_types'])} node types: head {head} with {slots} "
            f"trial-driver slots, {len(worker_types(cfg))} GPU worker types reaching {reachable_gpus(cfg)} "
            f"GPUs on {cfg['max_workers']} nodes; {', '.join(self.pins.values())} as installed here)"
        )

    def raise_for_errors(self) -> None:
        if self.errors:
            raise ClusterConfigError("\n  ".join([self.summary(), *map(str, self.errors)]))


def check_cluster_config(path: Path, installed: Versions | None = None) -> ClusterReport:
    """Check the file; raises ConfigError only if unreadable. ``installed`` replaces this env's versions."""
    path = Path(path)
    return check_config(load_cluster_yaml(path), path.resolve().parent, installed, name=str(path))


def load_cluster_yaml(path: Path) -> Config:
    """The YAML mapping; errors cite line and column but never echo the file's text (secrets)."""
    if not path.is_file():
        raise ConfigError(f"cluster config {path} not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}{where}: not valid YAML: {exc.problem or exc.context}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid YAML ({type(exc).__name__})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of cluster settings, got {type(raw).__name__}")
    return raw


def check_config(raw: Config, base: Path, installed: Versions | None = None, name: str = "") -> ClusterReport:
    """Ray's validation as ``ray up`` runs it; then, if Ray accepts the config, raylung's checks."""
    report = ClusterReport(name or "cluster.yaml")
    report.config = config = _ray_validate(raw, report)
    if config:
        spaces = search_spaces(base, report)
        _check_head(report, config, spaces)
        _check_workers(report, config, spaces)
        _check_pins(report, raw, config, installed_versions() if installed is None else installed)
        _check_mounts(report, config, base)
        _check_auth(report, config)
    report.errors, report.warnings = list(dict.fromkeys(report.errors)), list(dict.fromkeys(report.warnings))
    return report


def key_of(parts: Any) -> str:
    """A dotted key path with list indices in brackets: ``setup_commands[4]``."""
    text = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts)
    return text.removeprefix(".") or "(top level)"


def _ray_validate(raw: Config, report: ClusterReport) -> Config:
    """Ray's prepared config, or {} with Ray's objection (the first, as ``ray up`` shows it)."""
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    # Ray logs routine fill-ins and prints a warning that a file mount "refers to a file", which
    # matters for Docker bind mounts only; its real objections are exceptions.
    ray_log = logging.getLogger("ray.autoscaler")
    level = ray_log.level
    ray_log.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            config = prepare_config(copy.deepcopy(raw))
            validate_config(config)
        return config
    except jsonschema.ValidationError as exc:
        path, message = list(exc.absolute_path), exc.message
        secret = any(_SECRET_KEY.search(str(p)) for p in path) or _mentions_secret(exc.instance)
        if secret and exc.validator != "additionalProperties":  # that message names keys only
            message = f"value not shown; the schema wants {exc.validator}: {exc.validator_value!r}"
        report.error(key_of(path), f"{message} (Ray's schema)")
    except NotImplementedError as exc:  # an unknown provider type
        report.error("provider.type", f"Ray's launcher rejects it: {exc}")
    except KeyError as exc:
        report.error(str(exc.args[0]), "missing; Ray's launcher needs it")
    except (TypeError, AttributeError, ValueError, AssertionError, RuntimeError) as exc:
        named = re.search(r"`(\w+)`", str(exc))  # Ray's messages quote the key: `head_node_type` ...
        report.error(named.group(1) if named else "(top level)", f"Ray's launcher rejects the config: {exc}")
    finally:
        ray_log.setLevel(level)
    return {}


def _mentions_secret(value: Any) -> bool:
    if isinstance(value, dict):
        return any(_SECRET_KEY.search(str(k)) or _mentions_secret(v) for k, v in value.items())
    if isinstance(value, list):
        return any(map(_mentions_secret, value))
    return isinstance(value, str) and bool(_SECRET_TEXT.search(value))


@dataclass(frozen=True)
class SpaceNeeds:
    """What one search space asks of the cluster: per training worker, and at once."""

    name: str
    cpus: float
    gpus: float
    ranks: int
    concurrent: int


def search_spaces(base: Path, report: ClusterReport) -> list[SpaceNeeds]:
    """The search spaces next to cluster.yaml: the runs this cluster is sized for."""
    needs = []
    for path in sorted((base / "search_spaces").glob("*.yaml")):
        name = f"search_spaces/{path.name}"
        try:
            space = yaml.safe_load(path.read_text())
            res, search = (_numbers(space.get(k) or {}) for k in ("resources", "search"))
            gpu = (space.get("resources") or {}).get("use_gpu") is True  # "auto" runs wherever it lands
        except (yaml.YAMLError, AttributeError):
            report.warn(name, "unreadable, so the cluster is not sized against it")
            continue
        gpus = res.get("gpus_per_worker", 1.0) if gpu else 0.0
        ranks, concurrent = int(res.get("num_workers", 1)), int(search.get("max_concurrent_trials", 0))
        needs.append(SpaceNeeds(name, res.get("cpus_per_worker", 1.0), gpus, ranks, concurrent))
    return needs


def _numbers(section: Config) -> dict[str, float]:
    """A section's fixed numbers; a searched value ({choice: [...]}) says nothing about size."""
    return {k: v for k, v in section.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def worker_types(config: Config) -> dict[str, Config]:
    head = config["head_node_type"]
    return {name: node for name, node in config["available_node_types"].items() if name != head}


def _res(node: Config) -> Config:
    return node.get("resources") or {}


def reachable_gpus(config: Config) -> int:
    """The most GPUs the autoscaler can reach: biggest nodes first, within the global max_workers."""
    left, total = config["max_workers"], 0
    nodes = sorted((_res(t).get("GPU", 0), t["max_workers"]) for t in worker_types(config).values())
    for gpus, count in reversed(nodes):
        total, left = total + min(count, left) * gpus, left - min(count, left)
    return total


def _check_head(report: ClusterReport, config: Config, spaces: list[SpaceNeeds]) -> None:
    head = config["head_node_type"]
    key, res = key_of(["available_node_types", head, "resources"]), _res(config["available_node_types"][head])
    slots, wanted, why = res.get(TRIAL_DRIVER_RESOURCE, 0), 1, "one per running trial"
    for space in spaces:
        if space.concurrent > wanted:
            wanted, why = space.concurrent, f"{space.name} search.max_concurrent_trials"
    if slots < wanted:
        report.error(
            f"{key}.{TRIAL_DRIVER_RESOURCE}",
            f"head node type '{head}' advertises {slots} '{TRIAL_DRIVER_RESOURCE}' units; each trial's "
            f"driver reserves one, so it needs >= {wanted} ({why})",
        )
    if res.get("CPU", 0) or res.get("GPU", 0):
        report.error(key, "the head must advertise CPU: 0 and no GPU, so training never starves the GCS")


def _check_workers(report: ClusterReport, config: Config, spaces: list[SpaceNeeds]) -> None:
    workers = worker_types(config)
    if not workers:
        report.error("available_node_types", "no worker node type besides the head: nowhere to train")
    for name, node in workers.items():
        key, res = key_of(["available_node_types", name]), _res(node)
        if res.get("GPU", 0) < 1:
            report.error(f"{key}.resources.GPU", f"worker type '{name}' has no GPU")
        if (low := node.get("min_workers", 0)) != 0:
            why = "GPU workers must scale from 0, or idle ones bill around the clock"
            report.error(f"{key}.min_workers", f"worker type '{name}' has min_workers {low}; {why}")
        if res.get(TRIAL_DRIVER_RESOURCE, 0):
            report.error(f"{key}.resources.{TRIAL_DRIVER_RESOURCE}", "trial drivers belong on the head alone")
    unfit: dict[str, list[str]] = {}  # one line per size, naming every space of that size
    for space in spaces:
        if workers and not any(_fits(_res(t), space) for t in workers.values()):
            unfit.setdefault(f"({space.cpus:g} CPUs + {space.gpus:g} GPU)", []).append(space.name)
        if (want := space.concurrent * space.ranks * space.gpus) > (reach := reachable_gpus(config)):
            report.warn("max_workers", f"{space.name} runs {want:g} GPUs at once, the cluster has {reach}")
    for need, names in unfit.items():
        report.error(
            "available_node_types", f"no worker type fits a training worker {need} of {', '.join(names)}"
        )


def _fits(res: Config, space: SpaceNeeds) -> bool:
    return res.get("CPU", 0) >= space.cpus and res.get("GPU", 0) >= space.gpus


def requirements_in(command: str) -> dict[str, Requirement]:
    """The pinned packages a shell command installs (``pip install "torch==2.14.1" ...``)."""
    found = {}
    for token in _words(command):
        try:
            req = Requirement(token)
        except InvalidRequirement:
            continue
        if req.name in PINNED and req.specifier:
            found[req.name] = req
    return found


def _words(command: str) -> list[str]:
    """Shell words; a command shlex cannot parse (an unbalanced quote) is split on spaces."""
    try:
        return shlex.split(command, comments=True)
    except ValueError:
        return command.split()


def installed_versions() -> dict[str, str | None]:
    """This environment's versions: those of the driver that will talk to the cluster."""
    versions: dict[str, str | None] = {}
    for name in PINNED:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _check_pins(report: ClusterReport, raw: Config, config: Config, installed: Versions) -> None:
    # Ray prepends setup_commands to the head's and the workers' own lists; name the raw entry.
    where = {c: key_of([lst, i]) for lst in SETUP_LISTS[::-1] for i, c in enumerate(raw.get(lst) or [])}
    missing: dict[str, list[str]] = {}
    for role in SETUP_LISTS[1:]:
        found: dict[str, tuple[Requirement, str]] = {}
        for command in config.get(role) or []:
            key, reqs = where.get(command, role), requirements_in(command)
            found.update({name: (req, key) for name, req in reqs.items()})  # the last one wins, as in pip
            if {"torch", "torchvision"} & reqs.keys() and not TORCH_INDEX.search(command):
                report.error(key, "installs torch without --index-url https://download.pytorch.org/whl/cuXXX")
        for name in PINNED:
            if name not in found:
                missing.setdefault(name, []).append(role)
                continue
            (req, key), have = found[name], installed.get(name)
            report.pins.setdefault(name, f"{name}{req.specifier}")
            if have is None:
                report.warn(key, f"{name} is not installed here, so {req} is not compared")
            elif not req.specifier.contains(have, prereleases=True):
                report.error(key, f"installs {req}, but this environment has {name} {have}: {SAME[name]}")
    for name, roles in missing.items():
        key, pin = "setup_commands" if len(roles) == 2 else roles[0], installed.get(name) or "VERSION"
        report.error(key, f"never installs a pinned {name} (this environment has {name}=={pin})")


def _local(base: Path, source: str) -> Path:
    return (base / os.path.expanduser(str(source))).resolve()


def _remote_of(mounts: dict[str, str], base: Path, local: Path) -> str | None:
    """Where ``local`` lands on the nodes, through the file mounts."""
    local = local.resolve()
    for remote, source in mounts.items():
        mounted = _local(base, source)
        if local == mounted or mounted in local.parents:
            return str(Path(remote) / local.relative_to(mounted))
    return None


def _check_mounts(report: ClusterReport, config: Config, base: Path) -> None:
    mounts, setup = config.get("file_mounts") or {}, config.get("setup_commands") or []
    for remote, source in mounts.items():
        if _local(base, source).exists():
            continue
        if str(source).startswith("~"):  # in the home of whoever runs `ray up`: maybe not here
            hint = " (make it: ray get-auth-token --generate)" if "auth_token" in str(source) else ""
            report.warn(f"file_mounts.{remote}", f"{source} does not exist on this machine{hint}")
        else:
            report.error(f"file_mounts.{remote}", f"{source} does not exist (relative to {base})")
    if (base / "search_spaces").is_dir() and _remote_of(mounts, base, base / "search_spaces") is None:
        report.error("file_mounts", "search_spaces/ is not in file_mounts: nodes need it beside the package")
    pyproject = _remote_of(mounts, base, base / "pyproject.toml")
    repo = str(Path(pyproject).parent) if pyproject else None
    if repo is None or _remote_of(mounts, base, base / "raylung") != f"{repo}/raylung":
        report.error("file_mounts", "pyproject.toml and raylung/ must be mounted side by side, for pip")
    elif not any("install" in c and repo in [t.rstrip("/") for t in _words(c)] for c in setup):
        report.error("setup_commands", f"never pip-installs {repo}, where the package is mounted")


def _check_auth(report: ClusterReport, config: Config) -> None:
    for role in START_LISTS:
        starts = [c for c in config.get(role) or [] if "ray start" in c]
        if not starts or not all("RAY_AUTH_MODE=token" in c for c in starts):
            report.error(role, "`ray start` must run with RAY_AUTH_MODE=token on every node")
    if not any(str(remote).endswith(".ray/auth_token") for remote in config.get("file_mounts") or {}):
        report.error("file_mounts", "must carry ~/.ray/auth_token: head and workers share one token")
