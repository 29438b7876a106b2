"""The training function each Ray Train worker runs: config in, metrics and checkpoints out.

Written like Ray's own PyTorch examples: build data and model, wrap them with
``prepare_data_loader`` / ``prepare_model`` (DDP), train, validate over the whole validation
split across all workers, and ``ray.train.report`` metrics with a checkpoint once per epoch.
The defaults are the paper's (Table 2): Adam, lr 1e-4, batch 8, 20 epochs, patience 5.
"""

from __future__ import annotations

import logging
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import ray.train
import ray.train.torch
import torch
from torch.utils.data import DataLoader, DistributedSampler

from raylung.artifacts.checkpoint import (
    TrainState,
    load_optimizer,
    load_state,
    load_weights,
    save_checkpoint,
)
from raylung.artifacts.inference import predict_split
from raylung.artifacts.precision import Precision, resolve_precision
from raylung.config import RaylungConfig
from raylung.config.model_build import build_model
from raylung.data import LungDataset, SplitSet, worker_init_fn
from raylung.data.splits import training_samples
from raylung.train.progress import StepReporter, StepUpdate

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


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def positive_weight(cfg: RaylungConfig, splits: SplitSet) -> float | None:
    """BCE weight of the cancer class; "auto" balances the classes of the images trained on."""
    if cfg.train.pos_weight != "auto":
        return cfg.train.pos_weight
    labels = [s.label for s in training_samples(cfg.data, splits)]
    positives = sum(labels)
    return (len(labels) - positives) / positives if positives else None


def make_loader(
    dataset: LungDataset, batch_size: int, shuffle: bool, cfg: RaylungConfig, pin_memory: bool
) -> DataLoader:
    """A loader with a seeded DistributedSampler (world size 1 included), ready for Ray."""
    ctx = ray.train.get_context()
    sampler = DistributedSampler(
        dataset,
        num_replicas=ctx.get_world_size(),
        rank=ctx.get_world_rank(),
        shuffle=shuffle,
        seed=cfg.train.seed,
    )
    workers = cfg.data.loader_workers
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        pin_memory=pin_memory,
        persistent_workers=workers > 0,
        worker_init_fn=worker_init_fn if workers > 0 else None,
        drop_last=False,
    )
    # The sampler is already distributed: Ray only adds the device transfer.
    return ray.train.torch.prepare_data_loader(loader)


