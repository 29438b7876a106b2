"""What a training checkpoint holds, and how it is written and read back safely.

A checkpoint directory is self-describing::

    model.safetensors   model weights (no pickle)
    optimizer.pt        optimizer and loss-scaler state, read with weights_only=True
    state.json          epoch, best metric, patience counter, the per-epoch metrics history
    config.json         the resolved RaylungConfig of the run

so a run resumes from it exactly, and an export needs nothing else.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from raylung.config import RaylungConfig

MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.pt"
STATE_FILE = "state.json"
CONFIG_FILE = "config.json"


@dataclass
class TrainState:
    """Progress of a run: enough to resume early stopping and the metrics history."""

    epoch: int = 0  # epochs completed
    best_metric: float | None = None
    best_epoch: int | None = None
    epochs_without_improvement: int = 0
    stopped_early: bool = False
    history: list[dict[str, float]] = field(default_factory=list)

    def improved(self, value: float, mode: str) -> bool:
        if self.best_metric is None or value != value:  # NaN never improves
            return self.best_metric is None and value == value
        return value < self.best_metric if mode == "min" else value > self.best_metric

    def update(self, value: float, mode: str, patience: int | None) -> None:
        """Record one finished epoch's monitored value; decide early stopping."""
        self.epoch += 1
        if self.improved(value, mode):
            self.best_metric = value
            self.best_epoch = self.epoch
            self.epochs_without_improvement = 0
        else:
            self.epochs_without_improvement += 1
        if patience is not None and self.epochs_without_improvement >= patience:
            self.stopped_early = True


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The bare model inside DDP and/or torch.compile wrappers."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


def save_checkpoint(
    directory: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    scaler: torch.amp.GradScaler | None,
    state: TrainState,
    config: RaylungConfig,
) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().cpu().contiguous() for k, v in unwrap(model).state_dict().items()}
    save_file(weights, str(directory / MODEL_FILE))
    if optimizer is not None:
        torch.save(
            {"optimizer": optimizer.state_dict(), "scaler": scaler.state_dict() if scaler else {}},
            directory / OPTIMIZER_FILE,
        )
    (directory / STATE_FILE).write_text(json.dumps(asdict(state), indent=1))
    (directory / CONFIG_FILE).write_text(config.model_dump_json(indent=1))


def load_config(directory: Path) -> RaylungConfig:
    return RaylungConfig.model_validate_json((directory / CONFIG_FILE).read_text())


def load_state(directory: Path) -> TrainState:
    return TrainState(**json.loads((directory / STATE_FILE).read_text()))


def load_weights(directory: Path, model: torch.nn.Module) -> None:
    unwrap(model).load_state_dict(load_file(str(directory / MODEL_FILE)))


def load_optimizer(
    directory: Path, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None
) -> None:
    path = directory / OPTIMIZER_FILE
    if not path.exists():
        return
    saved: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    # The saved hyperparameters win on load, including the implementation: keep the one this
    # process chose for its device (a checkpoint from a per-tensor or foreach run resumes fused,
    # and its step counters move where the fused kernel wants them).
    # strict=False: a mismatch in the number of groups is left to load_state_dict to report.
    for group, saved_group in zip(optimizer.param_groups, saved["optimizer"]["param_groups"], strict=False):
        for key in ("fused", "foreach"):
            if key in group:
                saved_group[key] = group[key]
    optimizer.load_state_dict(saved["optimizer"])
    if scaler is not None and saved.get("scaler"):
        scaler.load_state_dict(saved["scaler"])
