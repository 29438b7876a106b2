"""The images an evaluation scores, and their logits: the split's samples, every TTA view.

Shared by ``raylung evaluate`` and by the export's fit on the validation split
(:mod:`raylung.artifacts.fitting`), so the two score exactly the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from raylung.artifacts.loader import LoadedModel
from raylung.artifacts.tta import NO_TTA, view_logits
from raylung.data import ImageCache, LungDataset, Sample, SplitSet, is_synthetic, worker_init_fn
from raylung.data.files import MAX_LISTED
from raylung.data.naming import split_name
from raylung.errors import ConfigError, DataError
from raylung.progress import progress_bar

PLAIN = NO_TTA


@dataclass(frozen=True)
class Scored:
    """The logits of the images that could be read, in split order.

    ``logits`` has one row per view (row 0 the image as given); ``skipped`` lists the images
    that could not be decoded, with why.
    """

    samples: list[Sample]
    labels: np.ndarray
    logits: np.ndarray  # (views, n), float64
    views: tuple[str, ...]
    skipped: list[tuple[str, str]]

    @property
    def groups(self) -> np.ndarray:
        return np.array([s.group for s in self.samples])


def split_samples(
    loaded: LoadedModel, split: str, splits_file: str | Path | None, data_root: Path | None
) -> tuple[list[Sample], str]:
    """The split's samples, with paths moved from the run's data root to `data_root` if given."""
    data = loaded.config.data
    location = str(splits_file) if splits_file is not None else data.splits_file
    if not location:
        raise DataError(f"the config of {loaded.path} names no data.splits_file; pass a splits file")
    wanted = split_name(split)
    if wanted is None:
        raise ConfigError(f"split {split!r} is not train, validation or test")
    root = Path(data_root).expanduser() if data_root is not None else Path(data.root).expanduser()
    split_set = SplitSet.load(location, root=root)
    if not split_set.get(wanted):
        raise DataError(f"splits file {location} has no {wanted} samples (it has: {', '.join(split_set)})")
    samples = split_set[wanted]
    if data_root is not None:
        samples = [_rebase(s, Path(data.root).expanduser(), root) for s in samples]
    missing = [s.path for s in samples if not Path(s.path).is_file()]
    if missing:
        more = f" and {len(missing) - MAX_LISTED} more" if len(missing) > MAX_LISTED else ""
        raise DataError(
            f"{len(missing)} image(s) of the {wanted} split are missing: "
            f"{', '.join(missing[:MAX_LISTED])}{more}; "
            "if the data moved, pass its new root (data_root / --data-root)"
        )
    return samples, location


def _rebase(sample: Sample, old_root: Path, new_root: Path) -> Sample:
    """A sample under the run's old root, pointed at the same relative path under `new_root`."""
    try:
        relative = Path(sample.path).resolve().relative_to(old_root.resolve())
    except ValueError:
        return sample
    return replace(sample, path=str(new_root / relative))


def is_synthetic_split(samples: list[Sample]) -> bool:
    """Whether any evaluated image lies inside the synthetic demo set (its marker is at the root)."""
    return any(is_synthetic(folder) for folder in {Path(s.path).parent for s in samples})


def score_samples(
    loaded: LoadedModel,
    samples: list[Sample],
    batch_size: int,
    device: torch.device,
    views: Sequence[str] = PLAIN,
    progress: bool = False,
) -> Scored:
    """Run the model over `samples` (fp32, eval mode), once per view.

    ``progress`` shows, on stderr, the images cached (the first evaluation of a split decodes
    and resizes every image) and then the images scored.
    """
    data = loaded.config.data
    if progress and data.cache:  # the dataset's own build below then only finds the entries
        ImageCache(data).build([s.path for s in samples], progress=True)
    dataset = LungDataset(samples, data, train=False)
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=data.loader_workers,
        worker_init_fn=worker_init_fn if data.loader_workers else None,
    )  # fmt: skip
    model = loaded.model.to(device).eval()
    index, logits, labels = [], [], []
    with progress_bar(progress) as bar:
        task = bar.add_task("scoring images", total=len(dataset))
        for images, batch_labels, batch_index in loader:
            logits.append(view_logits(images.to(device), model, views))
            labels.append(np.asarray(batch_labels, dtype=np.float64))
            index.append(np.asarray(batch_index))
            bar.advance(task, len(batch_index))
    if not index:
        raise DataError("no image of the split could be read")
    order = np.argsort(np.concatenate(index))
    kept = np.concatenate(index)[order]
    return Scored(
        samples=[dataset.samples[i] for i in kept],
        labels=np.concatenate(labels)[order],
        logits=np.concatenate(logits, axis=1)[:, order],
        views=tuple(views),
        skipped=list(dataset.skipped),
    )
