"""Weights & Biases: online when the user has credentials, offline otherwise, never a secret.

raylung must work on a machine with no W&B account: ``mode: auto`` logs online only when an
API key is available (``WANDB_API_KEY``, or a netrc file as ``wandb login`` writes it: ``$NETRC``
or ~/.netrc) and otherwise writes offline run files that ``wandb sync`` uploads later. Run files
always go inside the experiment (``dir=``) rather than W&B's default location. The key itself is
only ever checked for presence; it is never logged, printed, put in a config or in a Ray
runtime environment (a cluster node reads it from its own netrc: docs/cluster.md).
"""

from __future__ import annotations

import netrc
import os
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from raylung.config import WandbConfig
from raylung.errors import ConfigError

Mode = Literal["online", "offline", "disabled"]


def base_url() -> str:
    """The W&B server runs talk to: ``WANDB_BASE_URL``, else the installed wandb's default."""
    if url := os.environ.get("WANDB_BASE_URL"):
        return url
    import wandb

    return wandb.Settings().base_url  # https://api.forge.coreweave.com in wandb 0.31


def netrc_path() -> Path:
    """The netrc file wandb reads: ``$NETRC``, else ~/.netrc (or ~/_netrc if only that exists)."""
    if path := os.environ.get("NETRC"):
        return Path(path).expanduser()
    home = Path.home()
    return next((p for p in (home / ".netrc", home / "_netrc") if p.exists()), home / ".netrc")


def netrc_machines(url: str) -> list[str]:
    """The netrc machine names wandb looks up for `url`, in its order.

    The URL's host (with its port, as wandb writes it); for W&B's CoreWeave front door also the
    W&B host behind it, so an entry for ``api.wandb.ai`` (older ``wandb login``) still counts.
    """
    machines = [urlsplit(url).netloc]
    try:
        from wandb.sdk.lib.urls import forge_upstream_url  # wandb >= 0.31
    except ImportError:
        return machines
    upstream = urlsplit(forge_upstream_url(url)).netloc
    return machines if upstream in machines else [*machines, upstream]


def has_credentials() -> bool:
    """Whether wandb will find an API key for the server it will use (the key is not read out)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        entries = netrc.netrc(str(netrc_path()))
    except (OSError, netrc.NetrcParseError):
        return False
    for machine in netrc_machines(base_url()):
        if (found := entries.authenticators(machine)) is not None:
            return bool(found[2])  # wandb ignores an entry without a password
    return False


def resolve_mode(cfg: WandbConfig) -> Mode:
    """The W&B mode to use; `online` without credentials is a clear error, not a hang."""
    env_mode = os.environ.get("WANDB_MODE")
    if env_mode in ("offline", "disabled", "dryrun"):
        return "disabled" if env_mode == "disabled" else "offline"
    if cfg.mode == "auto":
        return "online" if has_credentials() else "offline"
    if cfg.mode == "online" and not has_credentials():
        raise ConfigError(
            f"wandb.mode is online but no W&B credentials for {base_url()} were found: run `wandb "
            "login` (or set WANDB_API_KEY), or use wandb.mode: offline (sync later with `wandb sync`)"
        )
    return cfg.mode


def init_kwargs(
    cfg: WandbConfig,
    mode: Mode,
    run_dir: Path,
    *,
    group: str,
    name: str | None = None,
    run_id: str | None = None,
    config: dict[str, Any] | None = None,
    job_type: str = "train",
) -> dict[str, Any]:
    """Keyword arguments for ``wandb.init``: the one description of a run, wherever it starts."""
    import wandb

    run_dir.mkdir(parents=True, exist_ok=True)
    kwargs: dict[str, Any] = {
        "project": cfg.project,
        "group": cfg.group or group,
        "mode": mode,
        "dir": str(run_dir),
        "job_type": job_type,
        "tags": list(cfg.tags),
        # Several runs may be open in one process (the tracker hub holds one per trial).
        "reinit": "create_new",
        "settings": wandb.Settings(silent=True, console="off", disable_git=True, x_disable_stats=True),
    }
    if cfg.entity:
        kwargs["entity"] = cfg.entity
    if name:
        kwargs["name"] = name
    if run_id:
        kwargs["id"] = run_id
        kwargs["resume"] = "allow"
    if config is not None:
        kwargs["config"] = config
    return kwargs


def offline_run_dirs(root: Path) -> list[Path]:
    """The `offline-run-*` folders W&B wrote under `root` (what `wandb sync` uploads), less
    those a resumed run's complete folder superseded (:mod:`.segments`)."""
    return sorted(p for p in root.rglob("offline-run-*") if p.is_dir() and p.parent.name != "superseded")
