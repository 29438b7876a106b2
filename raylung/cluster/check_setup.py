"""What a cluster config installs and copies onto its nodes: the lock file, torch, the package, secrets.

Part of ``raylung cluster check`` (:mod:`raylung.cluster.check`), for any provider. Every node
must run the versions CI tested: file_mounts copies the repository's ``constraints.txt`` to the
nodes, every ``pip install`` in setup passes it with ``-c``, torch and torchvision come from the
PyTorch CUDA index before the package, and the lock pins the torch, torchvision and Ray of this
environment (the driver's). Credentials travel as files only: the Ray token, and the W&B key in
a netrc file of its own that W&B on the nodes reads (``NETRC``); a W&B key in a command or in a
``--runtime-env-json`` is an error, because a runtime env is shown to anyone with dashboard access.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

Config = dict[str, Any]
Versions = Mapping[str, str | None]
# Driver and cluster must run the same Ray, and the same torch: checkpoints cross between them.
PINNED = ("torch", "torchvision", "ray")
SAME = {"ray": "driver and cluster need one Ray", "torch": "checkpoints need one torch everywhere"}
SAME["torchvision"] = "it must match torch"
TORCH_INDEX = re.compile(r"--index-url[ =]https://download\.pytorch\.org/whl/cu")
CONSTRAINTS = "constraints.txt"
SETUP_LISTS = ("setup_commands", "head_setup_commands", "worker_setup_commands")
START_LISTS = ("head_start_ray_commands", "worker_start_ray_commands")
COMMAND_LISTS = ("initialization_commands", *SETUP_LISTS, *START_LISTS)
# pip options whose value is the next word (so that value is not read as a package).
_PIP_VALUE_OPTIONS = frozenset(
    "-c --constraint -r --requirement -e --editable -i --index-url --extra-index-url -f --find-links "
    "-t --target --prefix --root --cache-dir --report --log --python --platform --progress-bar".split()
)
_SHELL_OPERATORS = set("&|;()<>")
_KEY_IN_RUNTIME_ENV = re.compile(r"--runtime-env-json.*WANDB_API_KEY", re.DOTALL)
_KEY_VALUE = re.compile(r"WANDB_API_KEY\W{0,3}\s*[=:]")
_NETRC_EXPORT = re.compile(r"""\bNETRC=["']?([^\s"';]+)""")
WANDB_NETRC_HINT = "make it: NETRC=~/.raylung/wandb.netrc wandb login; an empty file keeps W&B offline"


class Findings(Protocol):
    """Where the checks put what they find (:class:`raylung.cluster.check.ClusterReport`)."""

    pins: dict[str, str]

    def error(self, key: str, message: str) -> None: ...
    def warn(self, key: str, message: str) -> None: ...


def key_of(parts: Any) -> str:
    """A dotted key path with list indices in brackets: ``setup_commands[4]``."""
    text = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts)
    return text.removeprefix(".") or "(top level)"


def words(command: str) -> list[str]:
    """Shell words; a command shlex cannot parse (an unbalanced quote) is split on spaces."""
    try:
        return shlex.split(command, comments=True)
    except ValueError:
        return command.split()


