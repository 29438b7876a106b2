"""The chaos run's fault injector: seeded, bounded in time, and recording what it did.

Faults, each on the chaos run's own cluster only (processes are found by its session name,
tests/ray_cluster.py):

* ``worker_kill``: SIGKILL a random Ray Train worker process (its process title names it);
* ``node_kill``: SIGKILL every process of the worker node's raylet, as a machine loss would,
  then join a fresh worker node `node_restart_s` later;
* ``driver_kill``: SIGKILL the process group of the ``raylung tune`` driver (done by the run,
  which chooses the moment: see chaos_tune.py);
* ``storage_freeze``: make the experiment's storage unwritable for a window -- ``chattr -R +i``
  as root (root ignores permission bits, so ``chmod`` would bind nothing), ``chmod -R a-w``
  otherwise -- with a probe write that must fail inside the window and succeed after it.

Every draw comes from one ``random.Random(seed)``; every wait has a deadline, and a fault
whose target never appears is recorded as skipped instead of blocking the run.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

WORKER_KILL, NODE_KILL, DRIVER_KILL, STORAGE_FREEZE = (
    "worker_kill",
    "node_kill",
    "driver_kill",
    "storage_freeze",
)
FAULT_KINDS = (WORKER_KILL, NODE_KILL, DRIVER_KILL, STORAGE_FREEZE)


@dataclass
class FaultLog:
    """What was injected, in order: {"kind", "t" (s since the run began), "ok", ...}."""

    start: float = field(default_factory=time.monotonic)
    events: list[dict[str, Any]] = field(default_factory=list)

    def add(self, kind: str, ok: bool = True, **fields: Any) -> dict[str, Any]:
        event = {"kind": kind, "t": round(time.monotonic() - self.start, 1), "ok": ok} | fields
        self.events.append(event)
        print(f"[chaos] {event}", file=sys.stderr, flush=True)
        return event

    def counts(self) -> dict[str, int]:
        return {kind: sum(1 for e in self.events if e["kind"] == kind and e["ok"]) for kind in FAULT_KINDS}


def wait_for(condition: Callable[[], Any], timeout_s: float, poll_s: float = 0.5) -> Any:
    """`condition()`'s first truthy value within `timeout_s`, else None."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll_s)
    return None


class Injector:
    """Faults against one :class:`ray_cluster.RayTestCluster` and one storage folder."""

    def __init__(self, cluster: Any, storage: Path, seed: int, log: FaultLog) -> None:
        self.cluster, self.storage, self.log = cluster, Path(storage), log
        self.rng = random.Random(seed)
        self._frozen = False

    def pause(self, low: float, high: float) -> None:
        time.sleep(self.rng.uniform(low, high))

    def kill_train_worker(self, wait_s: float = 60.0) -> bool:
        """SIGKILL one Ray Train worker, drawn at random among those running now."""
        workers = wait_for(self.cluster.train_worker_pids, wait_s, poll_s=0.2)
        if not workers:
            self.log.add(WORKER_KILL, ok=False, reason=f"no Ray Train worker within {wait_s:.0f} s")
            return False
        pid = self.rng.choice(sorted(workers))
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            self.log.add(WORKER_KILL, ok=False, pid=pid, reason="gone before the signal")
            return False
        node = "head" if workers[pid] is None else f"worker:{workers[pid]}"
        self.log.add(WORKER_KILL, pid=pid, node=node, of=len(workers))
        return True

    def kill_worker_node(self, restart_after_s: float = 15.0) -> bool:
        """SIGKILL every process of the newest worker node; a fresh one joins later."""
        live = [port for port in self.cluster.worker_ports if self.cluster.node_pids(port)]
        if not live:
            self.log.add(NODE_KILL, ok=False, reason="no live worker node")
            return False
        port = live[-1]
        killed = self.cluster.kill_node(port)
        self.log.add(NODE_KILL, node_manager_port=port, processes=killed)
        time.sleep(restart_after_s)
        new_port = self.cluster.add_worker_node()
        self.log.add("node_restart", node_manager_port=new_port)
        return True

    def kill_driver(self, process: subprocess.Popen, **fields: Any) -> None:
        """SIGKILL the driver's whole process group (it was started in a session of its own)."""
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            self.log.add(DRIVER_KILL, ok=False, reason="driver already gone")
            return
        process.wait()
        self.log.add(DRIVER_KILL, pid=process.pid, **fields)

    # --- storage ------------------------------------------------------------------------

    def _lock_command(self, lock: bool) -> list[str]:
        if os.geteuid() == 0:
            return ["chattr", "-R", "+i" if lock else "-i", str(self.storage)]
        return ["chmod", "-R", "a-w" if lock else "u+w", str(self.storage)]

    def _probe_writes(self) -> bool:
        probe = self.storage / f".chaos-probe-{os.getpid()}"
        try:
            probe.write_text("probe")
        except OSError:
            return False
        probe.unlink()
        return True

    def freeze_storage(self, window_s: float) -> bool:
        """Storage unwritable for `window_s`; the probe write must fail inside the window."""
        began = round(time.monotonic() - self.log.start, 1)
        done = subprocess.run(self._lock_command(True), capture_output=True, text=True)
        self._frozen = True
        # chattr -R may trip over a file being replaced under it; what matters is the probe.
        blocked = not self._probe_writes()
        started = time.monotonic()
        try:
            time.sleep(max(0.0, window_s - (time.monotonic() - started)))
        finally:
            self.thaw_storage()
        writable = self._probe_writes()
        self.log.add(
            STORAGE_FREEZE,
            ok=blocked and writable,
            window_s=window_s,
            began=began,
            method="chattr +i" if os.geteuid() == 0 else "chmod a-w",
            write_blocked=blocked,
            writable_after=writable,
            lock_rc=done.returncode,
        )
        return blocked

    def thaw_storage(self) -> None:
        """Undo a freeze (idempotent: also run when the chaos run ends early)."""
        if self._frozen:
            subprocess.run(self._lock_command(False), capture_output=True)
            self._frozen = False
