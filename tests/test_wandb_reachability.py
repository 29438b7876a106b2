"""W&B can never stop training: an unreachable server, a failing call, a dead tracker hub.

Real sockets on 127.0.0.1 (tests/fake_wandb_server.py) stand in for the server; real W&B
offline run files are read back; the tracker hub is a real actor whose process is killed.
"""

from __future__ import annotations

import logging
import os
import signal
import time

import pytest
from conftest import start_raylung
from fake_wandb_server import FakeWandbServer
from run_factory import write_tiny_yaml
from wandb_records import history_rows

from raylung.config import WandbConfig
from raylung.errors import ConfigError
from raylung.tracking import Tracker, check_server, decide_mode, init_kwargs, teardown
from raylung.tracking.lapses import LAPSES

FAKE_KEY = "0123456789abcdef0123456789abcdef01234567"  # never sent anywhere but 127.0.0.1


@pytest.mark.parametrize(
    ("mode", "reachable", "reason"),
    [
        ("refuse", False, "refused the connection"),
        ("close", False, "closed the connection without a reply"),
        ("http-502", False, "answered 502 Bad Gateway"),
        ("http-401", True, "answered 401"),
    ],
)
def test_check_server_tells_each_answer(mode, reachable, reason):
    with FakeWandbServer(mode) as server:
        found = check_server(server.url)
    assert found.reachable is reachable
    assert found.reason.startswith(reason)
    assert found.seconds < 2


def test_unknown_host_is_unreachable():
    found = check_server("http://no-such-host.invalid")
    assert (found.reachable, found.reason) == (False, "unknown host")


def test_the_probe_goes_through_the_proxy_as_wandb_would(monkeypatch):
    """A proxy that cannot reach the server answers 502: out of reach, though the proxy is up."""
    with FakeWandbServer("http-502") as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        found = check_server("http://wandb.invalid")
    assert (found.reachable, found.reason.split(" (")[0]) == (False, "answered 502 Bad Gateway")


def test_silent_server_costs_at_most_the_bound():
    with FakeWandbServer("silent") as server:
        found = check_server(server.url, timeout_s=5.0)
    assert (found.reachable, found.reason) == (False, "did not answer within 5 s")
    assert found.seconds < 5.0 + 1.5  # a bound on the whole probe, not a benchmark


@pytest.fixture
def credentials(monkeypatch):
    """A key W&B would use, and no WANDB_MODE (the test session sets offline)."""
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    monkeypatch.delenv("WANDB_MODE", raising=False)


def test_auto_falls_back_offline_with_one_line_and_online_fails_fast(
    credentials, monkeypatch, caplog, tmp_path
):
    with FakeWandbServer("refuse") as server:
        monkeypatch.setenv("WANDB_BASE_URL", server.url)
        decision = decide_mode(WandbConfig(mode="auto"))
        assert decision.mode == "offline"
        with caplog.at_level(logging.WARNING, logger="raylung.tracking"):
            decision.announce(tmp_path / "wandb")
        folder = tmp_path / "wandb" / "wandb"
        assert [r.getMessage() for r in caplog.records] == [
            f"W&B server {server.url} refused the connection: logging offline instead, to {folder} "
            f"(upload later: wandb sync {folder})"
        ]
        with pytest.raises(ConfigError, match="online but the W&B server .* refused the connection"):
            decide_mode(WandbConfig(mode="online"))


def test_offline_disabled_and_wandb_mode_never_probe(credentials, monkeypatch):
    with FakeWandbServer("silent") as server:
        monkeypatch.setenv("WANDB_BASE_URL", server.url)
        started = time.monotonic()
        assert decide_mode(WandbConfig(mode="offline")).mode == "offline"
        assert decide_mode(WandbConfig(mode="disabled")).mode == "disabled"
        monkeypatch.setenv("WANDB_MODE", "online")
        assert decide_mode(WandbConfig(mode="auto")).mode == "online"
        monkeypatch.setenv("WANDB_MODE", "offline")
        assert decide_mode(WandbConfig(mode="online")).mode == "offline"
        assert time.monotonic() - started < 1  # a probe of the silent server would take 5 s


