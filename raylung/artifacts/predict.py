"""Predict cancer vs non-cancer for image files and folders with an exported model.

Images go through exactly the evaluation pipeline of the run (decode, channel rule, resize,
normalise; :mod:`raylung.data.images` and :mod:`raylung.data.transforms`), so a prediction
here equals what ``raylung evaluate`` scores for the same file. A file that cannot be decoded
gets no row in the CSV; it is listed, with the reason, in the returned summary.

The probability is calibrated (the export's temperature, :meth:`LoadedModel.probabilities`)
and the label uses the export's stored threshold unless one is given; the raw logit is kept
beside it. Options: the ``onnx`` runtime runs the export's ``model.onnx`` on the same batches
(:mod:`raylung.artifacts.onnx_runtime`); TTA averages probabilities over flips and turns
(:mod:`raylung.artifacts.tta`); ``group_by`` adds one row per patient/slide/tile group
(:mod:`raylung.artifacts.groups`). Every row says which runtime and views made it.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

import cv2
import numpy as np
import torch

from raylung.artifacts.groups import (
    GroupResults,
    GroupRule,
    check_rule,
    group_keys,
    group_results,
    write_group_csv,
)
from raylung.artifacts.loader import LoadedModel, inference_device, load_export
from raylung.artifacts.tta import NO_TTA, LogitFn, average_views, tta_views, view_logits
from raylung.config import DataConfig
from raylung.data import UnreadableImageError, build_transform, load_image
from raylung.data.images import conform
from raylung.data.naming import LABEL_NAMES
from raylung.errors import ConfigError, DataError
from raylung.extras import require_extra
from raylung.progress import progress_bar

log = logging.getLogger(__name__)

PREDICT_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp"})
# logit: the model's raw output for the image as given (before temperature and TTA);
# runtime: torch or onnx; tta: the views averaged, "off" for the image as given only.
CSV_COLUMNS = ("path", "probability_cancer", "predicted_label", "logit", "runtime", "tta")
Runtime = Literal["torch", "onnx"]
RUNTIMES: tuple[str, ...] = get_args(Runtime)


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
    runtime: str = "torch"
    views: tuple[str, ...] = NO_TTA
    temperature: float = 1.0  # of the calibrated probabilities (1.0: uncalibrated export)
    threshold_source: str = "export"  # "export" (stored with it), "given", or "default" (a checkpoint)
    groups: GroupResults | None = None
    group_csv: Path | None = None

    @property
    def n_non_cancer(self) -> int:
        return self.n_predicted - self.n_cancer

    @property
    def tta(self) -> str:
        """The CSV's ``tta`` cell: ``off``, or the views joined by ``+``."""
        return "+".join(self.views) if self.views != NO_TTA else "off"


def group_csv_path(out_csv: str | Path) -> Path:
    """Where the group-level CSV goes: beside the tile-level one, ``<stem>_groups.csv``."""
    out_csv = Path(out_csv)
    return out_csv.with_name(f"{out_csv.stem}_groups{out_csv.suffix or '.csv'}")


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
        return conform(image, data.in_chans, data.image_size, data.keep_aspect)
    except ValueError as exc:
        raise UnreadableImageError(path, str(exc)) from exc


def _batches(paths: list[Path], size: int) -> Iterator[list[Path]]:
    for start in range(0, len(paths), size):
        yield paths[start : start + size]


def logit_runtime(
    loaded: LoadedModel, runtime: str, device: str | torch.device | None
) -> tuple[LogitFn, torch.device]:
    """The forward pass (batch -> logits) and the device its input batches go to."""
    if runtime == "onnx":
        require_extra("export", "--runtime onnx")
        from raylung.artifacts.onnx_runtime import OnnxLogits  # onnxruntime loads only when asked

        onnx_device = None if device is None else str(device)
        return OnnxLogits(loaded.path, loaded.manifest, onnx_device), torch.device("cpu")
    torch_device = inference_device(device)
    return loaded.model.to(torch_device), torch_device


