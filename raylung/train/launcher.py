"""Launch one training run: a Ray Train ``TorchTrainer`` over the configured workers.

Short and separate from the loop, like Ray's examples: scaling, run and checkpoint configs are
derived from the typed config, then ``fit()``. A run directory holds everything about the
run (Ray Train's checkpoints and snapshot, the splits file, W&B files), so pointing a new
launch at the same directory resumes it from its latest checkpoint.
"""

from __future__ import annotations

import logging
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raylung.config import RaylungConfig
from raylung.data import ensure_demo_data, resolve_splits
from raylung.errors import ClusterError, RaylungError
from raylung.storage import join, resolve_storage

log = logging.getLogger(__name__)

SPLITS_FILE = "splits.csv"
SNAPSHOT_FILE = "checkpoint_manager_snapshot.json"


@dataclass(frozen=True)
class RunLocation:
    """A run lives at `storage/name`; `storage` is a local path or a pyarrow URI."""

    storage: str
    name: str

    @property
    def path(self) -> str:
        return join(self.storage, self.name)

    @property
    def local_path(self) -> Path | None:
        return None if "://" in self.storage else Path(self.path)


def prepare_splits(cfg: RaylungConfig, directory: str) -> RaylungConfig:
    """Fix the run's split once, in its directory, and point the config at it."""
    if cfg.data.demo:
        ensure_demo_data(cfg.data)
    splits_file = join(directory, SPLITS_FILE)
    resolve_splits(cfg.data, out=splits_file)
    data = cfg.data.model_copy(update={"splits_file": splits_file})
    return cfg.model_copy(update={"data": data})


def use_gpu(cfg: RaylungConfig) -> bool:
    if cfg.resources.use_gpu != "auto":
        return bool(cfg.resources.use_gpu)
    import ray

    return ray.cluster_resources().get("GPU", 0) >= cfg.resources.gpus_per_worker


def scaling_config(cfg: RaylungConfig):
    from ray.train import ScalingConfig

    gpu = use_gpu(cfg)
    per_worker: dict[str, float] = {"CPU": cfg.resources.cpus_per_worker}
    if gpu:
        per_worker["GPU"] = cfg.resources.gpus_per_worker
    return ScalingConfig(
        num_workers=cfg.resources.num_workers,
        use_gpu=gpu,
        resources_per_worker=per_worker,
        placement_strategy=cfg.resources.placement_strategy,
    )


def check_resources(cfg: RaylungConfig) -> None:
    """Fail fast when no node could ever host a worker, instead of waiting forever."""
    import ray

    scaling = scaling_config(cfg)
    need = scaling.resources_per_worker
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    if not any(all(res.get(k, 0) >= v for k, v in need.items()) for res in nodes):
        have = ", ".join(
            f"{{CPU: {r.get('CPU', 0):g}, GPU: {r.get('GPU', 0):g}}}" for r in nodes
        ) or "no live nodes"
        raise ClusterError(
            f"no node can host a training worker needing {need} (nodes: {have}). Lower "
            "resources.cpus_per_worker / gpus_per_worker, set resources.use_gpu: false, or add "
            "nodes with those resources."
        )


def _trainer(cfg: RaylungConfig, location: RunLocation, loop_config: dict[str, Any], callbacks: list):
    from ray.train import CheckpointConfig, FailureConfig, RunConfig
    from ray.train.torch import TorchTrainer

    from raylung.train.loop import train_loop_per_worker

    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        scaling_config=scaling_config(cfg),
        run_config=RunConfig(
            name=location.name,
            storage_path=location.storage,
            checkpoint_config=CheckpointConfig(
                num_to_keep=cfg.train.checkpoints_to_keep,
                checkpoint_score_attribute=cfg.train.monitor,
                checkpoint_score_order=cfg.train.monitor_mode,
            ),
            failure_config=FailureConfig(max_failures=cfg.train.max_failures),
            callbacks=callbacks,
        ),
    )


def fit(
    cfg: RaylungConfig,
    location: RunLocation,
    *,
    wandb_kwargs: dict[str, Any] | None = None,
    progress: bool = False,
    callbacks: list | None = None,
):  # -> ray.train.Result
    """Run (or resume) training; `cfg.data.splits_file` must already be fixed."""
    if not cfg.data.splits_file:
        raise RaylungError("internal: fit() needs a config whose data.splits_file is set")
    loop_config: dict[str, Any] = {"config": cfg, "wandb": wandb_kwargs, "progress": None}
    display: Any = nullcontext()
    if progress:
        from ray.util.queue import Queue

        from raylung.train.progress import ProgressDisplay

        loop_config["progress"] = Queue(maxsize=1000, actor_options={"num_cpus": 0})
        display = ProgressDisplay(loop_config["progress"])
    trainer = _trainer(cfg, location, loop_config, callbacks or [])
    with display:
        result = trainer.fit()
    if progress:
        loop_config["progress"].shutdown()
    return result


def has_snapshot(location: RunLocation) -> bool:
    """Whether Ray Train already recorded checkpoints at this location (a resumable run)."""
    import pyarrow.fs

    filesystem, path = resolve_storage(location.path)
    info = filesystem.get_file_info(join(path, SNAPSHOT_FILE))
    return info.type == pyarrow.fs.FileType.File
