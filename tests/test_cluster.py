"""raylung on a real two-node Ray cluster: placement across nodes, node loss, clear errors.

The session cluster (conftest.py) is a head and a worker node, one CPU each, on this machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import SMOKE, smoke_overrides
from run_factory import write_tiny_yaml

REPO = Path(__file__).resolve().parents[1]


def raylung(*args: str, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "raylung", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env or dict(os.environ),
    )


@pytest.mark.multinode
@pytest.mark.slow
def test_two_node_tune_spreads_each_trial_over_both_nodes(ray_cluster, demo_root, tmp_path):
    from raylung.config.loading import load_config
    from raylung.workflows import tune as workflow

    storage = tmp_path / "shared-storage"
    loaded = load_config(
        SMOKE,
        smoke_overrides(
            storage,
            demo_root,
            "search.num_samples=2",
            "search.max_concurrent_trials=1",
            "search.asha.enabled=false",
            "train.epochs=2",
            "resources.num_workers=2",
            "resources.placement_strategy=STRICT_SPREAD",
            "wandb.mode=disabled",
        ),
    )
    outcome = workflow.tune(loaded)

    assert len(outcome.trials) == 2 and all(t.status == "completed" for t in outcome.trials)
    for trial in outcome.trials:
        assert all(row["nodes"] == 2 and row["world_size"] == 2 for row in trial.history)
    experiment = Path(outcome.experiment.path)
    assert experiment.parent == storage.resolve()
    best = json.loads((experiment / "best.json").read_text())
    assert Path(best["checkpoint"]).is_relative_to(experiment / "trials")
    assert Path(best["export"]) == experiment / "best" / "export"
    assert (experiment / "best" / "export" / "model.safetensors").is_file()


@pytest.mark.multinode
@pytest.mark.slow
def test_losing_a_worker_node_fails_clearly_and_the_run_resumes(ray_cluster, demo_root, tmp_path):
    """A 2-worker run loses the node of one worker: with no second node to replace it, the
    run stops with a clear message instead of hanging; with the node back, --resume finishes
    it from the last checkpoint, every epoch counted once."""
    config = write_tiny_yaml(tmp_path / "tiny.yaml", demo_root, tmp_path, epochs=6, workers=2)
    run_dir = tmp_path / "run"
    env = dict(os.environ, RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S="10")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "raylung",
            "train",
            str(config),
            "--output",
            str(run_dir),
            "--set",
            "train.max_failures=1",
            "--resource-wait",
            "20",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    snapshot = run_dir / "run" / "checkpoint_manager_snapshot.json"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read()
        try:
            if json.loads(snapshot.read_text())["current_report_index"] >= 2:
                break
        except (FileNotFoundError, json.JSONDecodeError, KeyError):
            pass
        time.sleep(0.2)
    ray_cluster.kill_node(ray_cluster.worker_node_id())
    try:
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 2, out
        # One line: what failed, what is kept, how to continue. Ray's tracebacks of the lost node
        # and its actors are in the run's log, not on the console.
        assert "Traceback" not in out, out[-5000:]
        (line,) = [line for line in out.splitlines() if line.startswith("error:")]
        assert line.startswith(
            "error: training failed: the cluster could not start the run's 2 worker(s) again within 20 s ("
        ), line
        assert "; checkpoints up to epoch " in line and f"are kept in {run_dir / 'run'}; " in line
        assert f"continue with raylung train --output {run_dir} --resume" in line
        assert "Traceback" in (run_dir / "raylung.log").read_text()
    finally:
        ray_cluster.add_worker_node()

    resumed = raylung("train", "--output", str(run_dir), "--resume")
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    history = json.loads((run_dir / "metrics.json").read_text())["history"]
    assert [row["epoch"] for row in history] == [1, 2, 3, 4, 5, 6]
    assert history[-1]["nodes"] == 2


def test_unreachable_address_fails_in_seconds(tmp_path):
    start = time.monotonic()
    done = raylung(
        "tune", str(SMOKE), "--address", "127.0.0.1:9", "--set", f"experiment.storage={tmp_path}", timeout=120
    )
    assert done.returncode == 2
    assert "cannot reach a Ray cluster at 127.0.0.1:9" in done.stderr
    assert time.monotonic() - start < 60


def test_unwritable_storage_fails_before_anything_runs(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    done = raylung("tune", str(SMOKE), "--storage", str(blocker / "exp"), timeout=120)
    assert done.returncode == 2
    assert "is not writable" in done.stderr and str(blocker / "exp") in done.stderr


@pytest.mark.slow
def test_gpus_no_node_has_fail_after_a_bounded_wait(ray_address, demo_root, tmp_path):
    config = write_tiny_yaml(tmp_path / "tiny.yaml", demo_root, tmp_path)
    start = time.monotonic()
    done = raylung("train", str(config), "--gpus-per-worker", "1", "--resource-wait", "3", timeout=300)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "cannot place 1 worker(s)" in done.stderr and "'GPU': 1.0" in done.stderr
    assert "waited 3 s" in done.stderr
    assert time.monotonic() - start < 120