def pip_installs(command: str) -> list[list[str]]:
    """The arguments of each ``pip install`` in a shell command (``a && pip install x`` included)."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    try:
        tokens = list(lexer)
    except ValueError:
        tokens = command.split()
    found, segment = [], []
    for token in [*tokens, ";"]:
        if set(token) <= _SHELL_OPERATORS:  # &&, ;, |, >>, ( ...: the end of one simple command
            if (args := _pip_install_args(segment)) is not None:
                found.append(args)
            segment = []
        else:
            segment.append(token)
    return found


def _pip_install_args(words: list[str]) -> list[str] | None:
    """The arguments after ``[VAR=x] [sudo] [python -m | uv] pip install`` in one simple command."""
    i = 0
    while i < len(words) and (re.fullmatch(r"\w+=.*", words[i]) or words[i] in ("sudo", "env", "exec")):
        i += 1
    if words[i : i + 1] == ["uv"] or (
        words[i : i + 1]
        and re.fullmatch(r"python[\d.]*", Path(words[i]).name)
        and words[i + 1 : i + 2] == ["-m"]
    ):
        i += 1 if words[i] == "uv" else 2
    if (
        words[i : i + 1]
        and re.fullmatch(r"pip[\d.]*", Path(words[i]).name)
        and words[i + 1 : i + 2] == ["install"]
    ):
        return words[i + 2 :]
    return None


def _targets(args: list[str]) -> list[str]:
    """What a ``pip install`` installs: its arguments that are neither options nor their values."""
    targets, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg.startswith("-"):
            skip = arg in _PIP_VALUE_OPTIONS
        else:
            targets.append(arg)
    return targets


def constraint_files(args: list[str]) -> list[str]:
    """The files a ``pip install`` takes constraints from (``-c F``, ``-cF``, ``--constraint=F``)."""
    files = []
    for i, arg in enumerate(args):
        if arg in ("-c", "--constraint") and i + 1 < len(args):
            files.append(args[i + 1])
        elif arg.startswith("--constraint="):
            files.append(arg.split("=", 1)[1])
        elif arg.startswith("-c") and len(arg) > 2 and not arg.startswith("--"):
            files.append(arg[2:])
    return files


def node_path(path: Any) -> str:
    """A path on a node as written in a command or a mount, home spelled ``~``, no extras or slash."""
    text = re.sub(r"^(\$HOME|\$\{HOME\})(?=/|$)", "~", str(path))
    return re.sub(r"\[[^\]]*\]$", "", text).rstrip("/") or "/"


def requirements_in(command: str) -> dict[str, Requirement]:
    """The pinned packages a shell command installs (``pip install "torch==2.14.1" ...``)."""
    found = {}
    for token in words(command):
        try:
            req = Requirement(token)
        except InvalidRequirement:
            continue
        if req.name in PINNED and req.specifier:
            found[req.name] = req
    return found


def packages_in(command: str) -> set[str]:
    """The pinned packages (torch, torchvision, ray) a command names to ``pip install``, pinned or not."""
    names = set()
    for args in pip_installs(command):
        for target in _targets(args):
            try:
                names.add(canonicalize_name(Requirement(target).name))
            except InvalidRequirement:
                continue
    return names & set(PINNED)


def installed_versions() -> dict[str, str | None]:
    """This environment's versions: those of the driver that will talk to the cluster."""
    versions: dict[str, str | None] = {}
    for name in PINNED:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def read_constraints(path: Path) -> dict[str, Requirement]:
    """``name==version`` lines of a constraints file, by canonical name (options and comments skipped)."""
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split(" #", 1)[0].strip()
        if not line or line.startswith(("#", "-")):
            continue
        try:
            req = Requirement(line)
        except InvalidRequirement:
            continue
        pins[canonicalize_name(req.name)] = req
    return pins


def local_source(base: Path, source: Any) -> Path:
    return (base / os.path.expanduser(str(source))).resolve()


def remote_of(mounts: Mapping[str, Any], base: Path, local: Path) -> str | None:
    """Where ``local`` lands on the nodes, through the file mounts."""
    local = local.resolve()
    for remote, source in mounts.items():
        mounted = local_source(base, source)
        if local == mounted or mounted in local.parents:
            return str(Path(remote) / local.relative_to(mounted))
    return None


def check_setup(report: Findings, raw: Config, config: Config, base: Path, installed: Versions) -> None:
    """Every rule of this module, on Ray's prepared config (and the raw one, to name entries)."""
    pyproject = remote_of(config.get("file_mounts") or {}, base, base / "pyproject.toml")
    repo = node_path(Path(pyproject).parent) if pyproject else None
    lock = _check_lock(report, raw, config, base)
    if lock is not None:
        _check_pins(report, lock, installed)
    _check_torch(report, raw, config, installed, repo)
    _check_mounts(report, config, base, repo)
    _check_auth(report, config)
    _check_wandb_netrc(report, config, base)


