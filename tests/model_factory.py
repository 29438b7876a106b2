"""A training checkpoint built without Ray: a tiny random model on a small synthetic set.

Shared by the export, evaluate, predict, explain and report tests.
"""

from __future__ import annotations

from pathlib import Path

import torch

from raylung.artifacts.checkpoint import TrainState, save_checkpoint
from raylung.config import DataConfig, ModelConfig, RaylungConfig
from raylung.config.model_build import build_model
from raylung.data import make_demo_dataset, resolve_splits

SIZE = (64, 48)  # (width, height)
HISTORY = [
    {"epoch": 1, "train_loss": 0.71, "val_loss": 0.65, "val_accuracy": 0.5, "val_f1": 0.4, "val_auroc": 0.55},
    {"epoch": 2, "train_loss": 0.60, "val_loss": 0.58, "val_accuracy": 0.7, "val_f1": 0.6, "val_auroc": 0.75},
    {"epoch": 3, "train_loss": 0.52, "val_loss": 0.61, "val_accuracy": 0.6, "val_f1": 0.5, "val_auroc": 0.70},
]


def make_checkpoint(
    tmp: Path, model: str = "resnet_ours_tiny", depths: tuple[int, ...] | None = None
) -> tuple[Path, torch.nn.Module, RaylungConfig]:
    """A training checkpoint of a small random model on a 64x48 synthetic demo set.

    The head is scaled up so probabilities spread over (0, 1) instead of all sitting near 0.5,
    and a few train-mode passes give BatchNorm real running statistics.
    """
    data_root = tmp / "data"
    if not data_root.exists():
        make_demo_dataset(data_root, per_subclass=4, size=SIZE)
    data = DataConfig(root=data_root, image_size=SIZE, cache=False, loader_workers=0)
    splits = tmp / "splits.csv"
    resolve_splits(data, out=splits)
    config = RaylungConfig(
        data=data.model_copy(update={"splits_file": str(splits)}),
        model=ModelConfig(name=model, depths=depths),
    )
    torch.manual_seed(0)
    net = build_model(config.model, config.data.in_chans)
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.randn(4, 3, SIZE[1], SIZE[0]) * 1.5 + 0.3)
        net.fc.weight.mul_(40.0)
    net.eval()
    optimizer = torch.optim.Adam(net.parameters())
    state = TrainState(epoch=3, best_metric=0.58, best_epoch=2, history=[dict(h) for h in HISTORY])
    checkpoint = tmp / f"checkpoint_{model}"
    save_checkpoint(checkpoint, net, optimizer, None, state, config)
    return checkpoint, net, config
