"""The W&B key stays a secret: found where W&B looks for it, and written nowhere by raylung.

A key in a Ray runtime env is readable by anyone who can see the dashboard or the cluster's
state, so raylung never puts it there: on a cluster each node reads it from its own netrc file,
and on the local Ray a command starts, every actor inherits the driver's environment. Here:
``has_credentials`` looks up the netrc entry of the server W&B will use, as W&B itself does; the
tracker hub on a local Ray finds the key with no runtime env; and a real ``raylung train``
through the CLI, given a distinctive fake key (W&B offline, nothing leaves the machine), leaves it
in no file of its run, no output, no Ray log and no runtime env of its job or its actors.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from conftest import SMOKE, smoke_overrides

from raylung.tracking.wandb_mode import base_url, has_credentials, netrc_machines

# 40 characters W&B accepts as a key, and that appear nowhere unless copied from here.
FAKE_KEY = "raylung_fake_wandb_key_" + "z" * 17
assert len(FAKE_KEY) == 40


def write_netrc(path: Path, machine: str, password: str = FAKE_KEY) -> Path:
    path.write_text(f"machine {machine}\n  login user\n  password {password}\n")
    path.chmod(0o600)
    return path


def wandb_finds_a_key() -> bool:
    """W&B's own lookup (wandb >= 0.31): environment, then the netrc entry of its base URL."""
    from wandb.sdk.lib import wbauth

    return bool(os.environ.get("WANDB_API_KEY")) or wbauth.read_netrc_auth(host=base_url()) is not None