def _raw_keys(raw: Config, lists: tuple[str, ...] = SETUP_LISTS) -> dict[str, str]:
    """Each raw command's key; Ray prepends setup_commands to the head's and workers' own lists."""
    return {c: key_of([lst, i]) for lst in lists[::-1] for i, c in enumerate(raw.get(lst) or [])}


def _check_lock(report: Findings, raw: Config, config: Config, base: Path) -> tuple[str, Path] | None:
    """constraints.txt is mounted and every pip install uses it; its remote and local paths."""
    mounts = config.get("file_mounts") or {}
    remote = remote_of(mounts, base, base / CONSTRAINTS)
    if remote is None:
        report.error(
            "file_mounts",
            f"does not copy {CONSTRAINTS} to the nodes (`~/raylung/{CONSTRAINTS}: ./{CONSTRAINTS}`): "
            "setup must install the tested versions with pip install -c",
        )
        return None
    for lst in ("initialization_commands", *SETUP_LISTS):
        for i, command in enumerate(raw.get(lst) or []):
            for args in pip_installs(command):
                used = [node_path(f) for f in constraint_files(args)]
                if not used:
                    report.error(
                        key_of([lst, i]),
                        f"pip install without -c {remote}: the node would resolve versions of its own, "
                        f"not the tested ones of {CONSTRAINTS}",
                    )
                elif node_path(remote) not in used:
                    where = f"{CONSTRAINTS} is at {remote}"
                    report.error(key_of([lst, i]), f"pip install -c {used[0]}, but {where}")
    return remote, base / CONSTRAINTS


def _check_pins(report: Findings, lock: tuple[str, Path], installed: Versions) -> None:
    """The lock pins this environment's torch, torchvision and Ray (a missing file: _check_mounts)."""
    remote, path = lock
    if not path.is_file():
        return
    key, pins = f"file_mounts.{remote}", read_constraints(path)
    for name in PINNED:
        have = installed.get(name)
        if (req := pins.get(name)) is None:
            here = f"this environment has {name}=={have or 'VERSION'}"
            report.error(key, f"{CONSTRAINTS} pins no {name} ({here})")
            continue
        report.pins.setdefault(name, str(req))
        if name != "ray" and any(s.operator == "==" and "+" in s.version for s in req.specifier):
            report.error(key, f"{CONSTRAINTS} pins {req}, a local build the CUDA index does not serve")
        elif have is None:
            report.warn(key, f"{name} is not installed here, so {req} is not compared")
        elif not req.specifier.contains(have, prereleases=True):
            here = f"this environment has {name} {have}"
            report.error(key, f"{CONSTRAINTS} pins {req}, but {here}: {SAME[name]}")


def _check_torch(
    report: Findings, raw: Config, config: Config, installed: Versions, repo: str | None
) -> None:
    """torch and torchvision from the PyTorch CUDA index, before the package; explicit pins match."""
    where = _raw_keys(raw)
    for role in SETUP_LISTS[1:]:
        before: set[str] = set()  # torch and torchvision, once installed
        for command in config.get(role) or []:
            key, named = where.get(command, role), packages_in(command)
            if {"torch", "torchvision"} & named and not TORCH_INDEX.search(command):
                report.error(key, "installs torch without --index-url https://download.pytorch.org/whl/cuXXX")
            if repo and _installs(command, repo) and (missing := {"torch", "torchvision"} - before):
                report.error(
                    key,
                    f"installs {repo} before {' and '.join(sorted(missing))}: pip would take them from PyPI, "
                    "not the PyTorch CUDA index (install torch torchvision --index-url ... first)",
                )
            before |= named
            for name, req in requirements_in(command).items():
                have = installed.get(name)
                if have is not None and not req.specifier.contains(have, prereleases=True):
                    report.error(key, f"installs {req}, but this environment has {name} {have}: {SAME[name]}")


def _installs(command: str, path: str) -> bool:
    return any(path in map(node_path, _targets(args)) for args in pip_installs(command))


