"""Explain image files with an exported model: one figure per image plus a JSON index.

Images go through the run's evaluation pipeline (:func:`raylung.artifacts.predict.read_image`, then
:func:`raylung.data.build_transform` with ``train=False``), so the probability in a figure is
the one ``raylung predict`` writes for the same file. Per batch there are up to three passes:
a plain forward for the probabilities, one that captures the spatial attention (ResNet-ours
only) and Grad-CAM's forward + backward.

``explanations.json``, next to the PNGs, maps each image to its probability, predicted label
and figure (a file name relative to the index), under the model, threshold and whether the
model was trained on synthetic demo data.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from raylung.artifacts.evaluate import SYNTHETIC_STAMP
from raylung.artifacts.loader import LoadedModel, data_is_synthetic, inference_device, load_export, to_json
from raylung.artifacts.predict import find_images, read_image
from raylung.data import build_transform
from raylung.data.naming import LABEL_NAMES
from raylung.data.transforms import normalisation
from raylung.errors import ConfigError, DataError
from raylung.explain.attention import has_spatial_attention, stage_attention
from raylung.explain.figures import display_image, explanation_figure, save_explanation
from raylung.explain.gradcam import gradcam_maps

log = logging.getLogger(__name__)

__all__ = ["INDEX_FILE", "Explainer", "Explanation", "explain_images", "png_name", "write_index"]

INDEX_FILE = "explanations.json"
DEFAULT_BATCH_SIZE = 8


@dataclass(frozen=True)
class Explanation:
    """What one figure shows: the image, P(cancer), the predicted label and where the PNG is.

    ``true_label`` and ``category`` (TP/TN/FP/FN) are set for images with a known label.
    """

    image: Path
    probability: float
    label: str
    png: Path
    true_label: str | None = None
    category: str | None = None

    def index_entry(self, index_dir: Path) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "probability": self.probability,
            "label": self.label,
            "png": _relative(self.png, index_dir),
        }
        if self.true_label is not None:
            entry["true_label"] = self.true_label
        if self.category is not None:
            entry["category"] = self.category
        return entry


def _relative(path: Path, base: Path) -> str:
    try:
        return str(path.resolve().relative_to(base.resolve()))
    except ValueError:
        return str(path.resolve())


def png_name(index: int, image: Path, prefix: str = "") -> str:
    """A unique, filesystem-safe figure name: images of the same name in two folders both fit."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", image.stem)[:80] or "image"
    return f"{prefix}{index:03d}_{stem}.png"


