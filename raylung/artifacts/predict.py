"""Predict cancer vs non-cancer for image files and folders with an exported model.

Images go through exactly the evaluation pipeline of the run (decode, channel rule, resize,
normalise; :mod:`raylung.data.images` and :mod:`raylung.data.transforms`), so a prediction
here equals what ``raylung evaluate`` scores for the same file. A file that cannot be decoded
gets no row in the CSV; it is listed, with the reason, in the returned summary.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from raylung.artifacts.loader import inference_device, load_export
from raylung.config import DataConfig
from raylung.data import UnreadableImageError, build_transform, load_image
from raylung.data.images import drop_alpha, resize_to, to_channels, to_uint8
from raylung.data.naming import LABEL_NAMES
from raylung.errors import ConfigError, DataError

log = logging.getLogger(__name__)

PREDICT_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp"})
CSV_COLUMNS = ("path", "probability_cancer", "predicted_label")


@dataclass
class PredictionSummary:
    """Counts of one :func:`predict` run; `unreadable` holds (path, reason) of skipped files."""

    out_csv: Path
    threshold: float
    n_found: int
    n_predicted: int
    n_cancer: int
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    synthetic_model: bool | None = None  # the model was trained on raylung's synthetic demo data

    @property
    def n_non_cancer(self) -> int:
        return self.n_predicted - self.n_cancer


def find_images(inputs: Sequence[str | Path], recursive: bool = True) -> list[Path]:
    """Files given by name, plus image files (by extension, any case) inside given folders.

    Hidden files and folders (``.name``) inside a folder are skipped; duplicates are dropped.
    """
    found: dict[Path, None] = {}
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_file():
            found[path] = None
        elif path.is_dir():
            candidates = path.rglob("*") if recursive else path.glob("*")
            for file in sorted(candidates):
                relative = file.relative_to(path).parts
                if (
                    file.suffix.lower() in PREDICT_EXTENSIONS
                    and file.is_file()
                    and not any(part.startswith(".") for part in relative)
                ):
                    found[file] = None
        else:
            raise DataError(f"no such file or folder: {path}")
    if not found:
        listed = ", ".join(str(i) for i in inputs)
        raise DataError(f"no images ({', '.join(sorted(PREDICT_EXTENSIONS))}) found in {listed}")
    return list(found)


def read_image(path: Path, data: DataConfig) -> np.ndarray:
    """The resized uint8 image, by the training decoder; BMP (which it does not read) via OpenCV."""
    try:
        return load_image(path, data.in_chans, data.image_size, data.keep_aspect)
    except UnreadableImageError:
        with open(path, "rb") as handle:
            if handle.read(2) != b"BM":
                raise
    image = cv2.imdecode(np.fromfile(str(path), dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise UnreadableImageError(path, "BMP data is corrupt or truncated")
    if image.ndim == 2:
        image = image[:, :, None]
    elif image.shape[2] in (3, 4):
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB if image.shape[2] == 3 else cv2.COLOR_BGRA2RGBA)
    try:
        image = to_channels(to_uint8(drop_alpha(image)), data.in_chans)
    except ValueError as exc:
        raise UnreadableImageError(path, str(exc)) from exc
    return np.ascontiguousarray(resize_to(image, data.image_size, data.keep_aspect))


def _batches(paths: list[Path], size: int) -> Iterator[list[Path]]:
    for start in range(0, len(paths), size):
        yield paths[start : start + size]


def _progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("predicting"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        console=Console(stderr=True), transient=True, disable=not enabled,
    )  # fmt: skip


def predict(
    export_dir: str | Path,
    inputs: list[Path],
    out_csv: str | Path,
    *,
    threshold: float = 0.5,
    batch_size: int = 32,
    recursive: bool = True,
    progress: bool = True,
    device: str | torch.device | None = None,
) -> PredictionSummary:
    """Write ``path,probability_cancer,predicted_label`` for every readable image in `inputs`.

    Args:
        export_dir: an export folder (or a training checkpoint folder).
        inputs: image files and/or folders (searched recursively unless `recursive` is False).
        out_csv: the CSV to write (parent folders are created).
        threshold: probability at or above which the label is ``cancer``.
        batch_size: images per forward pass.
        progress: show a progress bar on stderr.
        device: where to run the model (default: CUDA when present, else CPU).
    """
    if not 0.0 <= threshold <= 1.0:
        raise ConfigError(f"threshold must be within 0..1, got {threshold}")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    device = inference_device(device)
    loaded = load_export(export_dir)
    loaded.require_binary()
    paths = find_images(inputs, recursive)
    data = loaded.config.data
    transform = build_transform(data, train=False)
    model = loaded.model.to(device)
    out_csv = Path(out_csv).expanduser()
    out_csv.parent.mkdir(parents=True, exist_ok=True)

    unreadable: list[tuple[str, str]] = []
    predicted = cancer = 0

    def decode(path: Path) -> np.ndarray | str:
        try:
            return read_image(path, data)
        except (UnreadableImageError, OSError) as exc:
            return exc.reason if isinstance(exc, UnreadableImageError) else str(exc)

    with (
        open(out_csv, "w", newline="") as handle,
        ThreadPoolExecutor(min(4, os.cpu_count() or 1)) as pool,  # decoders release the GIL
        _progress(progress) as bar,
        torch.no_grad(),
    ):
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        task = bar.add_task("predict", total=len(paths))
        for batch in _batches(paths, batch_size):
            good, images = [], []
            for path, result in zip(batch, pool.map(decode, batch), strict=True):
                if isinstance(result, str):
                    unreadable.append((str(path), result))
                else:
                    good.append(path)
                    images.append(transform(result))
            if images:
                logits = model(torch.stack(images).to(device)).float().reshape(-1)
                for path, prob in zip(good, torch.sigmoid(logits).cpu().numpy(), strict=True):
                    label = int(prob >= threshold)
                    writer.writerow([str(path), f"{prob:.6f}", LABEL_NAMES[label]])
                    cancer += label
                predicted += len(good)
            bar.advance(task, len(batch))
    for path, reason in unreadable:
        log.debug("no prediction for unreadable %s: %s", path, reason)
    return PredictionSummary(
        out_csv=out_csv,
        threshold=threshold,
        n_found=len(paths),
        n_predicted=predicted,
        n_cancer=cancer,
        unreadable=unreadable,
        synthetic_model=loaded.manifest.get("synthetic_data"),
    )
