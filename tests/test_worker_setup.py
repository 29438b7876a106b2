"""Every Ray process of a raylung job knows its own cluster, even beside another Ray instance.

Ray Train's placement-group cleaner asks Ray's state API whether a run's controller lives; that
API finds "its" cluster by address. Here a raylung local Ray runs beside the session's test
cluster (two Ray instances on one machine, as in CI or on a shared workstation), and an actor
of the local job asks about itself the way the cleaner asks about the controller.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

PROBE = """
import json, os
import ray
from raylung.cluster.connect import RayTarget, connect

connect(RayTarget(num_cpus=1))


@ray.remote(num_cpus=0)
class Probe:
    def check(self, unpinned):
        from ray.train.v2._internal.state.util import is_actor_alive

        if unpinned:
            os.environ.pop("RAY_ADDRESS", None)
        me = ray.get_runtime_context().get_actor_id()
        try:
            seen = bool(is_actor_alive(actor_id=me, timeout=10))
        except Exception as exc:
            seen = type(exc).__name__
        own = ray.get_runtime_context().gcs_address
        return {"alive": seen, "pinned": os.environ.get("RAY_ADDRESS"), "own": own}


print("RESULT " + json.dumps([ray.get(Probe.remote().check.remote(u)) for u in (False, True)]))
"""


@pytest.mark.slow
def test_a_local_ray_beside_another_cluster_finds_its_own_live_actors(ray_cluster, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = str(REPO)
    done = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=240
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stderr[-3000:]
    pinned, unpinned = json.loads(lines[-1].removeprefix("RESULT "))
    assert pinned["own"] != ray_cluster.address  # a local Ray of its own, not the test cluster
    assert pinned["pinned"] == pinned["own"]
    assert pinned["alive"] is True  # the cleaner would see a live controller as alive
    # The same question without the pin: what Ray Train's cleaner got before, with two Ray
    # instances on the machine (an error, or "not alive" read from the other cluster).
    assert unpinned["alive"] is not True


def test_a_job_attached_to_a_cluster_pins_that_clusters_address_in_its_workers(ray_cluster):
    """This session is attached with ``connect(RayTarget(address=...))``: a task of its job
    sees the cluster it runs on as ``RAY_ADDRESS``, set by raylung's setup hook."""
    import ray

    @ray.remote(num_cpus=0)
    def seen() -> tuple[str | None, str]:
        return os.environ.get("RAY_ADDRESS"), ray.get_runtime_context().gcs_address

    pinned, own = ray.get(seen.remote())
    assert pinned == own and own.rsplit(":", 1)[1] == ray_cluster.address.rsplit(":", 1)[1]