def _batches(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class Explainer:
    """A loaded binary model and its run's evaluation pipeline, explaining images in batches.

    Args:
        loaded: from :func:`~raylung.artifacts.export.load_export`; must have one logit.
        threshold: P(cancer) at or above which the label is cancer (default: the export's).
        device: where to run (default: CUDA when present, else CPU).
        batch_size: images per pass; Grad-CAM keeps activations for a backward, so keep it small.
    """

    def __init__(
        self,
        loaded: LoadedModel,
        *,
        threshold: float | None = None,
        device: str | torch.device | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> None:
        loaded.require_binary()
        threshold = loaded.threshold if threshold is None else float(threshold)
        if not 0.0 <= threshold <= 1.0:
            raise ConfigError(f"threshold must be within 0..1, got {threshold}")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        self.loaded = loaded
        self.threshold = threshold
        self.batch_size = batch_size
        self.device = inference_device(device)
        self.model = loaded.model.to(self.device).eval()
        self.data = loaded.config.data
        self.transform = build_transform(self.data, train=False)
        self.mean, self.std = normalisation(self.data)
        self.attention = has_spatial_attention(self.model)
        synthetic = loaded.manifest.get("synthetic_data") if loaded.manifest else None
        self.synthetic: bool | None = synthetic if synthetic is not None else data_is_synthetic(loaded.config)

    @classmethod
    def from_path(cls, model_path: str | Path, **kwargs: Any) -> Explainer:
        """Load an export (or a training checkpoint) folder; keywords as for the constructor."""
        return cls(load_export(model_path), **kwargs)

    def inputs(self, paths: Sequence[Path]) -> torch.Tensor:
        """The normalised (B, C, H, W) batch the model sees for `paths`.

        Raises:
            DataError: an image cannot be read or decoded (the message names it).
        """
        tensors = []
        for path in paths:
            try:
                image = read_image(Path(path), self.data)
            except OSError as exc:  # permissions, a folder named like an image; decoding raises DataError
                raise DataError(f"unreadable image {path}: {exc}") from None
            tensors.append(self.transform(image))
        return torch.stack(tensors).to(self.device)

    def _probabilities(self, images: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            logits = self.model(images).float().reshape(-1)
        return torch.sigmoid(logits).cpu().numpy().astype(np.float64)

    def probabilities(self, paths: Sequence[Path]) -> np.ndarray:
        """P(cancer) for every path, in order (the same number ``raylung predict`` writes)."""
        parts = [self._probabilities(self.inputs(batch)) for batch in _batches(paths, self.batch_size)]
        return np.concatenate(parts) if parts else np.zeros(0)

    def explain(
        self,
        paths: Sequence[Path],
        out_dir: str | Path,
        names: Sequence[str],
        true_labels: Sequence[int | None] | None = None,
        categories: Sequence[str | None] | None = None,
    ) -> list[Explanation]:
        """Write one figure per image to ``out_dir/names[i]``; returns what each one shows."""
        if len(names) != len(paths):
            raise ValueError(f"{len(paths)} images but {len(names)} figure names")
        out = Path(out_dir).expanduser()
        out.mkdir(parents=True, exist_ok=True)
        truths = list(true_labels) if true_labels is not None else [None] * len(paths)
        kinds = list(categories) if categories is not None else [None] * len(paths)
        explained: list[Explanation] = []
        for start in range(0, len(paths), self.batch_size):
            batch = [Path(p) for p in paths[start : start + self.batch_size]]
            images = self.inputs(batch)
            probs = self._probabilities(images)
            stages = stage_attention(self.model, images) if self.attention else []
            cams = gradcam_maps(self.model, images)
            for i, path in enumerate(batch):
                position = start + i
                prob = float(probs[i])
                label = LABEL_NAMES[int(prob >= self.threshold)]
                truth = truths[position]
                true_name = LABEL_NAMES[truth] if truth is not None else None
                fig = explanation_figure(
                    display_image(images[i], self.mean, self.std),
                    [s.upsampled[i] for s in stages],
                    cams[i],
                    self._title(path, prob, label, true_name, kinds[position]),
                    attention_raw=[s.raw[i] for s in stages],
                )
                png = save_explanation(fig, out / names[position])
                explained.append(Explanation(path, prob, label, png, true_name, kinds[position]))
            log.debug("explained %d/%d images", len(explained), len(paths))
        return explained

    def _title(self, path: Path, prob: float, label: str, truth: str | None, category: str | None) -> str:
        title = f"{path.name}\nP(cancer) = {prob:.3f} -> {label} (threshold {self.threshold:g})"
        if truth is not None:
            title += f"\ntrue label {truth}" + (f" ({category})" if category else "")
        if self.synthetic:
            title += f"\n{SYNTHETIC_STAMP}: explains nothing clinical"
        return title

    def index_header(self) -> dict[str, Any]:
        return {
            "model": self.loaded.config.model.name,
            "model_path": str(self.loaded.path.resolve()),
            "threshold": self.threshold,
            "synthetic_data": self.synthetic,
            "attention": "spatial attention per stage" if self.attention else "none (no spatial attention)",
            "gradcam_target": "cancer logit (ClassifierOutputTarget(0))",
        }


def write_index(
    out_dir: str | Path,
    explainer: Explainer,
    explanations: Sequence[Explanation],
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``explanations.json``: image path -> probability, label, figure (plus any `extra`)."""
    out = Path(out_dir).expanduser()
    document = {
        **explainer.index_header(),
        **(extra or {}),
        "images": {str(e.image): e.index_entry(out) for e in explanations},
    }
    path = out / INDEX_FILE
    path.write_text(to_json(document))
    return path


def explain_images(
    model_path: str | Path,
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    *,
    threshold: float | None = None,
    recursive: bool = True,
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: str | torch.device | None = None,
) -> list[Explanation]:
    """Explain every image in `inputs` (files; folders expand to their images) into `out_dir`.

    Writes one PNG per image and ``explanations.json`` beside them; returns the explanations
    in input order.

    Raises:
        DataError: a path does not exist, a folder holds no images, or an image is unreadable
            (figures already drawn stay; the index is written only when all are done).
        ConfigError: the model is not a one-logit binary model, or a bad threshold / batch size.
    """
    explainer = Explainer.from_path(model_path, threshold=threshold, device=device, batch_size=batch_size)
    paths = find_images(inputs, recursive)
    names = [png_name(i, path) for i, path in enumerate(paths)]
    explanations = explainer.explain(paths, out_dir, names)
    write_index(out_dir, explainer, explanations)
    return explanations
