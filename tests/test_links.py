"""Where to look: W&B project/group/run URLs for online runs, from W&B's own settings."""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass

import pytest

from raylung.config import WandbConfig
from raylung.tracking.links import default_entity, links_for, online_site, wandb_links


@dataclass
class StubSite:  # W&B's settings where the real service cannot be reached
    app_url: str
    entity: str | None


def test_links_are_the_project_group_and_run_pages():
    links = wandb_links(
        StubSite("https://wandb.example/", "lab one"), "raylung", "ours 2026/12", {"r": "run-1"}
    )
    assert links.project == "https://wandb.example/lab%20one/raylung"
    assert links.group == "https://wandb.example/lab%20one/raylung/groups/ours%202026%2F12"
    assert links.runs == {"r": "https://wandb.example/lab%20one/raylung/runs/run-1"}
    assert links.lines()[0] == "W&B project: https://wandb.example/lab%20one/raylung"
    assert wandb_links(StubSite("https://wandb.example", None), "raylung") is None  # no entity: no link


def test_settings_follow_a_self_hosted_server(monkeypatch):
    """Real W&B settings: WANDB_BASE_URL and WANDB_ENTITY decide the links, no network used."""
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("WANDB_ENTITY", "pathology")
    site = online_site(None)
    assert (site.app_url, site.entity) == ("http://127.0.0.1:9", "pathology")
    links = links_for(WandbConfig(project="lung"), "online", "smoke-1", {"run": "run-ab"})
    assert links.runs["run"] == "http://127.0.0.1:9/pathology/lung/runs/run-ab"
    assert links.group == "http://127.0.0.1:9/pathology/lung/groups/smoke-1"
    assert links_for(WandbConfig(project="lung", group="mine"), "online", "smoke-1").group.endswith(
        "/groups/mine"
    )
    assert links_for(WandbConfig(), "offline", "smoke-1") is None


def test_a_server_that_never_answers_costs_only_the_deadline(monkeypatch):
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)  # accepts the connection, never replies
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{silent.getsockname()[1]}")
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    start = time.monotonic()
    try:
        assert default_entity(deadline_s=1.0) is None
    finally:
        silent.close()
    assert time.monotonic() - start < 6.0


@pytest.mark.parametrize("mode", ["offline", "disabled"])
def test_no_links_unless_online(mode):
    assert links_for(WandbConfig(entity="lab"), mode, "g") is None
