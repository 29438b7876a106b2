"""Everything one training process needs, built from the config: data, model, optimizer, loss.

Kept free of Ray so the same parts can be built in a Ray Train worker and in a plain process
(a benchmark, a debugging session): the worker's rank and the world size are arguments, and
the Ray-specific wrapping (``prepare_model`` for DDP and the device, ``prepare_data_loader``
for device copies) is passed in by the Ray worker; without it the model is just moved to the
device. The defaults are the paper's (Table 2): Adam, lr 1e-4, batch 8. Adam runs PyTorch's
fused kernels where it has them (:func:`build_optimizer`); whether the model is compiled is
:mod:`raylung.train.compile_plan`'s rule.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler

from raylung.artifacts.precision import Precision, resolve_precision
from raylung.config import RaylungConfig
from raylung.config.model_build import build_model
from raylung.data import LungDataset, SplitSet, worker_init_fn
from raylung.data.splits import training_samples
from raylung.train.compile_plan import decide_compile

ModelWrapper = Callable[[torch.nn.Module], torch.nn.Module]
LoaderWrapper = Callable[[DataLoader], DataLoader]

log = logging.getLogger(__name__)


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


def build_loader(
    dataset: LungDataset,
    batch_size: int,
    shuffle: bool,
    cfg: RaylungConfig,
    pin_memory: bool,
    rank: int = 0,
    world: int = 1,
) -> DataLoader:
    """A loader over this worker's shard: a seeded DistributedSampler even for one worker, so
    a run shuffles the same way whether or not Ray runs it."""
    sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=shuffle, seed=cfg.train.seed)
    workers = cfg.data.loader_workers
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        pin_memory=pin_memory,
        persistent_workers=workers > 0,
        worker_init_fn=worker_init_fn if workers > 0 else None,
        drop_last=False,
    )


def fused_supported(params: Iterable[torch.Tensor]) -> bool:
    """Whether PyTorch has a fused Adam kernel for every one of `params` (device and dtype).

    The same test ``torch.optim.Adam(fused=True)`` applies on its first step, asked up front so
    the choice can fall back instead of failing mid-run."""
    try:
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

        devices = set(_get_fused_kernels_supported_devices())
    except ImportError:  # a private helper: if it moves, assume the devices of torch 2.4+
        devices = {"cpu", "cuda"}
    params = list(params)
    return bool(params) and all(p.device.type in devices and torch.is_floating_point(p) for p in params)


def build_optimizer(
    model: torch.nn.Module,
    kind: Literal["adam", "adamw"] = "adam",
    lr: float = 1e-4,
    weight_decay: float = 0.0,
    *,
    reference: bool = False,
    announce: bool = False,
) -> torch.optim.Optimizer:
    """Adam or AdamW over `model`'s parameters with the fastest implementation PyTorch has.

    PyTorch's default on the CPU is the per-tensor loop: about ten passes over each of the 391
    parameter tensors of ResNet-ours(50) per step. ``fused=True`` does one kernel per tensor
    group where the parameters' device and dtype have one (CPU, CUDA, MPS ... in torch >= 2.4),
    else ``foreach=True`` (the multi-tensor kernels); the arithmetic is the same.
    `reference` builds PyTorch's per-tensor loop (``foreach=False``) for comparisons. With
    `announce` (rank 0 of a run) the choice is logged.
    """
    params = list(model.parameters())  # all of them, in order: checkpoints index state by position
    optimizer_class = torch.optim.AdamW if kind == "adamw" else torch.optim.Adam
    if reference:
        implementation: dict[str, bool] = {"foreach": False}
    elif fused_supported(params):
        implementation = {"fused": True}
    else:
        implementation = {"foreach": True}
    if announce:
        devices = sorted({f"{p.device.type}/{str(p.dtype).removeprefix('torch.')}" for p in params})
        log.info("optimizer: %s, %s, on %s", optimizer_class.__name__, _describe(implementation), devices)
    return optimizer_class(params, lr=lr, weight_decay=weight_decay, **implementation)


def _describe(implementation: dict[str, bool]) -> str:
    if implementation.get("fused"):
        return "fused kernels"
    if implementation.get("foreach"):
        return "multi-tensor (foreach) kernels, no fused kernel for these parameters"
    return "per-tensor reference loop"


def maybe_compile(
    model: torch.nn.Module,
    cfg: RaylungConfig,
    device: torch.device,
    steps_per_epoch: int,
    batch: int,
    *,
    announce: bool = False,
) -> torch.nn.Module:
    """`model` under ``torch.compile`` where ``train.compile`` (auto: :mod:`raylung.train.compile_plan`)
    says so for this worker's planned run; rank 0 logs the decision with its arithmetic."""
    if cfg.train.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, cfg.train.max_steps_per_epoch)
    width, height = cfg.data.image_size
    decision = decide_compile(
        cfg.train.compile,
        device.type,
        cfg.model.name,
        epochs=cfg.train.epochs,
        steps_per_epoch=steps_per_epoch,
        batch=batch,
        height=height,
        width=width,
    )
    if announce:
        log.info("%s", decision.reason)
    return torch.compile(model) if decision.compile else model


