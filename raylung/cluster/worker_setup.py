"""What every Ray process of a raylung job does before its first task (Ray's
``worker_process_setup_hook``, set in the job's runtime env by :func:`raylung.cluster.connect.connect`)."""

from __future__ import annotations

import os

from raylung.cluster import run_log

WORKER_SETUP_HOOK = f"{__name__}.setup_worker"


def setup_worker() -> None:
    """raylung's log lines in the console's format, and the process's own cluster pinned."""
    run_log.setup_worker_logging()
    pin_cluster_address()


def pin_cluster_address() -> None:
    """``RAY_ADDRESS`` = the GCS address of the cluster this process belongs to.

    Ray Train's placement-group cleaner (a detached actor beside each run's controller) asks
    Ray's state API whether the controller still lives, and the state API finds its cluster from
    ``RAY_ADDRESS``, else from the newest ``ray start`` cluster on the machine, else not at all
    when several Ray instances run there (a local Ray beside a test cluster, two users' Rays on
    one workstation). Unpinned, the cleaner then either dies, so a killed controller's
    reservations are never released and later trials wait for CPUs that never come back, or
    reads another cluster, finds no controller there and removes a live run's placement group.
    """
    import ray

    os.environ["RAY_ADDRESS"] = ray.get_runtime_context().gcs_address
