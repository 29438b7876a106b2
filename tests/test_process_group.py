"""raylung's Ray Train backend: a working process group, set up by a controller without torch.

Real Ray Train runs on the session's cluster. The controller's side is observed from inside it:
a Ray Train ``UserCallback`` (pickled by value, so unpickling it imports nothing of this
module) runs in the controller process and writes down what that process has imported.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from run_factory import tiny_config

pytestmark = pytest.mark.slow


def _controller_probe(out: str):
    """A UserCallback that records, from the controller process, whether it imported torch."""
    from ray.train import UserCallback

    class ControllerProbe(UserCallback):
        def after_report(self, run_context, metrics, checkpoint) -> None:
            import os
            import sys as system

            with open(out, "a") as file:
                file.write(json.dumps({"pid": os.getpid(), "torch": "torch" in system.modules}) + "\n")

    return ControllerProbe()


def _all_reduce_ranks(config: dict) -> None:
    """Each worker: its rank's view of the group, and the sum of (rank + 1) over all ranks."""
    import os

    import ray.train
    import torch
    import torch.distributed as dist

    value = torch.tensor([float(dist.get_rank() + 1)])
    dist.all_reduce(value)
    view = {
        "rank": dist.get_rank(),
        "world_size": dist.get_world_size(),
        "backend": dist.get_backend(),
        "sum": value.item(),
        "env": {key: os.environ[key] for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR")},
        "pid": os.getpid(),
    }
    Path(config["out"], f"rank{view['rank']}.json").write_text(json.dumps(view))
    ray.train.report({"done": 1})


def _probes(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_two_workers_form_one_process_group_and_the_controller_never_imports_torch(ray_address, tmp_path):
    import ray.cloudpickle
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from raylung.train.process_group import ProcessGroupConfig

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    probe = tmp_path / "controller.jsonl"
    trainer = TorchTrainer(
        _all_reduce_ranks,
        train_loop_config={"out": str(tmp_path)},
        torch_config=ProcessGroupConfig(),
        scaling_config=ScalingConfig(num_workers=2),
        run_config=RunConfig(
            name="group", storage_path=str(tmp_path / "ray"), callbacks=[_controller_probe(str(probe))]
        ),
    )
    trainer.fit()

    views = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    for rank, view in enumerate(views):
        assert view["rank"] == rank and view["world_size"] == 2
        assert view["backend"] == "gloo"  # CPU workers
        assert view["sum"] == 3.0  # 1 + 2: both ranks took part in the collective
        assert view["env"]["RANK"] == str(rank) and view["env"]["WORLD_SIZE"] == "2"
    assert views[0]["env"]["MASTER_ADDR"] == views[1]["env"]["MASTER_ADDR"]
    assert views[0]["pid"] != views[1]["pid"]
    (controller,) = {record["pid"]: record for record in _probes(probe)}.values()
    assert controller["pid"] not in {view["pid"] for view in views}
    assert controller["torch"] is False


def test_raylungs_training_runs_with_a_controller_that_never_imports_torch(ray_address, demo_root, tmp_path):
    """The launcher's own runs (what every Tune trial fits) use the torch-free controller."""
    import ray.cloudpickle

    from raylung.train.launcher import RunLocation, fit, prepare_splits

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    cfg = prepare_splits(tiny_config(demo_root, tmp_path, epochs=1), str(tmp_path))
    probe = tmp_path / "controller.jsonl"
    result = fit(cfg, RunLocation(str(tmp_path / "runs"), "one"), callbacks=[_controller_probe(str(probe))])

    assert result.metrics["epoch"] == 1
    records = _probes(probe)
    assert len(records) == 1 and records[0]["torch"] is False