@dataclass
class RunParts:
    """One process's share of a run, ready for :func:`raylung.train.epochs.run_epochs`."""

    cfg: RaylungConfig
    device: torch.device
    rank: int
    world: int
    precision: Precision
    train_set: LungDataset
    val_set: LungDataset
    train_loader: DataLoader
    val_loader: DataLoader
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    loss_fn: torch.nn.Module
    pos_weight: float | None


def build_run(
    cfg: RaylungConfig,
    device: torch.device,
    rank: int = 0,
    world: int = 1,
    *,
    prepare_model: ModelWrapper | None = None,
    prepare_loader: LoaderWrapper | None = None,
) -> RunParts:
    """Set up this process (torch threads, seeds) and build its parts, in the worker's order.

    `prepare_model` / `prepare_loader` wrap the model and both loaders (Ray Train passes its
    ``prepare_model`` / ``prepare_data_loader``); without them the model moves to `device`.
    `cfg.data.splits_file` must be fixed: every worker reads the same split.
    """
    torch.set_num_threads(cfg.train.num_threads or max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
    seed_everything(cfg.train.seed)
    precision = resolve_precision(cfg.train, device)
    splits = SplitSet.load(cfg.data.splits_file)
    train_set = LungDataset(training_samples(cfg.data, splits), cfg.data, train=True, seed=cfg.train.seed)
    val_set = LungDataset(splits["validation"], cfg.data, train=False)
    per_worker_batch = cfg.train.batch_size // world
    pin = device.type == "cuda"
    wrap_loader = prepare_loader or (lambda loader: loader)
    train_loader = wrap_loader(build_loader(train_set, per_worker_batch, True, cfg, pin, rank, world))
    val_loader = wrap_loader(build_loader(val_set, per_worker_batch * 2, False, cfg, pin, rank, world))

    model = build_model(cfg.model, cfg.data.in_chans)
    if device.type == "cuda" and world > 1:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if precision.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model = prepare_model(model) if prepare_model is not None else model.to(device)
    optimizer = build_optimizer(
        model, cfg.train.optimizer, cfg.train.lr, cfg.train.weight_decay, announce=rank == 0
    )
    model = maybe_compile(model, cfg, device, len(train_loader), per_worker_batch, announce=rank == 0)
    pos_weight = positive_weight(cfg, splits)
    loss_fn = torch.nn.BCEWithLogitsLoss(
        pos_weight=torch.tensor(pos_weight, device=device) if pos_weight else None
    )
    return RunParts(
        cfg=cfg,
        device=device,
        rank=rank,
        world=world,
        precision=precision,
        train_set=train_set,
        val_set=val_set,
        train_loader=train_loader,
        val_loader=val_loader,
        model=model,
        optimizer=optimizer,
        scaler=precision.make_scaler(),
        loss_fn=loss_fn,
        pos_weight=pos_weight,
    )
