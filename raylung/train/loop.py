"""The training function each Ray Train worker runs: config in, metrics and checkpoints out.

Written like Ray's own PyTorch examples: build data and model (:mod:`raylung.train.parts`),
wrapped with ``prepare_data_loader`` / ``prepare_model`` (DDP), resume from Ray's checkpoint,
then train, validate over the whole validation split across all workers, and
``ray.train.report`` metrics with a checkpoint once per epoch (:mod:`raylung.train.epochs`, the
same loop a plain process runs without Ray). Metrics leave the worker only through
``ray.train.report``: tracking (W&B) happens on the driver, from those reports.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import ray.train
import ray.train.torch
from torch.utils.data import DataLoader

from raylung.artifacts.checkpoint import TrainState, load_optimizer, load_state, load_weights
from raylung.config import RaylungConfig
from raylung.data import LungDataset
from raylung.train.epochs import run_epochs, train_step
from raylung.train.hooks import NO_HOOKS, SETUP, PhaseHooks
from raylung.train.host_memory import keep_freed_memory
from raylung.train.parts import RunParts, build_loader, build_run
from raylung.train.patience import patient_checkpoint_upload
from raylung.train.progress import StepReporter

__all__ = ["make_loader", "train_loop_per_worker", "train_step"]  # train_step: raylung.benchmark.cost

log = logging.getLogger(__name__)


def quiet_ray_train_reports() -> None:
    """Ray Train logs every report and checkpoint at INFO on each worker (from a logger named
    after its source file); raylung shows its own progress, so keep only warnings."""
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    try:
        from ray.train.v2._internal.execution import context as train_context
    except ImportError:  # a private module: if it moves, the logs are merely verbose
        return
    logging.getLogger(train_context.__file__).setLevel(logging.WARNING)


def make_loader(
    dataset: LungDataset, batch_size: int, shuffle: bool, cfg: RaylungConfig, pin_memory: bool
) -> DataLoader:
    """This worker's loader inside a Ray Train run: its shard, with Ray's device transfer."""
    ctx = ray.train.get_context()
    loader = build_loader(
        dataset, batch_size, shuffle, cfg, pin_memory, ctx.get_world_rank(), ctx.get_world_size()
    )
    # The sampler is already distributed: Ray only adds the device transfer.
    return ray.train.torch.prepare_data_loader(loader)


def resume_state(parts: RunParts) -> TrainState:
    """Weights, optimizer and progress from Ray's latest checkpoint, or a fresh state."""
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return TrainState()
    with checkpoint.as_directory() as directory:
        directory = Path(directory)
        load_weights(directory, parts.model)
        load_optimizer(directory, parts.optimizer, parts.scaler)
        state = load_state(directory)
    log.info("resumed from checkpoint after epoch %d", state.epoch)
    return state


def report_to_ray(metrics: dict[str, float], checkpoint_dir: Path | None) -> None:
    """Ray Train copies the folder to the run's storage before this returns (riding out a short
    storage outage: :mod:`raylung.train.patience`)."""
    checkpoint = ray.train.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
    ray.train.report(metrics, checkpoint=checkpoint, checkpoint_upload_fn=patient_checkpoint_upload)


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train entry point. `loop_config`: {"config": RaylungConfig, "progress": queue | None
    (rank 0 posts live progress), "hooks": PhaseHooks | None (timers around each phase)}."""
    cfg: RaylungConfig = loop_config["config"]
    hooks: PhaseHooks = loop_config.get("hooks") or NO_HOOKS
    with hooks.span(SETUP):
        kept = keep_freed_memory()  # before the first activations: no page faults every step
        quiet_ray_train_reports()
        ctx = ray.train.get_context()
        rank, world = ctx.get_world_rank(), ctx.get_world_size()
        parts = build_run(
            cfg,
            ray.train.torch.get_device(),
            rank,
            world,
            prepare_model=ray.train.torch.prepare_model,
            prepare_loader=ray.train.torch.prepare_data_loader,
        )
        state = resume_state(parts)
        nodes = count_nodes()
    if rank == 0:
        log.info(
            "training on %d worker(s) on %d node(s), %s, %d train / %d validation images%s",
            world,
            nodes,
            parts.precision.describe(),
            len(parts.train_set),
            len(parts.val_set),
            ", freed memory kept in the process" if kept else "",
        )
    progress = StepReporter(loop_config.get("progress") if rank == 0 else None)
    run_epochs(parts, state, report_to_ray, hooks=hooks, progress=progress, nodes=nodes)


def count_nodes() -> int:
    """Distinct Ray nodes hosting this worker group (every rank gets the same answer)."""
    import torch.distributed as dist

    node = ray.get_runtime_context().get_node_id()
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return 1
    nodes: list = [None] * dist.get_world_size()
    dist.all_gather_object(nodes, node)
    return len(set(nodes))
