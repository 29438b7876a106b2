"""Predictions over a whole split, gathered from every worker.

A DistributedSampler gives each worker a shard and pads the last one with repeated samples so
shards are equal; metrics computed on rank 0's shard, or on the padded union, are wrong. Each
worker therefore returns (dataset index, logit, label), the shards are all-gathered, and the
duplicates dropped, so every rank computes the same metrics over exactly the whole split.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from raylung.artifacts.metrics import binary_metrics
from raylung.artifacts.precision import Precision


@dataclass(frozen=True)
class Predictions:
    """Per-sample outputs over a split, ordered by dataset index."""

    index: np.ndarray
    logits: np.ndarray
    labels: np.ndarray

    @property
    def probs(self) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-self.logits))

    def loss(self, pos_weight: float | None = None) -> float:
        weight = torch.tensor(pos_weight) if pos_weight else None
        return float(
            F.binary_cross_entropy_with_logits(
                torch.from_numpy(self.logits), torch.from_numpy(self.labels), pos_weight=weight
            )
        )

    def metrics(self, prefix: str = "val_", pos_weight: float | None = None) -> dict[str, float]:
        values = binary_metrics(self.labels, self.probs)
        values["loss"] = self.loss(pos_weight)
        return {f"{prefix}{name}": value for name, value in values.items()}


@torch.no_grad()
def predict_shard(
    model: torch.nn.Module, batches: Iterable, precision: Precision
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Logits of this worker's shard; batches are (image, label, index) from LungDataset."""
    model.eval()
    indices, logits, labels = [], [], []
    for images, targets, index in batches:
        images = images.to(precision.device, non_blocking=True)
        if precision.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with precision.autocast():
            out = model(images)
        logits.append(out.float().reshape(-1).cpu().numpy())
        labels.append(targets.float().reshape(-1).cpu().numpy())
        indices.append(torch.as_tensor(index).reshape(-1).cpu().numpy())
    if not indices:
        empty = np.zeros(0, dtype=np.float32)
        return np.zeros(0, dtype=np.int64), empty, empty
    return np.concatenate(indices), np.concatenate(logits), np.concatenate(labels)


def gather_predictions(shard: tuple[np.ndarray, np.ndarray, np.ndarray]) -> Predictions:
    """All-gather every worker's shard and drop the sampler's padding duplicates."""
    parts = [shard]
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        parts = [None] * dist.get_world_size()
        dist.all_gather_object(parts, shard)
    index = np.concatenate([p[0] for p in parts]).astype(np.int64)
    logits = np.concatenate([p[1] for p in parts]).astype(np.float32)
    labels = np.concatenate([p[2] for p in parts]).astype(np.float32)
    unique, first = np.unique(index, return_index=True)
    return Predictions(index=unique, logits=logits[first], labels=labels[first])


def predict_split(model: torch.nn.Module, batches: Iterable, precision: Precision) -> Predictions:
    return gather_predictions(predict_shard(model, batches, precision))
