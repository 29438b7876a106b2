"""Shared fixtures: where the real LC25000 dev images are, and small helpers.

The real images live beside the checkout in ../shared/data (or $RAYLUNG_SHARED_DATA); they are
never copied into the repository. Tests that need them skip, with the reason, where absent.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

# The test cluster uses token authentication, as Ray >= 2.59 clusters do, with a token of the
# session's own (a fresh CI machine has no ~/.ray/auth_token, and `ray start` won't make one).
# Ray reads its auth mode when first imported, so this runs before anything imports ray.
os.environ.setdefault("RAY_AUTH_MODE", "token")
os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))

import pytest  # noqa: E402
from ray_cluster import RayTestCluster, ray_env  # noqa: E402

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
# RAY_ADDRESS exactly as users attach with --address (tests/ray_cluster.py).


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


def release_placement_groups() -> int:
    """Remove every placement group still held on the session's cluster; returns how many."""
    import ray
    from ray._raylet import PlacementGroupID
    from ray.util.placement_group import PlacementGroup
    from ray.util.state import list_placement_groups

    held = list_placement_groups(filters=[("state", "!=", "REMOVED")], limit=1000)
    for group in held:
        ray.util.remove_placement_group(
            PlacementGroup(PlacementGroupID(bytes.fromhex(group.placement_group_id)))
        )
    return len(held)


@pytest.fixture(autouse=True)
def no_placement_group_outlives_its_test(request):
    """After a test on the shared cluster, nothing it started may keep holding CPUs.

    Seen in CI: a Ray Train worker group's placement group, created as an in-process search
    ended, stayed CREATED with no run left (Ray Train's PlacementGroupCleaner went with the
    trial), holding one of the cluster's two CPUs, and the next two-worker run waited for it
    until its start-up timeout. Between tests nothing runs, so whatever is still held is left
    over: it is released, and reported as a warning so it stays visible.
    """
    yield
    if "ray_cluster" not in request.fixturenames:
        return
    import warnings

    if released := release_placement_groups():
        warnings.warn(
            f"{request.node.nodeid} left {released} Ray placement group(s) held; released", stacklevel=1
        )


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


def epochs_reported_per_trial(experiment: Path) -> dict[str, int]:
    """Epochs each trial's Ray Train run has reported (its snapshot is rewritten per report)."""
    import json

    counts = {}
    for snapshot in (experiment / "trials").glob("*/checkpoint_manager_snapshot.json"):
        try:
            counts[snapshot.parent.name] = json.loads(snapshot.read_text())["current_report_index"]
        except (json.JSONDecodeError, KeyError, OSError):
            continue
    return counts


def start_raylung(*args: str, env: dict[str, str] | None = None, **kwargs) -> subprocess.Popen:
    """`python -m raylung ARGS` in a session of its own (killable as a group), output to one pipe."""
    return subprocess.Popen(
        [sys.executable, "-m", "raylung", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=dict(os.environ) if env is None else env,
        start_new_session=True,
        **kwargs,
    )


@pytest.fixture(scope="session")
def smoke(ray_address, demo_root, tmp_path_factory):
    """A finished smoke tune (4 trials, ASHA, W&B offline) shared by the tune and report tests."""
    from raylung.config.loading import load_config
    from raylung.workflows import tune as workflow

    storage = tmp_path_factory.mktemp("tune")
    loaded = load_config(SMOKE, smoke_overrides(storage, demo_root, "search.num_samples=4"))
    return workflow.tune(loaded)
