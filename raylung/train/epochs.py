"""The epoch loop, shared by the Ray Train worker and plain processes: train, validate, report.

Nothing here knows about Ray: the caller hands in the built parts, the state to continue from
and a ``report`` function that receives each epoch's metrics and, on rank 0, the folder its
checkpoint was just written to (the Ray worker turns that into ``ray.train.report``; a plain
run may ignore it). Validation runs over the whole split on every worker (see
:mod:`raylung.artifacts.inference`); the training loss is averaged across workers when a
process group is up. Each phase is entered through the caller's :mod:`~raylung.train.hooks`.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import torch.distributed as dist

from raylung.artifacts.checkpoint import TrainState, save_checkpoint
from raylung.artifacts.inference import predict_split
from raylung.artifacts.precision import Precision
from raylung.train.hooks import (
    CHECKPOINT_SAVE,
    DATA,
    NO_HOOKS,
    REPORT,
    TRAIN_EPOCH,
    TRAIN_STEP,
    VALIDATE,
    PhaseHooks,
)
from raylung.train.parts import RunParts
from raylung.train.progress import StepReporter, StepUpdate

# report(metrics, checkpoint folder on rank 0 else None); the folder is gone after the call
Report = Callable[[dict[str, float], Path | None], None]


def train_step(
    model: torch.nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    loss_fn: torch.nn.Module,
    precision: Precision,
) -> torch.Tensor:
    """One optimizer step on a batch; returns the (detached) loss.

    The batch is moved to the precision's device (a no-op where Ray's loader already did)."""
    images = images.to(precision.device, non_blocking=True)
    labels = labels.to(precision.device, non_blocking=True)
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


def _batches(loader, limit: int, hooks: PhaseHooks) -> Iterator[tuple[int, tuple]]:
    """(step, batch) for up to `limit` steps, each fetch inside the DATA span."""
    source = iter(loader)
    for step in range(1, limit + 1):
        with hooks.span(DATA):
            batch = next(source, None)
        if batch is None:
            return
        yield step, batch


def train_one_epoch(
    parts: RunParts, epoch: int, progress: StepReporter, hooks: PhaseHooks = NO_HOOKS
) -> tuple[float, int, float]:
    """One pass over this worker's shard: (mean loss, images seen, seconds)."""
    cfg = parts.cfg
    parts.model.train()
    steps = len(parts.train_loader)
    if cfg.train.max_steps_per_epoch:
        steps = min(steps, cfg.train.max_steps_per_epoch)
    total_loss, images_seen, start = 0.0, 0, time.perf_counter()
    for step, (images, labels, _) in _batches(parts.train_loader, steps, hooks):
        with hooks.span(TRAIN_STEP):
            loss = train_step(
                parts.model, images, labels, parts.optimizer, parts.scaler, parts.loss_fn, parts.precision
            )
            total_loss += loss.item() * images.shape[0]  # .item() waits for the device: inside the span
        images_seen += images.shape[0]
        elapsed = time.perf_counter() - start
        progress.step(
            StepUpdate(
                epoch + 1,
                cfg.train.epochs,
                step,
                steps,
                total_loss / images_seen,
                images_seen * parts.world / max(elapsed, 1e-9),
            ),
            force=step == steps,
        )
    return total_loss / max(images_seen, 1), images_seen, time.perf_counter() - start


def mean_across_workers(mean_loss: float, count: int, device: torch.device) -> float:
    """Sample-weighted mean of the per-worker training losses (on the device NCCL needs)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return mean_loss
    totals = torch.tensor([mean_loss * count, float(count)], dtype=torch.float64, device=device)
    dist.all_reduce(totals)
    return float(totals[0] / max(totals[1], 1.0))


def run_epochs(
    parts: RunParts,
    state: TrainState,
    report: Report,
    *,
    hooks: PhaseHooks = NO_HOOKS,
    progress: StepReporter | None = None,
    nodes: int = 1,
) -> TrainState:
    """Train from `state` until the configured epochs or early stopping; returns the state.

    Every worker calls this in lock step (validation and the loss average are collective);
    `nodes` is only reported. Each epoch's metrics are recorded in `state.history` and saved
    with the checkpoint, so a resumed run keeps the whole history."""
    cfg = parts.cfg
    progress = progress or StepReporter(None)
    mode = cfg.train.monitor_mode
    while state.epoch < cfg.train.epochs and not state.stopped_early:
        epoch = state.epoch
        parts.train_loader.sampler.set_epoch(epoch)
        parts.train_set.set_epoch(epoch)
        with hooks.span(TRAIN_EPOCH):
            train_loss, seen, seconds = train_one_epoch(parts, epoch, progress, hooks)
        with hooks.span(VALIDATE):
            predictions = predict_split(parts.model, parts.val_loader, parts.precision)
            metrics = predictions.metrics(pos_weight=parts.pos_weight)
        state.update(metrics[cfg.train.monitor], mode, cfg.train.patience)
        metrics.update(
            epoch=state.epoch,
            train_loss=mean_across_workers(train_loss, seen, parts.device),
            images_per_s=seen * parts.world / max(seconds, 1e-9),
            epoch_time_s=seconds,
            lr=parts.optimizer.param_groups[0]["lr"],
            best_epoch=state.best_epoch or 0,
            stopped_early=int(state.stopped_early),
            world_size=parts.world,
            nodes=nodes,
        )
        metrics[f"best_{cfg.train.monitor}"] = state.best_metric
        state.history.append(dict(metrics))
        progress.epoch_end(metrics)
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = None
            if parts.rank == 0:
                with hooks.span(CHECKPOINT_SAVE):
                    save_checkpoint(Path(tmp), parts.model, parts.optimizer, parts.scaler, state, cfg)
                checkpoint = Path(tmp)
            with hooks.span(REPORT):
                report(metrics, checkpoint)
    return state
