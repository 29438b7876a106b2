"""Connect to Ray: an existing cluster when given an address, else an embedded local one.

Every raylung job goes through here, so the Ray Train settings that make short trials cheap
are applied in one place and reach the Train controllers and workers on every node through
the job's runtime environment.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raylung.cluster import run_log, worker_setup
from raylung.errors import ClusterError

log = logging.getLogger(__name__)

# Tune trial drivers reserve one unit of this resource instead of a CPU, so a trial's driver
# never takes the CPU its own Ray Train workers need (on 2 CPUs the naive set-up deadlocks).
# The number of units on a node bounds how many trial drivers it hosts at once.
TRIAL_DRIVER_RESOURCE = "raylung_trial_driver"
DEFAULT_TRIAL_DRIVER_SLOTS = 8

# Ray Train V2 polls its workers every 2 s by default, and `ray.train.report` waits for that
# poll: each epoch would lose up to 2 s and each run ~5 s at the end. A short interval costs
# a few cheap RPCs a second.
TRAIN_ENV: dict[str, str] = {
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.25",
    "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",
    # The W&B callback starts a logging actor on a trial's first result (~2 s on 2 cores);
    # Tune would warn about it on every trial.
    "TUNE_WARN_THRESHOLD_S": "5",
}

# Ray Train starts a PreemptionWatcher actor per worker group, to notice nodes being drained
# (spot reclaims, autoscaler scale-down) on a cluster. On the local Ray raylung starts, no node
# is ever drained, so it only costs a process, and Ray core logs an ERROR for it on every run
# ("constructor arguments in the object store and max_restarts > 0": its arguments hold actor
# handles, ray-project/ray#53727). On a cluster it stays on, and that line goes to the run log.
LOCAL_TRAIN_ENV: dict[str, str] = {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"}


@dataclass(frozen=True)
class RayTarget:
    """Where jobs run: `address` None means a local Ray started by this process."""

    address: str | None = None
    num_cpus: int | None = None
    num_gpus: int | None = None
    trial_driver_slots: int = DEFAULT_TRIAL_DRIVER_SLOTS
    # How long to wait for an autoscaling cluster to offer missing resources; None: 10 min on
    # an existing cluster, none on the local Ray raylung starts (it can never grow).
    resource_wait_s: float | None = None

    @property
    def attached(self) -> bool:
        return bool(self.address or os.environ.get("RAY_ADDRESS"))

    @property
    def wait_s(self) -> float:
        if self.resource_wait_s is not None:
            return self.resource_wait_s
        return 600.0 if self.attached else 0.0


def _check_reachable(address: str, timeout_s: float = 3.0) -> None:
    """Fail in seconds with a clear message instead of Ray's long connection retries."""
    if address in ("auto", "local") or address.startswith(("ray://", "anyscale://")):
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ClusterError(f"Ray address must be HOST:PORT, 'auto' or ray://..., got {address!r}")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            pass
    except OSError as exc:
        raise ClusterError(
            f"cannot reach a Ray cluster at {address} ({exc.strerror or exc}). Start one with "
            "`ray start --head`, check the address, or omit --address to use a local Ray."
        ) from None


def connect(target: RayTarget = RayTarget(), log_file: Path | None = None) -> None:
    """Initialise Ray once per process (a second call only moves the run log).

    `log_file` is the run's log (``run_log.RUN_LOG_FILE`` in its directory): from now on Ray's
    own log lines go there instead of the console (:mod:`raylung.cluster.run_log`).
    """
    import ray

    if log_file is not None:
        run_log.write_to(log_file)
    for key, value in TRAIN_ENV.items():
        os.environ.setdefault(key, value)
    if ray.is_initialized():
        return
    env_vars = {k: os.environ[k] for k in TRAIN_ENV}
    address = target.address or os.environ.get("RAY_ADDRESS")
    if address:
        _check_reachable(address)
        # Every process of the job learns its cluster's address from the setup hook
        # (worker_setup.pin_cluster_address), whether attached here or started locally below.
        try:
            context = ray.init(address=address, runtime_env=_runtime_env(env_vars), log_to_driver=True)
        except (ConnectionError, RuntimeError) as exc:
            raise ClusterError(f"could not connect to Ray at {address}: {exc}") from None
        except Exception as exc:
            if type(exc).__name__ != "AuthenticationError":
                raise
            raise ClusterError(
                f"the Ray cluster at {address} uses token authentication and no matching token "
                "was found: copy the cluster's token to ~/.ray/auth_token (or set RAY_AUTH_TOKEN / "
                "RAY_AUTH_TOKEN_PATH) and keep RAY_AUTH_MODE=token"
            ) from None
        run_log.route_ray_output()
        log.info("connected to Ray at %s", address)
        _announce_dashboard(context)
        return
    env_vars.update({key: os.environ.get(key, value) for key, value in LOCAL_TRAIN_ENV.items()})
    # "local": always a new instance of our own, never whatever cluster happens to run here.
    context = ray.init(
        address="local",
        num_cpus=target.num_cpus,
        num_gpus=target.num_gpus,
        resources={TRIAL_DRIVER_RESOURCE: target.trial_driver_slots},
        runtime_env=_runtime_env(env_vars),
        include_dashboard=True,
        log_to_driver=True,
    )
    run_log.route_ray_output()
    log.info("started a local Ray instance (%s)", ray.cluster_resources())
    _announce_dashboard(context)


def _runtime_env(env_vars: dict[str, str]) -> dict[str, Any]:
    """The job's processes on every node: raylung's settings, raylung's log records in a form
    the driver tells from Ray's own lines, and their own cluster's address
    (:func:`worker_setup.setup_worker`)."""
    return {"env_vars": env_vars, "worker_process_setup_hook": worker_setup.WORKER_SETUP_HOOK}


def dashboard_url(context: Any) -> str | None:
    """The dashboard of the Ray that ``ray.init`` returned `context` for; None without one."""
    url = getattr(context, "dashboard_url", None)
    if not url:
        return None
    return url if "://" in url else f"http://{url}"


def _announce_dashboard(context: Any) -> None:
    url = dashboard_url(context)
    if url:
        log.info("Ray dashboard: %s", url)
    else:
        log.info("Ray dashboard: not running")