@pytest.fixture
def no_key(monkeypatch, tmp_path):
    """No key in the environment, no ~/.netrc, no NETRC: the credentials each test sets up alone."""
    for name in ("WANDB_API_KEY", "WANDB_BASE_URL", "NETRC"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    return tmp_path


# --- where W&B finds the key ---------------------------------------------------------------


def test_the_default_server_is_wandbs_and_an_older_api_wandb_ai_entry_counts(no_key):
    import wandb

    assert base_url() == wandb.Settings().base_url
    machines = netrc_machines(base_url())
    assert machines[0] == urlsplit(wandb.Settings().base_url).netloc  # what `wandb login` writes
    assert "api.wandb.ai" in machines  # W&B falls back to the host behind its CoreWeave front door


@pytest.mark.parametrize(
    ("base", "machine", "found"),
    [
        pytest.param(None, "DEFAULT", True, id="default-server-as-wandb-login-writes-it"),
        pytest.param(None, "api.wandb.ai", True, id="default-server-older-login"),
        pytest.param(None, "wandb.example.org", False, id="default-server-other-host"),
        pytest.param("https://wandb.example.org:8443", "wandb.example.org:8443", True, id="self-hosted"),
        pytest.param(
            "https://wandb.example.org:8443", "wandb.example.org", False, id="self-hosted-without-port"
        ),
        pytest.param("https://wandb.example.org", "api.wandb.ai", False, id="self-hosted-cloud-entry"),
    ],
)
def test_a_netrc_counts_for_the_server_wandb_will_use(no_key, monkeypatch, base, machine, found):
    if base:
        monkeypatch.setenv("WANDB_BASE_URL", base)
    machine = urlsplit(base_url()).netloc if machine == "DEFAULT" else machine
    monkeypatch.setenv("NETRC", str(write_netrc(no_key / "wandb.netrc", machine)))
    assert has_credentials() is found
    assert wandb_finds_a_key() is found  # the same answer as W&B's own lookup


def test_netrc_path_env_home_and_empty_entries(no_key, monkeypatch):
    machine = urlsplit(base_url()).netloc
    assert not has_credentials()
    write_netrc(no_key / "home" / ".netrc", machine)  # ~/.netrc without NETRC
    assert has_credentials() and wandb_finds_a_key()
    monkeypatch.setenv("NETRC", str(no_key / "missing.netrc"))  # NETRC wins, even when absent
    assert not has_credentials() and not wandb_finds_a_key()
    monkeypatch.setenv("NETRC", str(write_netrc(no_key / "empty.netrc", machine, password='""')))
    assert not has_credentials()  # W&B ignores an entry without a password
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    assert has_credentials()


# --- the tracker hub finds the key without a runtime env ------------------------------------

HUB_PROBE = textwrap.dedent(
    """
    import hashlib, json, os, sys
    import ray
    from ray.util.state import list_actors
    from raylung.cluster.connect import RayTarget, connect
    from raylung.errors import ConfigError
    from raylung.tracking.hub import HubRun, tracker_hub
    from raylung.tracking.wandb_mode import has_credentials

    connect(RayTarget(num_cpus=1))  # a local Ray of this process, as `raylung train` starts it
    with tracker_hub(name="probe-hub") as hub:
        inside = ray.get(hub.__ray_call__.remote(
            lambda self: {
                "credentials": has_credentials(),
                "key_sha256": hashlib.sha256(os.environ.get("WANDB_API_KEY", "").encode()).hexdigest(),
            }
        ))
        address = ray.get_runtime_context().gcs_address
        (actor,) = list_actors(address=address, filters=[("name", "=", "probe-hub")], detail=True)
        online = None
        if not inside["credentials"]:  # (with a key, an online run would go to the network)
            try:
                HubRun(hub, "run", {"mode": "online", "project": "p"})
            except ConfigError as exc:  # raylung's message, not a Ray traceback
                online = str(exc)
    print(json.dumps({**inside, "runtime_env": actor.serialized_runtime_env, "online": online}))
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("source", ["environment", "netrc", "none"])
def test_the_hub_on_a_local_ray_finds_the_key_the_driver_has(tmp_path, source):
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "WANDB_API_KEY", "WANDB_BASE_URL")}
    env.update(WANDB_MODE="offline", WANDB_SILENT="true", RAY_USAGE_STATS_ENABLED="0")
    env["NETRC"] = str(tmp_path / "absent.netrc")
    if source == "environment":
        env["WANDB_API_KEY"] = FAKE_KEY
    elif source == "netrc":
        env["NETRC"] = str(write_netrc(tmp_path / "wandb.netrc", urlsplit(base_url()).netloc))
    done = subprocess.run(
        [sys.executable, "-c", HUB_PROBE], env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    probe = json.loads(done.stdout.strip().splitlines()[-1])
    assert probe["credentials"] is (source != "none")
    # Inherited from the driver's process, never handed over: the actor's runtime env has no key.
    expected = FAKE_KEY if source == "environment" else ""
    assert probe["key_sha256"] == hashlib.sha256(expected.encode()).hexdigest()
    assert "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S" in probe["runtime_env"]  # the env vars are listed there
    assert FAKE_KEY not in probe["runtime_env"] and FAKE_KEY not in done.stdout + done.stderr
    if source == "none":  # an online run the hub cannot log fails at once, saying why
        assert probe["online"].startswith("W&B is online, but the node that logs the runs")


# --- a real run leaves the key nowhere -------------------------------------------------------

# Runs `raylung train` as the console script does, in a process that also records the state
# of its Ray (its job, every actor with its runtime env, every runtime env of the nodes) from a
# thread, twice a second: what anyone with dashboard access could read during the run.
WATCHED_CLI = textwrap.dedent(
    """
    import dataclasses, json, sys, threading, time
    record = sys.argv.pop(1)

    def watch():
        import ray
        from ray.util.state import list_actors, list_jobs, list_runtime_envs

        while True:
            time.sleep(0.5)
            if not ray.is_initialized():
                continue
            try:
                context = ray.get_runtime_context()
                address, job = context.gcs_address, context.get_job_id()
                state = {
                    "jobs": list_jobs(address=address, limit=10000),
                    "actors": list_actors(
                        address=address, filters=[("job_id", "=", job)], detail=True, limit=10000
                    ),
                    "runtime_envs": list_runtime_envs(address=address, detail=True, limit=10000),
                }
            except Exception:  # the cluster going away at the end of the run
                continue
            rows = {k: [dataclasses.asdict(r) if dataclasses.is_dataclass(r) else r for r in v]
                    for k, v in state.items()}
            with open(record, "a") as out:
                out.write(json.dumps(rows, default=str) + "\\n")

    threading.Thread(target=watch, daemon=True).start()
    from raylung.cli.main import main

    sys.argv[0] = "raylung"
    main()
    """
)
FIXED = [  # smoke.yaml's searched fields, fixed: one short training
    "data.augment.policy=none",
    "data.augment.intensity_jitter=0",
    "model.eca_k=3",
    "model.stem_channels=[32,64]",
    "train.lr=0.003",
    "train.epochs=2",
]


def files_with(key: str, *roots: Path) -> list[str]:
    """Every file under `roots` whose bytes contain `key`."""
    needle = key.encode()
    return [
        str(path)
        for root in roots
        for path in sorted(Path(root).rglob("*"))
        if path.is_file() and not path.is_symlink() and needle in path.read_bytes()
    ]


def _train(tmp_path: Path, demo_root: Path, env: dict[str, str]) -> tuple[str, list[dict]]:
    """``raylung train`` on the smoke config with the fake key; its output and the states seen."""
    record, log = tmp_path / "state.jsonl", tmp_path / "output.txt"
    overrides = [
        item for o in [*smoke_overrides(tmp_path / "storage", demo_root), *FIXED] for item in ("--set", o)
    ]
    command = [sys.executable, "-c", WATCHED_CLI, str(record), "train", str(SMOKE), *overrides]
    with open(log, "w") as out:
        done = subprocess.run(
            [*command, "--output", str(tmp_path / "run")],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=600,
        )
    output = log.read_text()
    assert done.returncode == 0, output[-5000:]
    states = [json.loads(line) for line in record.read_text().splitlines()]
    assert states, "the watcher never saw the run's Ray"
    return output, states


def _assert_runtime_envs_clean(states: list[dict]) -> None:
    seen = json.dumps(states)
    assert FAKE_KEY not in seen, "the key is in a runtime env, job or actor of the run's Ray"
    hubs = [a for state in states for a in state["actors"] if a["class_name"] == "_Hub"]  # this job's
    assert hubs, "the tracker hub never showed up, so its runtime env was not read"
    # The runtime envs were there to read: raylung's own env vars are in them.
    assert all("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S" in (hub["serialized_runtime_env"] or "") for hub in hubs)


def _key_env(tmp_path: Path) -> dict[str, str]:
    """This session's environment with the fake key both ways: variable and netrc file."""
    env = dict(os.environ, WANDB_API_KEY=FAKE_KEY, WANDB_MODE="offline", WANDB_SILENT="true")
    env["NETRC"] = str(write_netrc(tmp_path / "wandb.netrc", urlsplit(base_url()).netloc))
    env.pop("WANDB_BASE_URL", None)
    return env


@pytest.mark.slow
def test_a_cli_train_on_a_cluster_leaves_the_key_nowhere(ray_cluster, demo_root, tmp_path):
    """Attached to the session's cluster (RAY_ADDRESS), as a job on a real cluster is."""
    from ray.util.state import list_actors, list_jobs

    env = _key_env(tmp_path)
    assert env["RAY_ADDRESS"] == ray_cluster.address
    jobs_before = {job.job_id for job in list_jobs(address=ray_cluster.address, limit=10000)}
    output, states = _train(tmp_path, demo_root, env)

    _assert_runtime_envs_clean(states)
    # After the run, from this process: the job's table entry and all of its actors, dead ones too.
    (job,) = [j for j in list_jobs(address=ray_cluster.address, limit=10000) if j.job_id not in jobs_before]
    actors = list_actors(
        address=ray_cluster.address, filters=[("job_id", "=", job.job_id)], detail=True, limit=10000
    )
    assert "_Hub" in {actor.class_name for actor in actors}
    assert FAKE_KEY not in json.dumps([job.__dict__, *(actor.__dict__ for actor in actors)], default=str)
    assert FAKE_KEY not in output
    assert files_with(FAKE_KEY, tmp_path / "run", tmp_path / "storage") == []
    assert files_with(FAKE_KEY, ray_cluster.temp_dir / "session_latest" / "logs") == []
    assert list((tmp_path / "run").rglob("offline-run-*")), "W&B wrote no offline run: the hub did not log"


@pytest.mark.slow
def test_a_cli_train_on_its_own_local_ray_leaves_the_key_nowhere(demo_root, tmp_path):
    """No address: the command starts a local Ray, whose actors (the hub) inherit the key."""
    ray_tmp = Path(tempfile.mkdtemp(prefix="rls", dir="/tmp"))  # short: Ray's socket paths must fit
    env = _key_env(tmp_path)
    env.pop("RAY_ADDRESS", None)
    env["RAY_TMPDIR"] = str(ray_tmp)
    try:
        output, states = _train(tmp_path, demo_root, env)
        _assert_runtime_envs_clean(states)
        assert FAKE_KEY not in output
        assert files_with(FAKE_KEY, tmp_path / "run", tmp_path / "storage") == []
        sessions = list((ray_tmp / "ray").glob("session_2*/logs"))
        assert len(sessions) == 1 and any(sessions[0].iterdir())
        assert files_with(FAKE_KEY, sessions[0]) == []
        assert list((tmp_path / "run").rglob("offline-run-*"))
    finally:
        time.sleep(1)  # the local Ray's processes end with the command
        shutil.rmtree(ray_tmp, ignore_errors=True)