def test_failing_calls_are_skipped_and_said_once(tmp_path, caplog):
    tracker = Tracker.start(init_kwargs(WandbConfig(), "offline", tmp_path, group="g", name="n"))
    tracker.log_epoch({"epoch": 1, "loss": 0.5})
    tracker._run.finish()  # W&B refuses every call of a finished run, as of a broken one
    LAPSES.count = 0
    with caplog.at_level(logging.DEBUG, logger="raylung.tracking"):
        tracker.log_epoch({"epoch": 2, "loss": 0.4})
        tracker.summary({"best": 1})
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "W&B log failed" in warnings[0].getMessage()
    assert "wandb sync" in warnings[0].getMessage() and str(tmp_path) in warnings[0].getMessage()
    assert any("W&B summary failed" in r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG)
    teardown()  # W&B's service writes the run file out (as the tracker hub does when it closes)
    (run_file,) = tmp_path.rglob("*.wandb")
    assert [row["loss"] for row in history_rows(run_file)] == [0.5]


def _unreachable_env(url: str) -> dict[str, str]:
    """The test cluster's environment with a W&B key and server, and no WANDB_MODE."""
    env = {k: v for k, v in os.environ.items() if k != "WANDB_MODE"}
    env.update(WANDB_API_KEY=FAKE_KEY, WANDB_BASE_URL=url)
    return env


@pytest.mark.slow
def test_train_with_unreachable_server_logs_offline(ray_address, demo_root, tmp_path):
    config = write_tiny_yaml(tmp_path / "tiny.yaml", demo_root, tmp_path, epochs=1)
    run_dir = tmp_path / "run"
    with FakeWandbServer("refuse") as server:
        env = _unreachable_env(server.url)
        started = time.monotonic()
        online = start_raylung(
            "train", str(config), "--output", str(run_dir), "-s", "wandb.mode=online", env=env
        )
        out, _ = online.communicate(timeout=120)
        assert online.returncode == 2, out
        (error,) = [line for line in out.splitlines() if line.startswith("error:")]
        assert "refused the connection" in error and "Traceback" not in out
        assert not run_dir.exists()

        auto = start_raylung("train", str(config), "--output", str(run_dir), "-s", "wandb.mode=auto", env=env)
        out, _ = auto.communicate(timeout=300)
    assert auto.returncode == 0, out
    folder = run_dir / "wandb" / "wandb"
    assert out.count("refused the connection: logging offline instead") == 1, out
    assert f"to {folder} (upload later: wandb sync {folder})" in out
    (run_file,) = folder.rglob("run-*.wandb")
    assert run_file.parent.name.startswith("offline-run-")
    assert [row["epoch"] for row in history_rows(run_file) if "val_loss" in row] == [1]
    print(f"online refused: exit 2; auto: exit 0; {time.monotonic() - started:.1f} s in all")


def _hub_pid(name: str) -> int:
    from ray.util.state import list_actors

    (actor,) = list_actors(filters=[("name", "=", name), ("state", "=", "ALIVE")])
    return actor.pid


@pytest.mark.slow
def test_dead_tracker_hub_costs_the_logging_not_the_training(ray_address, tmp_path, caplog):
    """The hub's process killed by PID mid-run: Ray Train's report callback (the very call the
    controller makes after each epoch) and the driver's run calls go on, with one warning."""
    from raylung.tracking.hub import HubRun, tracker_hub

    LAPSES.count = 0
    init = init_kwargs(WandbConfig(), "offline", tmp_path / "wandb", group="g", name="run")
    with (
        caplog.at_level(logging.DEBUG, logger="raylung.tracking"),
        tracker_hub(True, "raylung-hub-kill") as hub,
    ):
        run = HubRun(hub, "run", init)
        (logger,) = run.report_callbacks()
        logger.after_report(None, [{"epoch": 1, "val_loss": 0.5}], None)
        os.kill(_hub_pid("raylung-hub-kill"), signal.SIGKILL)
        logger.after_report(None, [{"epoch": 2, "val_loss": 0.4}], None)  # no exception: training goes on
        logger.after_report(None, [{"epoch": 3, "val_loss": 0.3}], None)
        run.summary({"best_epoch": 3})
        assert run.finish() is None
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("W&B log (the tracker hub is gone) failed")
    assert f"wandb sync {tmp_path / 'wandb' / 'wandb'}" in warnings[0]