def _check_mounts(report: Findings, config: Config, base: Path, repo: str | None) -> None:
    mounts, setup = config.get("file_mounts") or {}, config.get("setup_commands") or []
    for remote, source in mounts.items():
        if local_source(base, source).exists():
            continue
        if str(source).startswith("~"):  # in the home of whoever runs `ray up`: maybe not here
            hint = " (make it: ray get-auth-token --generate)" if "auth_token" in str(source) else ""
            hint = f" ({WANDB_NETRC_HINT})" if str(remote).endswith("netrc") else hint
            report.warn(f"file_mounts.{remote}", f"{source} does not exist on this machine{hint}")
        else:
            report.error(f"file_mounts.{remote}", f"{source} does not exist (relative to {base})")
    if (base / "search_spaces").is_dir() and remote_of(mounts, base, base / "search_spaces") is None:
        report.error("file_mounts", "search_spaces/ is not in file_mounts: nodes need it beside the package")
    package = remote_of(mounts, base, base / "raylung")
    if repo is None or package is None or node_path(package) != f"{repo}/raylung":
        report.error("file_mounts", "pyproject.toml and raylung/ must be mounted side by side, for pip")
    elif not any(_installs(command, repo) for command in setup):
        report.error("setup_commands", f"never pip-installs {repo}, where the package is mounted")


def _check_auth(report: Findings, config: Config) -> None:
    for role in START_LISTS:
        starts = [c for c in config.get(role) or [] if "ray start" in c]
        if not starts or not all("RAY_AUTH_MODE=token" in c for c in starts):
            report.error(role, "`ray start` must run with RAY_AUTH_MODE=token on every node")
    if not any(str(remote).endswith(".ray/auth_token") for remote in config.get("file_mounts") or {}):
        report.error("file_mounts", "must carry ~/.ray/auth_token: head and workers share one token")


def _check_wandb_netrc(report: Findings, config: Config, base: Path) -> None:
    """The W&B key reaches the nodes as a netrc file that W&B there reads, never as a variable."""
    netrcs = {r: s for r, s in (config.get("file_mounts") or {}).items() if str(r).endswith("netrc")}
    if not netrcs:
        why = "so W&B on the cluster logs offline (docs/cluster.md)"
        report.warn("file_mounts", f"carries no W&B netrc file, {why}")
    commands = [c for lst in (*SETUP_LISTS, *START_LISTS) for c in config.get(lst) or []]
    exported = {node_path(p) for c in commands for p in _NETRC_EXPORT.findall(c)}
    for remote, source in netrcs.items():
        key = f"file_mounts.{remote}"
        if local_source(base, source) == Path.home().joinpath(".netrc").resolve():
            report.warn(
                key,
                "copies your whole ~/.netrc (every password in it) to every node: keep the W&B "
                "key in a file of its own, ~/.raylung/wandb.netrc",
            )
        if node_path(remote) != "~/.netrc" and node_path(remote) not in exported:
            report.error(
                key,
                f"W&B reads a netrc file at ~/.netrc or where NETRC points: setup must export "
                f"NETRC={remote} (in ~/.bashrc, which `ray start` runs under)",
            )


def check_secrets(report: Findings, raw: Config) -> None:
    """No W&B key in any command: it would be in this file, and in Ray's process or job environment."""
    for lst in COMMAND_LISTS:
        for i, command in enumerate(raw.get(lst) or []):
            if not isinstance(command, str):
                continue
            if _KEY_IN_RUNTIME_ENV.search(command):
                report.error(
                    key_of([lst, i]),
                    "passes WANDB_API_KEY in --runtime-env-json: anyone with dashboard access reads a "
                    "runtime env; the nodes read the key from their W&B netrc file (docs/cluster.md)",
                )
            elif _KEY_VALUE.search(command):
                report.error(
                    key_of([lst, i]),
                    "sets WANDB_API_KEY: the key would sit in this file and in the environment of Ray's "
                    "processes; mount a W&B netrc file instead (docs/cluster.md)",
                )
