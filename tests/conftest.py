"""Shared fixtures: where the real LC25000 dev images are, and small helpers.

The real images live beside the checkout in ../shared/data (or $RAYLUNG_SHARED_DATA); they are
never copied into the repository. Tests that need them skip, with the reason, where absent.
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

# The test cluster uses token authentication, as Ray >= 2.59 clusters do, with a token of the
# session's own (a fresh CI machine has no ~/.ray/auth_token, and `ray start` won't make one).
# Ray reads its auth mode when first imported, so this runs before anything imports ray.
os.environ.setdefault("RAY_AUTH_MODE", "token")
os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))

import pytest  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    return Path(os.environ.get("RAYLUNG_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="module")
def one_torch_thread():
    """On 2 shared cores, two OpenMP threads slow 100-fold whenever another process is busy."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def lc25000_root() -> Path:
    """The LC25000 lung dev set (1,000 real H&E tiles, 518 original-tile groups)."""
    root = shared_data_dir() / "lc25000_lung_dev"
    if not (root / "manifest.csv").is_file():
        pytest.skip(f"LC25000 dev set not found at {root} (set RAYLUNG_SHARED_DATA)")
    return root


# --- one real two-node Ray cluster for the whole session -----------------------------------
# Ray Train / Tune tests share it (starting Ray costs ~10 s on 2 cores). It is a real
# `ray start --head` plus a second raylet joined with `ray start --address`, one CPU each, so
# a two-worker training run always spans two nodes, and CLI subprocesses attach through
# RAY_ADDRESS exactly as users attach with --address. Ray resolves 127.0.0.1 to this host's
# own interface address; nothing leaves the machine.

TRIAL_DRIVER_SLOTS = 4


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ray_env() -> dict[str, str]:
    """Environment for `ray` commands and raylung subprocesses of the test cluster."""
    env = dict(os.environ)
    env.update(
        RAY_AUTH_MODE="token",  # Ray >= 2.59: the head and joining nodes must agree
        RAY_USAGE_STATS_ENABLED="0",
        WANDB_MODE="offline",
        WANDB_SILENT="true",
        PYTHONUNBUFFERED="1",
    )
    env.pop("WANDB_API_KEY", None)
    # A W&B service this process started (a unit test's run) is not the cluster's to share.
    env.pop("WANDB_SERVICE", None)
    return env


class RayTestCluster:
    """A head node (drivers, 1 CPU) and one worker node (1 CPU) on this machine."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.temp_dir = Path(f"/tmp/raylung-test-{self.port}")
        self.session = ""

    def _ray(self, *args: str) -> str:
        import subprocess

        # The `ray` of this interpreter's environment: the venv need not be on PATH.
        ray_cli = str(Path(sys.executable).with_name("ray"))
        done = subprocess.run([ray_cli, *args], env=self.env, capture_output=True, text=True, timeout=180)
        if done.returncode:
            raise RuntimeError(f"ray {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        return done.stdout

    def start(self) -> None:
        import json

        resources = json.dumps({"raylung_trial_driver": TRIAL_DRIVER_SLOTS})
        self._ray(
            "start",
            "--head",
            f"--port={self.port}",
            "--num-cpus=1",
            "--num-gpus=0",
            f"--resources={resources}",
            "--node-ip-address=127.0.0.1",
            "--disable-usage-stats",
            f"--dashboard-port={free_port()}",
            f"--temp-dir={self.temp_dir}",
        )
        self.session = (self.temp_dir / "session_latest").resolve().name
        self.add_worker_node()

    def add_worker_node(self) -> None:
        self._ray(
            "start", f"--address={self.address}", "--num-cpus=1", "--num-gpus=0", "--disable-usage-stats"
        )
        self.wait_for_nodes(2)

    def alive_nodes(self) -> list[dict]:
        import ray

        return [n for n in ray.nodes() if n.get("Alive")]

    def wait_for_nodes(self, count: int, timeout_s: float = 60) -> None:
        import time

        import ray

        if not ray.is_initialized():
            return
        deadline = time.monotonic() + timeout_s
        while len(self.alive_nodes()) != count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"expected {count} live Ray nodes, have {len(self.alive_nodes())}")
            time.sleep(0.5)

    def session_pids(self, marker: str = "") -> set[int]:
        """This cluster's processes (GCS, raylets, agents) and all their descendants (workers),
        optionally only those of one node (`marker` = its node id).

        Found by session name, so other Ray clusters on the machine are never touched, unlike
        `ray stop`, which stops every Ray process of the user."""
        owned, parents = set(), {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            parents[int(entry)] = ppid
            if self.session and self.session.encode() in cmdline and marker.encode() in cmdline:
                owned.add(int(entry))
        grew = True
        while grew:
            children = {pid for pid, ppid in parents.items() if ppid in owned} - owned
            owned |= children
            grew = bool(children)
        return owned

    def worker_node_id(self) -> str:
        return next(n["NodeID"] for n in self.alive_nodes() if "node:__internal_head__" not in n["Resources"])

    def kill_node(self, node_id: str) -> None:
        """SIGKILL one node as a machine loss would: its raylet, agents and their workers."""
        import signal

        for pid in self.session_pids(node_id):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def stop(self) -> None:
        import signal
        import time

        for sig, wait_s in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 0.0)):
            for pid in self.session_pids():
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + wait_s
            while self.session_pids() and time.monotonic() < deadline:
                time.sleep(0.2)


@pytest.fixture(scope="session")
def ray_cluster():
    """The session's two-node Ray cluster; this process is connected to it."""
    import ray

    env = ray_env()
    cluster = RayTestCluster(env)
    cluster.start()
    for key in ("RAY_AUTH_MODE", "RAY_USAGE_STATS_ENABLED", "WANDB_MODE", "WANDB_SILENT"):
        os.environ[key] = env[key]
    os.environ.pop("WANDB_API_KEY", None)
    os.environ["RAY_ADDRESS"] = cluster.address
    from raylung.cluster.connect import RayTarget, connect

    connect(RayTarget(address=cluster.address))
    cluster.wait_for_nodes(2)
    yield cluster
    ray.shutdown()
    os.environ.pop("RAY_ADDRESS", None)
    cluster.stop()


@pytest.fixture(scope="session")
def ray_address(ray_cluster) -> str:
    return ray_cluster.address


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory) -> Path:
    """The synthetic demo dataset (paper layout), written once per session."""
    from raylung.data import make_demo_dataset

    return make_demo_dataset(tmp_path_factory.mktemp("demo") / "demo_data", per_subclass=30)


SMOKE = REPO_ROOT / "search_spaces" / "smoke.yaml"


def smoke_overrides(storage: Path, root: Path, *extra: str) -> list[str]:
    """search_spaces/smoke.yaml pointed at test folders, W&B offline."""
    return [
        f"experiment.storage={storage}",
        f"data.root={root}",
        f"data.cache_dir={storage / 'cache'}",
        "wandb.mode=offline",
        *extra,
    ]


@pytest.fixture(scope="session")
def smoke(ray_address, demo_root, tmp_path_factory):
    """A finished smoke tune (4 trials, ASHA, W&B offline) shared by the tune and report tests."""
    from raylung.config.loading import load_config
    from raylung.workflows import tune as workflow

    storage = tmp_path_factory.mktemp("tune")
    loaded = load_config(SMOKE, smoke_overrides(storage, demo_root, "search.num_samples=4"))
    return workflow.tune(loaded)