def predict(
    export_dir: str | Path,
    inputs: list[Path],
    out_csv: str | Path,
    *,
    threshold: float | None = None,
    batch_size: int = 32,
    recursive: bool = True,
    progress: bool = True,
    device: str | torch.device | None = None,
    runtime: Runtime = "torch",
    tta: bool = False,
    group_by: str | None = None,
    group_rule: GroupRule = "mean",
    group_cutoff: float = 0.5,
) -> PredictionSummary:
    """Write one row of :data:`CSV_COLUMNS` for every readable image in `inputs`.

    Args:
        export_dir: an export folder (or a training checkpoint folder).
        inputs: image files and/or folders (searched recursively unless `recursive` is False).
        out_csv: the CSV to write (parent folders are created).
        threshold: probability at or above which the label is ``cancer`` (default: the
            export's stored threshold, ``LoadedModel.threshold``).
        batch_size: images per forward pass.
        progress: show a progress bar on stderr (:func:`raylung.progress.progress_bar`).
        device: where to run the model (torch default: CUDA when present, else CPU; onnx
            default: CPU, ``cuda`` only with onnxruntime-gpu).
        runtime: ``torch`` (the eager model) or ``onnx`` (the export's model.onnx).
        tta: average probabilities over flips and turns (:func:`raylung.artifacts.tta.tta_views`).
        group_by: also write ``<out>_groups.csv``, grouping images by ``folder`` (parent folder
            name) or by a regex on the file name/path (:func:`raylung.artifacts.groups.group_keys`).
        group_rule: ``mean`` or ``fraction`` (:mod:`raylung.artifacts.groups`).
        group_cutoff: the ``fraction`` rule's share of cancer tiles that makes a cancer group.
    """
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise ConfigError(f"threshold must be within 0..1, got {threshold}")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    if runtime not in RUNTIMES:
        raise ConfigError(f"runtime {runtime!r} is not one of {', '.join(RUNTIMES)}")
    loaded = load_export(export_dir)
    loaded.require_binary()
    if threshold is None:
        threshold, source = loaded.threshold, "export" if "threshold" in loaded.manifest else "default"
    else:
        source = "given"
    check_rule(group_rule, threshold, group_cutoff)
    paths = find_images(inputs, recursive)
    keys = dict(zip(paths, group_keys(paths, group_by), strict=True)) if group_by is not None else {}
    forward, device = logit_runtime(loaded, runtime, device)
    data = loaded.config.data
    transform = build_transform(data, train=False)
    views = tta_views(data.image_size[1], data.image_size[0]) if tta else NO_TTA
    summary = PredictionSummary(
        out_csv=Path(out_csv).expanduser(), threshold=threshold, n_found=len(paths), n_predicted=0,
        n_cancer=0, synthetic_model=loaded.manifest.get("synthetic_data"), runtime=runtime, views=views,
        temperature=loaded.temperature, threshold_source=source,
    )  # fmt: skip
    summary.out_csv.parent.mkdir(parents=True, exist_ok=True)
    predicted: list[tuple[Path, float]] = []

    def decode(path: Path) -> np.ndarray | str:
        try:
            return read_image(path, data)
        except (UnreadableImageError, OSError) as exc:
            return exc.reason if isinstance(exc, UnreadableImageError) else str(exc)

    with (
        open(summary.out_csv, "w", newline="") as handle,
        ThreadPoolExecutor(min(4, os.cpu_count() or 1)) as pool,  # decoders release the GIL
        progress_bar(progress) as bar,
        torch.no_grad(),
    ):
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        task = bar.add_task("predicting images", total=len(paths))
        for batch in _batches(paths, batch_size):
            good, images = [], []
            for path, result in zip(batch, pool.map(decode, batch), strict=True):
                if isinstance(result, str):
                    summary.unreadable.append((str(path), result))
                else:
                    good.append(path)
                    images.append(transform(result))
            if images:
                logits = view_logits(torch.stack(images).to(device), forward, views)  # (views, images)
                probs = average_views(logits, loaded.probabilities)  # calibrated, then averaged
                for path, logit, prob in zip(good, logits[0], probs, strict=True):
                    label = int(prob >= threshold)
                    writer.writerow([str(path), f"{prob:.6f}", LABEL_NAMES[label], f"{logit:.6f}", runtime,
                                     summary.tta])  # fmt: skip
                    summary.n_cancer += label
                    predicted.append((path, float(prob)))
            bar.advance(task, len(batch))
    summary.n_predicted = len(predicted)
    for path, reason in summary.unreadable:
        log.debug("no prediction for unreadable %s: %s", path, reason)
    if group_by is not None:
        groups = [keys[path] for path, _ in predicted]
        summary.groups = group_results(
            groups, None, [p for _, p in predicted], threshold, group_rule, group_cutoff
        )
        summary.group_csv = write_group_csv(group_csv_path(summary.out_csv), summary.groups)
    return summary
