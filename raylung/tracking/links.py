"""Where to look at a run online: the W&B project, group and run URLs raylung prints.

raylung silences W&B's own console lines (one per run, per trial, would drown the progress),
so it prints the links itself, at the start and the end of ``train`` and ``tune``. The URLs
come from W&B's settings (its app URL follows ``WANDB_BASE_URL``, so a self-hosted server
gets its own links) and the entity: the configured one, else the account's default, asked of
the server once with a short timeout. Offline and disabled runs have no links.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import quote

log = logging.getLogger(__name__)

ENTITY_TIMEOUT_S = 5.0


class WandbSite(Protocol):
    """The two facts a link needs: W&B's app URL and the entity (``wandb.Settings`` has both)."""

    app_url: str
    entity: str | None


@dataclass(frozen=True)
class WandbLinks:
    project: str
    group: str | None = None
    runs: dict[str, str] = field(default_factory=dict)  # run name -> URL

    def lines(self) -> list[str]:
        out = [f"W&B project: {self.project}"]
        if self.group:
            out.append(f"W&B group:   {self.group}")
        out += [f"W&B run {name}: {url}" for name, url in self.runs.items()]
        return out


def wandb_links(
    site: WandbSite, project: str, group: str | None = None, runs: dict[str, str] | None = None
) -> WandbLinks | None:
    """Links for `project` (and its `group`, and `runs`: name -> run id); None without an entity."""
    if not site.entity:
        return None
    base = f"{site.app_url.rstrip('/')}/{quote(site.entity)}/{quote(project)}"
    return WandbLinks(
        project=base,
        group=f"{base}/groups/{quote(group, safe='')}" if group else None,
        runs={name: f"{base}/runs/{quote(run_id, safe='=+&$@')}" for name, run_id in (runs or {}).items()},
    )


@dataclass(frozen=True)
class _Site:
    app_url: str
    entity: str | None


def wandb_settings() -> Any:
    """W&B's settings as ``wandb.init`` would see them: its settings files, then ``WANDB_*``."""
    import os

    import wandb

    settings = wandb.Settings(silent=True)
    settings.update_from_system_settings()
    settings.update_from_env_vars(dict(os.environ))
    return settings


def online_site(entity: str | None) -> WandbSite:
    """W&B's app URL from its settings; the entity given, else the account's default entity.

    The default entity needs the server; if it does not answer within seconds the links are
    left out (training never waits on them).
    """
    settings = wandb_settings()
    app_url, entity = settings.app_url, entity or settings.entity
    if entity:
        return _Site(app_url, entity)
    return _Site(app_url, default_entity())


def default_entity(deadline_s: float = ENTITY_TIMEOUT_S) -> str | None:
    """The account's default entity, or None if the server does not say so within `deadline_s`.

    W&B's client retries on its own; a daemon thread bounds the whole wait.
    """
    import threading

    found: list[str | None] = []

    def ask() -> None:
        import wandb

        try:
            found.append(wandb.Api(timeout=deadline_s).default_entity)
        except Exception as exc:  # noqa: BLE001 - links are a courtesy; say why they are missing
            log.debug("W&B default entity not available: %s", exc)

    thread = threading.Thread(target=ask, name="wandb-entity", daemon=True)
    thread.start()
    thread.join(deadline_s)
    return found[0] if found else None


def links_for(wandb_cfg: Any, mode: str, group: str, runs: dict[str, str] | None = None) -> WandbLinks | None:
    """The links of an online run or search (`wandb_cfg` a ``WandbConfig``); None when not online."""
    if mode != "online":
        return None
    return wandb_links(online_site(wandb_cfg.entity), wandb_cfg.project, wandb_cfg.group or group, runs)


def announce(links: WandbLinks | None) -> None:
    """Say where the online run(s) are, one line per link (nothing when not online)."""
    for line in links.lines() if links else ():
        log.info("%s", line)
