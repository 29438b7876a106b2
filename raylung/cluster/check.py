"""Check a Ray cluster-launcher config (``cluster.yaml``, ``cluster.onprem.yaml``) offline, before ``ray up``.

A bad edit otherwise shows late and costs money: Ray rejects a typo only at ``ray up``, and a
cluster that starts without what raylung needs (the trial-driver resource, GPUs, the tested
versions, token auth) burns GPU hours before a trial fails or waits forever. This runs what
``ray up`` runs first, with no credentials or network (``prepare_config``: the installed Ray's
provider defaults, a file read; ``validate_config``: ray-schema.json and cross-field checks),
then raylung's checks: the nodes' shape here (node types on a cloud; for Ray's ``local``
provider, fixed machines, what their ``ray start`` advertises), what setup installs and copies in
:mod:`.check_setup`. Local paths are relative to the config's folder (the repository root).
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from raylung.cluster.check_setup import (
    CONSTRAINTS,
    PINNED,
    TORCH_INDEX,
    Config,
    Versions,
    check_secrets,
    check_setup,
    installed_versions,
    key_of,
    requirements_in,
    words,
)
from raylung.cluster.connect import TRIAL_DRIVER_RESOURCE
from raylung.errors import ConfigError

__all__ = [
    "PINNED",
    "TORCH_INDEX",
    "ClusterConfigError",
    "ClusterReport",
    "check_cluster_config",
    "check_config",
    "installed_versions",
    "key_of",
    "reachable_gpus",
    "requirements_in",
    "worker_types",
]
# Values under such keys, or text like `TOKEN=...`, are never echoed: the YAML may hold secrets.
_SECRET_KEY = re.compile(r"token|secret|passw|credential|key", re.IGNORECASE)
_SECRET_TEXT = re.compile(r"(token|secret|passw|credential|key)\w*\s*[=:]", re.IGNORECASE)


class ClusterConfigError(ConfigError):
    """The cluster config has problems; the message lists them, one per line."""


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
    pins: dict[str, str] = field(default_factory=dict)  # package -> its pin in constraints.txt: ray==2.60.0
    shape: str = ""  # the nodes, in words: "3 node types: head ... with 8 trial-driver slots, ..."

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
        pins = ", ".join(self.pins.values())
        return f"{self.name}: OK ({self.shape}; {pins} from {CONSTRAINTS}, as installed here)"

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
        if config["provider"].get("type") == "local":
            _check_machines(report, config, spaces)
        else:
            _check_head(report, config, spaces)
            _check_workers(report, config, spaces)
        check_setup(report, raw, config, base, installed_versions() if installed is None else installed)
    check_secrets(report, raw)  # whatever Ray thinks of the rest
    report.errors, report.warnings = list(dict.fromkeys(report.errors)), list(dict.fromkeys(report.warnings))
    return report


def _ray_validate(raw: Config, report: ClusterReport) -> Config:
    """Ray's prepared config, or {} with Ray's objection (the first, as ``ray up`` shows it)."""
    import click
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
    except click.ClickException as exc:  # the local provider's preparation aborts with a message
        named = re.search(r"`(\w+)`|field (\w+) ", exc.format_message())
        field_name = (named.group(1) or named.group(2)) if named else "(top level)"
        key = "provider" if field_name in ("head_ip", "worker_ips") else field_name
        report.error(key, f"Ray's launcher rejects the config: {exc.format_message()}")
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


def _slots_wanted(spaces: list[SpaceNeeds]) -> tuple[int, str]:
    """How many trial drivers the head must hold at once, and why."""
    wanted, why = 1, "one per running trial"
    for space in spaces:
        if space.concurrent > wanted:
            wanted, why = space.concurrent, f"{space.name} search.max_concurrent_trials"
    return wanted, why


def _too_few_slots(report: ClusterReport, key: str, who: str, slots: float, spaces: list[SpaceNeeds]) -> None:
    wanted, why = _slots_wanted(spaces)
    if slots < wanted:
        report.error(
            key,
            f"{who} advertises {slots:g} '{TRIAL_DRIVER_RESOURCE}' units; each trial's driver reserves one, "
            f"so it needs >= {wanted} ({why})",
        )


def _check_head(report: ClusterReport, config: Config, spaces: list[SpaceNeeds]) -> None:
    head = config["head_node_type"]
    key, res = key_of(["available_node_types", head, "resources"]), _res(config["available_node_types"][head])
    slots = res.get(TRIAL_DRIVER_RESOURCE, 0)
    _too_few_slots(report, f"{key}.{TRIAL_DRIVER_RESOURCE}", f"head node type '{head}'", slots, spaces)
    if res.get("CPU", 0) or res.get("GPU", 0):
        report.error(key, "the head must advertise CPU: 0 and no GPU, so training never starves the GCS")
    report.shape = (
        f"{len(config['available_node_types'])} node types: head {head} with {slots} trial-driver slots, "
        f"{len(worker_types(config))} GPU worker types reaching {reachable_gpus(config)} GPUs on "
        f"{config['max_workers']} nodes"
    )


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


def start_options(command: str) -> dict[str, str]:
    """The ``--option=value`` (or ``--option value``) words of a ``ray start`` command."""
    options, tokens = {}, words(command)
    for i, token in enumerate(tokens):
        if not token.startswith("--"):
            continue
        name, sep, value = token.partition("=")
        if not sep and i + 1 < len(tokens) and not tokens[i + 1].startswith("-"):
            value = tokens[i + 1]
        options[name] = value
    return options


def _advertised(report: ClusterReport, key: str, command: str) -> dict[str, Any] | None:
    """The custom resources a ``ray start`` advertises (``--resources='{...}'``); None if unreadable."""
    text = start_options(command).get("--resources") or "{}"
    try:
        resources = json.loads(text)
    except json.JSONDecodeError:
        resources = None
    if not isinstance(resources, dict):
        report.error(key, "--resources is not a JSON object of resource names and amounts")
        return None
    return resources


def _check_machines(report: ClusterReport, config: Config, spaces: list[SpaceNeeds]) -> None:
    """Ray's ``local`` provider: one node type, resources as each ``ray start`` advertises them.

    The head's start command carries what the cloud config puts in the head's node type: the
    trial-driver slots and, unless the head should train, ``--num-cpus=0``. GPUs and CPUs of the
    workers are whatever Ray detects on each machine; it cannot be checked here.
    """
    provider, slots = config["provider"], 0.0
    for i, command in enumerate(config.get("head_start_ray_commands") or []):
        if "ray start" not in command:
            continue
        key = key_of(["head_start_ray_commands", i])
        if (resources := _advertised(report, key, command)) is not None:
            slots = float(resources.get(TRIAL_DRIVER_RESOURCE, 0))
            _too_few_slots(report, key, "the head's `ray start`", slots, spaces)
        if start_options(command).get("--num-cpus") != "0":
            why = "training workers may land on the head (fine only if it is a GPU server meant to train)"
            report.warn(key, f"the head's `ray start` lacks --num-cpus=0: {why}")
    for i, command in enumerate(config.get("worker_start_ray_commands") or []):
        key = key_of(["worker_start_ray_commands", i])
        if "ray start" in command and (_advertised(report, key, command) or {}).get(TRIAL_DRIVER_RESOURCE):
            report.error(key, "trial drivers belong on the head alone")
    workers = provider.get("worker_ips") or []
    if not workers:
        report.error("provider.worker_ips", "no worker machines: nowhere to train")
    report.shape = (
        f"local provider: head {provider.get('head_ip')} with {slots:g} trial-driver slots, "
        f"{len(workers)} worker machines (GPUs as Ray detects them)"
    )
