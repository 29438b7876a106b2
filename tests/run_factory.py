"""Small configs for real Ray Train / Tune runs that finish in seconds on 2 CPU cores."""

from __future__ import annotations

from pathlib import Path

from raylung.config import RaylungConfig
from raylung.config.loading import load_config

TINY = """
experiment: {{name: {name}, storage: {storage}}}
data: {{root: {root}, image_size: [64, 48], loader_workers: 0, cache_dir: {cache}}}
model: {{name: resnet_ours_tiny}}
train: {{epochs: {epochs}, batch_size: 16, lr: 0.003, patience: null}}
resources: {{num_workers: {workers}, cpus_per_worker: 1}}
wandb: {{mode: disabled}}
"""


def tiny_config(
    root: Path,
    storage: Path,
    *,
    name: str = "t",
    epochs: int = 3,
    workers: int = 1,
    overrides: list[str] | None = None,
) -> RaylungConfig:
    text = TINY.format(
        name=name, storage=storage, root=root, epochs=epochs, workers=workers, cache=storage / "cache"
    )
    return load_config(text=text, overrides=overrides or [], allow_search=False).config


def write_tiny_yaml(path: Path, root: Path, storage: Path, **kwargs) -> Path:
    name = kwargs.pop("name", "t")
    text = TINY.format(
        name=name,
        storage=storage,
        root=root,
        epochs=kwargs.get("epochs", 3),
        workers=kwargs.get("workers", 1),
        cache=storage / "cache",
    )
    path.write_text(text)
    return path
