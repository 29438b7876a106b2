"""Weights & Biases: online when the user has credentials, offline otherwise, never a secret.

raylung must work on a machine with no W&B account: ``mode: auto`` logs online only when an
API key is available (``WANDB_API_KEY`` or a prior ``wandb login``, which writes ~/.netrc) and
otherwise writes offline run files that ``wandb sync`` uploads later. Run files always go
inside the experiment (``dir=``) rather than W&B's default location. The key itself is only
ever checked for presence; it is never logged, printed or put in a config.
"""

from __future__ import annotations

import netrc
import os
from pathlib import Path
from typing import Any, Literal

from raylung.config import WandbConfig
from raylung.errors import ConfigError

Mode = Literal["online", "offline", "disabled"]
WANDB_HOST = "api.wandb.ai"


def has_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    path = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return netrc.netrc(str(path)).authenticators(WANDB_HOST) is not None
    except (FileNotFoundError, netrc.NetrcParseError, PermissionError):
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
            "wandb.mode is online but no W&B credentials were found: set WANDB_API_KEY, run "
            "`wandb login`, or use wandb.mode: offline (sync later with `wandb sync`)"
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
    """The `offline-run-*` folders W&B wrote under `root` (what `wandb sync` uploads)."""
    return sorted(p for p in root.rglob("offline-run-*") if p.is_dir())
