"""An export as a ready predictor for notebooks and other programs: ``predictor(images)``.

The same path as ``raylung predict``: the export's own preprocessing (decode, channels, resize,
stain normalisation, normalisation), its calibrated probability (the temperature fitted on
validation) and its operating point (the threshold chosen there), so a notebook gets the
numbers the CLI and the model card report, without writing a CSV.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from raylung.artifacts.loader import LoadedModel, load_export
from raylung.artifacts.predict import RUNTIMES, Runtime, logit_runtime, read_image
from raylung.artifacts.tta import NO_TTA, average_views, tta_views, view_logits
from raylung.data import build_transform
from raylung.data.images import conform
from raylung.data.naming import LABEL_NAMES
from raylung.errors import ConfigError

ImageLike = str | Path | np.ndarray | Any  # a file, an (H, W[, C]) array, or a PIL image


@dataclass(frozen=True)
class Predictions:
    """Calibrated P(cancer) per image and the label at the export's threshold."""

    probabilities: np.ndarray  # (N,) float, calibrated
    threshold: float

    @property
    def is_cancer(self) -> np.ndarray:
        return self.probabilities >= self.threshold

    @property
    def labels(self) -> list[str]:
        return [LABEL_NAMES[int(flag)] for flag in self.is_cancer]

    def __len__(self) -> int:
        return len(self.probabilities)


class Predictor:
    """Score images with an export; build it with :meth:`from_export` (or ``raylung.load_predictor``).

    >>> predictor = Predictor.from_export("experiments/ours-.../best_export")
    >>> result = predictor(["slide_tile_1.png", "slide_tile_2.png"])
    >>> result.probabilities, result.labels
    """

    def __init__(
        self,
        loaded: LoadedModel,
        *,
        runtime: Runtime = "torch",
        device: str | torch.device | None = None,
        tta: bool = False,
        batch_size: int = 32,
    ) -> None:
        if runtime not in RUNTIMES:
            raise ConfigError(f"runtime {runtime!r} is not one of {', '.join(RUNTIMES)}")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        loaded.require_binary()
        self.loaded = loaded
        self.runtime = runtime
        self.batch_size = batch_size
        self._forward, self.device = logit_runtime(loaded, runtime, device)
        data = loaded.config.data
        self._transform = build_transform(data, train=False)
        self.views = tta_views(data.image_size[1], data.image_size[0]) if tta else NO_TTA

    @classmethod
    def from_export(cls, export_dir: str | Path, **options: Any) -> Predictor:
        """Load an export folder (or a training checkpoint folder); see :class:`Predictor`."""
        return cls(load_export(export_dir), **options)

    @property
    def threshold(self) -> float:
        """The operating point stored with the export (0.5 for an uncalibrated checkpoint)."""
        return self.loaded.threshold

    @property
    def temperature(self) -> float:
        return self.loaded.temperature

    def __call__(self, images: ImageLike | Sequence[ImageLike]) -> Predictions:
        """Predict one image or a sequence; unreadable files raise, naming the file."""
        if isinstance(images, (str, Path, np.ndarray)) or not isinstance(images, Sequence):
            images = [images]
        probabilities: list[np.ndarray] = []
        with torch.no_grad():
            for start in range(0, len(images), self.batch_size):
                chunk = images[start : start + self.batch_size]
                batch = torch.stack([self._prepare(image) for image in chunk])
                logits = view_logits(batch.to(self.device), self._forward, self.views)
                probabilities.append(np.asarray(average_views(logits, self.loaded.probabilities)))
        stacked = np.concatenate(probabilities) if probabilities else np.zeros(0)
        return Predictions(stacked.astype(np.float64), self.threshold)

    def _prepare(self, image: ImageLike) -> torch.Tensor:
        data = self.loaded.config.data
        if isinstance(image, (str, Path)):
            array = read_image(Path(image).expanduser(), data)
        else:
            array = np.asarray(image)
            if array.ndim == 2:
                array = array[:, :, None]
            if array.ndim != 3:
                raise ConfigError(f"an image array must be (H, W) or (H, W, C), got shape {array.shape}")
            array = conform(array, data.in_chans, data.image_size, data.keep_aspect)
        return self._transform(array)
