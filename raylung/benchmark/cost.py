"""What each benchmarked variant costs: parameters, GFLOPs and train-step time, side by side.

Parameters and GFLOPs come from the model as built for the configured input (on the ``meta``
device: no weights allocated). Train-step time is one forward, backward and optimizer step of a
batch of the configured size and input, on this machine's device, with the run's own precision
settings, measured round-robin over the variants (each timed step of each variant before the
next round) so machine noise hits all of them alike; the reported figure is the median, also
given relative to the reference variant. Compile time is not part of it.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch

from raylung.config import RaylungConfig
from raylung.config.model_build import build_model
from raylung.models import gflops


@dataclass
class VariantCost:
    params: int
    gflops: float  # one image at the configured input
    step_s: float | None = None  # median train step (batch of train.batch_size); None: not measured
    step_ratio: float | None = None  # step_s / the reference variant's


def model_cost(cfg: RaylungConfig) -> VariantCost:
    width, height = cfg.data.image_size
    with torch.device("meta"):
        model = build_model(cfg.model, cfg.data.in_chans)
    params = sum(p.numel() for p in model.parameters())
    return VariantCost(params, gflops(model, (1, cfg.data.in_chans, height, width)))


def _step(cfg: RaylungConfig, device: torch.device):
    from raylung.artifacts.precision import resolve_precision
    from raylung.train.epochs import train_step
    from raylung.train.parts import build_optimizer

    precision = resolve_precision(cfg.train, device)
    model = build_model(cfg.model, cfg.data.in_chans).to(device)
    if precision.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    optimizer = build_optimizer(model, cfg.train.optimizer, cfg.train.lr, cfg.train.weight_decay)
    width, height = cfg.data.image_size
    x = torch.randn(cfg.train.batch_size, cfg.data.in_chans, height, width, device=device)
    y = torch.randint(0, 2, (cfg.train.batch_size,), device=device).float()
    loss_fn = torch.nn.BCEWithLogitsLoss()
    scaler = precision.make_scaler()

    def run() -> None:
        train_step(model, x, y, optimizer, scaler, loss_fn, precision)
        if device.type == "cuda":
            torch.cuda.synchronize()

    return run


def measure_step_times(configs: list[RaylungConfig], repeats: int = 3, warmup: int = 1) -> list[float]:
    """Median train-step seconds of each config, measured round-robin on this machine."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    steps = [_step(cfg, device) for cfg in configs]
    for step in steps:
        for _ in range(warmup):
            step()
    times: list[list[float]] = [[] for _ in configs]
    for _ in range(repeats):
        for i, step in enumerate(steps):
            start = time.perf_counter()
            step()
            times[i].append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]
