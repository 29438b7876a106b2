"""Weights & Biases: online when the user has credentials, offline otherwise, never a secret.

raylung must work on a machine with no W&B account: ``mode: auto`` logs online only when an
API key is available (``WANDB_API_KEY``, or a netrc file as ``wandb login`` writes it: ``$NETRC``
or ~/.netrc) and otherwise writes offline run files that ``wandb sync`` uploads later. Run files
always go inside the experiment (``dir=``) rather than W&B's default location. The key itself is
only ever checked for presence; it is never logged, printed, put in a config or in a Ray
runtime environment (a cluster node reads it from its own netrc: docs/cluster.md).

With credentials, the server is probed once, on the driver, before anything is created or Ray
starts (:mod:`.reachability`): ``auto`` falls back to offline with one warning, an explicit
``online`` stops with one error line. The decision travels down to every run (hub, trials,
summary, links), so no worker decides again, or waits on a server that is not there.
"""

from __future__ import annotations

import logging
import netrc
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from raylung.config import WandbConfig
from raylung.errors import ConfigError
from raylung.tracking.lapses import sync_hint
from raylung.tracking.reachability import check_server

log = logging.getLogger(__name__)

Mode = Literal["online", "offline", "disabled"]

# A server gone mid-run: a new run falls back to offline after this (W&B's default is 90 s) ...
INIT_TIMEOUT_S = 30.0
# ... and a run's end waits no longer for uploads (W&B's default retries for ~10 min); the rest
# stays in the run's folder for `wandb sync`.
FINISH_TIMEOUT_S = 60.0


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


@dataclass(frozen=True)
class ModeDecision:
    """The mode a command logs in, and why it is offline when the user asked for auto."""

    mode: Mode
    fallback: str | None = None  # "W&B server URL refused the connection"

    def announce(self, runs_dir: Path) -> Mode:
        """Say, in one line naming the run files' folder, that runs log offline, not online
        (called once per command, when its run folder is known); returns the mode."""
        if self.fallback:
            folder = runs_dir / "wandb"  # W&B writes its run folders there (wandb.init(dir=...))
            log.warning(
                "%s: logging offline instead, to %s (upload later: %s)",
                self.fallback,
                folder,
                sync_hint(folder),
            )
        return self.mode


def decide_mode(cfg: WandbConfig) -> ModeDecision:
    """The W&B mode of one command, decided on the driver before anything starts.

    Online needs credentials (a clear error, not a hang) and a server that answers a probe
    within seconds: ``auto`` falls back to offline, an explicit ``online`` is an error.
    ``WANDB_MODE`` in the environment is the user's word and is never second-guessed.
    """
    env_mode = os.environ.get("WANDB_MODE")
    if env_mode in ("offline", "disabled", "dryrun"):
        return ModeDecision("disabled" if env_mode == "disabled" else "offline")
    if cfg.mode in ("offline", "disabled"):
        return ModeDecision(cfg.mode)
    if not has_credentials():
        if cfg.mode == "online":
            raise ConfigError(
                f"wandb.mode is online but no W&B credentials for {base_url()} were found: run `wandb "
                "login` (or set WANDB_API_KEY), or use wandb.mode: offline (sync later with `wandb sync`)"
            )
        return ModeDecision("offline")
    if env_mode:  # WANDB_MODE=online: asked for, not probed
        return ModeDecision("online")
    url = base_url()
    reach = check_server(url)
    log.debug("W&B server %s %s (%.2f s)", url, reach.reason, reach.seconds)
    if reach.reachable:
        return ModeDecision("online")
    where = f"W&B server {url} {reach.reason}"
    if cfg.mode == "online":
        raise ConfigError(
            f"wandb.mode is online but the {where}: check the network or proxy (HTTPS_PROXY), or use "
            "wandb.mode: auto (logs offline when the server is out of reach) or offline"
        )
    return ModeDecision("offline", where)


def resolve_mode(cfg: WandbConfig, runs_dir: Path | None = None) -> Mode:
    """:func:`decide_mode`, announced for the runs under `runs_dir`: for one-off callers;
    a command that starts several runs decides once and passes the decision down."""
    decision = decide_mode(cfg)
    return decision.announce(runs_dir) if runs_dir is not None else decision.mode


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
        "settings": wandb.Settings(
            silent=True,
            console="off",
            disable_git=True,
            x_disable_stats=True,
            init_timeout=INIT_TIMEOUT_S,
            finish_timeout=FINISH_TIMEOUT_S,
        ),
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