def make_optimizer(cfg: RaylungConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    kind = torch.optim.AdamW if cfg.train.optimizer == "adamw" else torch.optim.Adam
    return kind(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)


def train_step(
    model: torch.nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    loss_fn: torch.nn.Module,
    precision: Precision,
) -> torch.Tensor:
    """One optimizer step on a batch; returns the (detached) loss."""
    if precision.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    with precision.autocast():
        logits = model(images).reshape(-1)
        loss = loss_fn(logits.float(), labels)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss.detach()


def train_one_epoch(
    model: torch.nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    loss_fn: torch.nn.Module,
    precision: Precision,
    epoch: int,
    cfg: RaylungConfig,
    reporter: StepReporter,
) -> tuple[float, int, float]:
    """One pass over this worker's shard: (mean loss, images seen, seconds)."""
    model.train()
    steps = len(loader)
    if cfg.train.max_steps_per_epoch:
        steps = min(steps, cfg.train.max_steps_per_epoch)
    total_loss, images_seen, start = 0.0, 0, time.perf_counter()
    for step, (images, labels, _) in enumerate(loader, start=1):
        loss = train_step(model, images, labels, optimizer, scaler, loss_fn, precision)
        total_loss += loss.item() * images.shape[0]
        images_seen += images.shape[0]
        elapsed = time.perf_counter() - start
        reporter.step(
            StepUpdate(
                epoch + 1,
                cfg.train.epochs,
                step,
                steps,
                total_loss / images_seen,
                images_seen * ray.train.get_context().get_world_size() / max(elapsed, 1e-9),
            ),
            force=step == steps,
        )
        if step >= steps:
            break
    return total_loss / max(images_seen, 1), images_seen, time.perf_counter() - start


def _resume(model, optimizer, scaler) -> TrainState:
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return TrainState()
    with checkpoint.as_directory() as directory:
        directory = Path(directory)
        load_weights(directory, model)
        load_optimizer(directory, optimizer, scaler)
        state = load_state(directory)
    log.info("resumed from checkpoint after epoch %d", state.epoch)
    return state


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train entry point. `loop_config`: {"config": RaylungConfig, "progress": queue | None,
    "wandb": dict of wandb.init kwargs | None (rank 0 logs a single run)}."""
    cfg: RaylungConfig = loop_config["config"]
    quiet_ray_train_reports()
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(cfg.train.num_threads or max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
    seed_everything(cfg.train.seed)

    device = ray.train.torch.get_device()
    precision = resolve_precision(cfg.train, device)
    splits = SplitSet.load(cfg.data.splits_file)
    train_set = LungDataset(training_samples(cfg.data, splits), cfg.data, train=True, seed=cfg.train.seed)
    val_set = LungDataset(splits["validation"], cfg.data, train=False)
    per_worker_batch = cfg.train.batch_size // world
    pin = device.type == "cuda"
    train_loader = make_loader(train_set, per_worker_batch, True, cfg, pin)
    val_loader = make_loader(val_set, per_worker_batch * 2, False, cfg, pin)

    model = build_model(cfg.model, cfg.data.in_chans)
    if device.type == "cuda" and world > 1:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if precision.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model = ray.train.torch.prepare_model(model)
    if cfg.train.compile:
        model = torch.compile(model)
    optimizer = make_optimizer(cfg, model)
    scaler = precision.make_scaler()
    pos_weight = positive_weight(cfg, splits)
    loss_fn = torch.nn.BCEWithLogitsLoss(
        pos_weight=torch.tensor(pos_weight, device=device) if pos_weight else None
    )
    state = _resume(model, optimizer, scaler)

    wandb_run = None
    if rank == 0 and loop_config.get("wandb"):
        from raylung.tracking import start_run

        wandb_run = start_run(**loop_config["wandb"])
    reporter = StepReporter(loop_config.get("progress") if rank == 0 else None)
    mode = cfg.train.monitor_mode
    nodes = count_nodes()
    if rank == 0:
        log.info(
            "training on %d worker(s) on %d node(s), %s, %d train / %d validation images",
            world,
            nodes,
            precision.describe(),
            len(train_set),
            len(val_set),
        )

    while state.epoch < cfg.train.epochs and not state.stopped_early:
        epoch = state.epoch
        train_loader.sampler.set_epoch(epoch)
        train_set.set_epoch(epoch)
        train_loss, seen, seconds = train_one_epoch(
            model, train_loader, optimizer, scaler, loss_fn, precision, epoch, cfg, reporter
        )
        predictions = predict_split(model, val_loader, precision)
        metrics = predictions.metrics(pos_weight=pos_weight)
        state.update(metrics[cfg.train.monitor], mode, cfg.train.patience)
        metrics.update(
            epoch=state.epoch,
            train_loss=_mean_across_workers(train_loss, seen, device),
            images_per_s=seen * world / max(seconds, 1e-9),
            epoch_time_s=seconds,
            lr=optimizer.param_groups[0]["lr"],
            best_epoch=state.best_epoch or 0,
            stopped_early=int(state.stopped_early),
            world_size=world,
            nodes=nodes,
        )
        metrics[f"best_{cfg.train.monitor}"] = state.best_metric
        state.history.append(dict(metrics))
        reporter.epoch_end(metrics)
        if wandb_run is not None:
            wandb_run.log(metrics, step=state.epoch)
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = None
            if rank == 0:
                save_checkpoint(Path(tmp), model, optimizer, scaler, state, cfg)
                checkpoint = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(metrics, checkpoint=checkpoint)
    if wandb_run is not None:
        wandb_run.summary.update(
            {"best_epoch": state.best_epoch, f"best_{cfg.train.monitor}": state.best_metric}
        )
        wandb_run.finish()
        import wandb

        wandb.teardown()  # flush before Ray Train ends this worker process


def count_nodes() -> int:
    """Distinct Ray nodes hosting this worker group (every rank gets the same answer)."""
    import torch.distributed as dist

    node = ray.get_runtime_context().get_node_id()
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return 1
    nodes: list = [None] * dist.get_world_size()
    dist.all_gather_object(nodes, node)
    return len(set(nodes))


def _mean_across_workers(mean_loss: float, count: int, device: torch.device) -> float:
    """Sample-weighted mean of the per-worker training losses (on the device NCCL needs)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return mean_loss
    totals = torch.tensor([mean_loss * count, float(count)], dtype=torch.float64, device=device)
    dist.all_reduce(totals)
    return float(totals[0] / max(totals[1], 1.0))
