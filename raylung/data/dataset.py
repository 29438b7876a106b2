"""The torch Dataset: cached or decoded image -> (augmented) tensor, label, index.

Every image is decoded once when the Dataset is built (the cache build, or a validation pass
without a cache), so a corrupt or truncated file fails fast, or with ``on_bad_image: skip`` is
left out and counted in :attr:`LungDataset.skipped`, instead of crashing mid-epoch.

Augmentation is seeded per (seed, epoch, index): the same seed reproduces the same augmented
batch whatever the loader worker count. The epoch lives in shared memory, so
:meth:`LungDataset.set_epoch` reaches persistent loader workers too (call it before iterating).
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor

import torch
from torch.utils.data import Dataset

from raylung.config import DataConfig
from raylung.data.cache import ImageCache
from raylung.data.files import report_bad
from raylung.data.images import UnreadableImageError, load_image
from raylung.data.samples import Sample
from raylung.data.transforms import build_transform
from raylung.errors import DataError

log = logging.getLogger(__name__)


class LungDataset(Dataset):
    """Samples -> ``(image float32 CxHxW, label float32 scalar, index)``.

    Args:
        samples: the split to serve (``SplitSet[...]``).
        cfg: sizes, channels, normalisation, augmentation, cache and ``on_bad_image``.
        train: augment (training) or not (evaluation).
        seed: augmentation seed; with the epoch and index it fixes each augmented image.
        prepare: decode everything up front (cache build or validation pass); turn off only
            when the files were just checked.
    """

    def __init__(
        self, samples: list[Sample], cfg: DataConfig, train: bool, seed: int = 0, *, prepare: bool = True
    ) -> None:
        self.cfg = cfg
        self.train = train
        self.seed = seed
        self.transform = build_transform(cfg, train)
        self.cache = ImageCache(cfg) if cfg.cache else None
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()
        self.skipped: list[tuple[str, str]] = []
        if prepare:
            self.skipped = self._prepare(samples)
        dropped = {path for path, _ in self.skipped}
        self.samples = [s for s in samples if s.path not in dropped]
        if not self.samples:
            raise DataError("no readable images left in this split")

    def _prepare(self, samples: list[Sample]) -> list[tuple[str, str]]:
        paths = [s.path for s in samples]
        if self.cache is not None:
            bad = self.cache.build(paths).bad
        else:
            bad = _validate(paths, self.cfg)
        if bad:
            report_bad(bad, self.cfg.on_bad_image, "the dataset")
        return bad

    def set_epoch(self, epoch: int) -> None:
        self._epoch[0] = epoch

    @property
    def epoch(self) -> int:
        return int(self._epoch[0])

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int):  # -> np.ndarray
        """The resized, un-augmented uint8 image of sample ``index``."""
        path = self.samples[index].path
        if self.cache is not None:
            return self.cache.get(path)
        return load_image(path, self.cfg.in_chans, self.cfg.image_size, self.cfg.keep_aspect)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        image = self.load(index)
        if self.train:
            self.transform.reseed(self.seed, self.epoch, index)
        label = torch.tensor(float(self.samples[index].label), dtype=torch.float32)
        return self.transform(image), label, index


def _validate(paths: list[str], cfg: DataConfig) -> list[tuple[str, str]]:
    """Decode every file once (threads: the decoders release the GIL); (path, reason) of failures."""

    def one(path: str) -> str | None:
        try:
            load_image(path, cfg.in_chans, cfg.image_size, cfg.keep_aspect)
        except UnreadableImageError as exc:
            return exc.reason
        return None

    with ThreadPoolExecutor(min(4, os.cpu_count() or 1)) as pool:
        reasons = list(pool.map(one, paths))
    return [(p, r) for p, r in zip(paths, reasons, strict=True) if r is not None]


def worker_init_fn(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: one torch thread per worker, so N workers use N cores.

    It deliberately leaves OpenCV alone: ``cv2.setNumThreads`` in a forked worker deadlocks once
    the parent has used OpenCV's thread pool, and OpenCV is fork-safe otherwise.
    """
    torch.set_num_threads(1)
