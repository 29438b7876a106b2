"""A real two-raylet Ray cluster on loopback, started with `ray start` in a temp dir of its own.

A head node (`ray start --head`) and a worker node (`ray start --address`), each with ports of
its own, so several such clusters (other test sessions, the chaos run) live side by side on
one machine and never share a port, a session folder or a process. Ray resolves 127.0.0.1 to
this host's own interface address; nothing leaves the machine.

Used by the test session's shared cluster (conftest.py) and by the chaos run
(benchmarks/chaos_tune.py), which kills its worker node and its Ray Train workers on purpose.
Every process is found by the cluster's session name (and a node's by its raylet's own port),
so stopping or killing never touches another cluster, unlike `ray stop`.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

TRIAL_DRIVER_SLOTS = 4
TRAIN_WORKER_MARKER = b"RayTrainWorker"  # a Ray Train worker's process title (ray::RayTrainWorker...)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ray_env() -> dict[str, str]:
    """Environment for `ray` commands and raylung subprocesses of a test cluster."""
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


def _proc_table() -> dict[int, tuple[int, bytes]]:
    """pid -> (parent pid, command line) of every process that can be read now."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        table[int(entry)] = (ppid, cmdline)
    return table


def _with_descendants(roots: set[int], table: dict[int, tuple[int, bytes]]) -> set[int]:
    owned, grew = set(roots), True
    while grew:
        children = {pid for pid, (ppid, _) in table.items() if ppid in owned} - owned
        owned |= children
        grew = bool(children)
    return owned


def kill_pids(pids: set[int], sig: int = signal.SIGKILL) -> int:
    """Signal each pid; returns how many were still there to receive it."""
    hit = 0
    for pid in pids:
        try:
            os.kill(pid, sig)
            hit += 1
        except ProcessLookupError:
            pass
    return hit


class RayTestCluster:
    """A head node (trial drivers, `head_cpus`) and worker nodes (`worker_cpus` each) on this machine.

    `env` is the environment of every `ray start`, hence of every Ray process the nodes spawn
    (a ``RAY_TRAIN_CALLBACKS`` or ``PYTHONPATH`` set there reaches every Train worker).
    """

    def __init__(
        self,
        env: dict[str, str],
        *,
        head_cpus: int = 1,
        worker_cpus: int = 1,
        driver_slots: int = TRIAL_DRIVER_SLOTS,
        temp_dir: Path | None = None,
    ) -> None:
        self.env = env
        self.head_cpus, self.worker_cpus, self.driver_slots = head_cpus, worker_cpus, driver_slots
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        # Short: Ray's socket paths live under it and a Unix socket path has 107 bytes at most.
        self.temp_dir = temp_dir or Path(f"/tmp/raylung-test-{self.port}")
        self.session = ""
        self.worker_ports: list[int] = []  # node-manager port of each worker node started, in order

    def _ray(self, *args: str) -> str:
        # The `ray` of this interpreter's environment: the venv need not be on PATH.
        ray_cli = str(Path(sys.executable).with_name("ray"))
        done = subprocess.run([ray_cli, *args], env=self.env, capture_output=True, text=True, timeout=180)
        if done.returncode:
            raise RuntimeError(f"ray {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        return done.stdout

    @staticmethod
    def _node_ports() -> list[str]:
        """A node's own ports: two raylets on one host must not meet on Ray's fixed defaults
        (the dashboard agent's 52365, the metrics port), nor on another cluster's."""
        return [
            f"--object-manager-port={free_port()}",
            f"--metrics-export-port={free_port()}",
            f"--dashboard-agent-listen-port={free_port()}",
            f"--dashboard-agent-grpc-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}",
        ]

    def start(self) -> None:
        resources = json.dumps({"raylung_trial_driver": self.driver_slots})
        self._ray(
            "start",
            "--head",
            f"--port={self.port}",
            f"--num-cpus={self.head_cpus}",
            "--num-gpus=0",
            f"--resources={resources}",
            "--node-ip-address=127.0.0.1",
            "--disable-usage-stats",
            f"--dashboard-port={free_port()}",
            f"--node-manager-port={free_port()}",
            *self._worker_port_range(),
            *self._node_ports(),
            f"--temp-dir={self.temp_dir}",
        )
        self.session = (self.temp_dir / "session_latest").resolve().name
        self.add_worker_node()

    @staticmethod
    def _worker_port_range() -> list[str]:
        """Ray's default worker ports (10002-19999) are shared by every cluster on the host;
        each node takes 200 of its own between those and the ephemeral ports (32768 up)."""
        base = 20000 + random.randrange(60) * 200
        return [f"--min-worker-port={base}", f"--max-worker-port={base + 199}"]

    def add_worker_node(self, wait_s: float = 60) -> int:
        """Join a fresh worker node; returns its raylet's node-manager port (its marker)."""
        port = free_port()
        self._ray(
            "start",
            f"--address={self.address}",
            f"--num-cpus={self.worker_cpus}",
            "--num-gpus=0",
            "--disable-usage-stats",
            f"--node-manager-port={port}",
            *self._worker_port_range(),
            *self._node_ports(),
        )
        self.worker_ports.append(port)
        self.wait_for_nodes(1 + self.live_worker_nodes(), wait_s)
        return port

    def live_worker_nodes(self) -> int:
        return sum(1 for port in self.worker_ports if self.node_pids(port))

    def alive_nodes(self) -> list[dict]:
        import ray

        return [n for n in ray.nodes() if n.get("Alive")]

    def wait_for_nodes(self, count: int, timeout_s: float = 60) -> None:
        """With this process connected to Ray, wait until `count` nodes are alive."""
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
        optionally only those whose command line also holds `marker` (and their descendants).

        Found by session name, so other Ray clusters on the machine are never touched, unlike
        `ray stop`, which stops every Ray process of the user."""
        if not self.session:
            return set()
        table = _proc_table()
        session, mark = self.session.encode(), marker.encode()
        roots = {pid for pid, (_, cmd) in table.items() if session in cmd and mark in cmd}
        return _with_descendants(roots, table)

    def node_pids(self, node_manager_port: int) -> set[int]:
        """Every process of one node: its raylet (named by its port), agents and workers."""
        return self.session_pids(f"--node_manager_port={node_manager_port}") or self.session_pids(
            f"--node-manager-port={node_manager_port}"
        )

    def train_worker_pids(self) -> dict[int, int | None]:
        """Ray Train worker processes of this cluster -> the worker node port they run on
        (None: the head node)."""
        table = _proc_table()
        workers = {pid for pid in self.session_pids() if TRAIN_WORKER_MARKER in table.get(pid, (0, b""))[1]}
        on_node = {port: self.node_pids(port) for port in self.worker_ports}
        return {pid: next((p for p, pids in on_node.items() if pid in pids), None) for pid in workers}

    def worker_node_id(self) -> str:
        return next(n["NodeID"] for n in self.alive_nodes() if "node:__internal_head__" not in n["Resources"])

    def kill_node(self, node: str | int) -> int:
        """SIGKILL one node as a machine loss would: its raylet, agents and their workers.
        `node`: a node id (this process connected to Ray) or a worker node's raylet port.
        Returns how many processes were killed."""
        pids = self.node_pids(node) if isinstance(node, int) else self.session_pids(node)
        return kill_pids(pids)

    def stop(self) -> None:
        for sig, wait_s in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 0.0)):
            kill_pids(self.session_pids(), sig)
            deadline = time.monotonic() + wait_s
            while self.session_pids() and time.monotonic() < deadline:
                time.sleep(0.2)
