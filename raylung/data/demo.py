"""The embedded synthetic demo dataset, in the paper's exact layout.

``ROOT/{train,validation,test}/{good_cancer,bad_cancer,good_non_cancer,bad_non_cancer}/*.png``
rendered by :mod:`raylung.data.synth`. It is deterministic for a seed and can never pass for
real data: ``SYNTHETIC_DEMO_DATA.txt`` at the root (written first) marks it, and reports stamp
"synthetic demo data" wherever :func:`is_synthetic` is true.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np
from filelock import FileLock

from raylung.config import DataConfig
from raylung.data.naming import PAPER_SUBCLASSES, SPLITS
from raylung.data.synth import render_demo_image
from raylung.errors import DataError

log = logging.getLogger(__name__)
MARKER = "SYNTHETIC_DEMO_DATA.txt"
DEMO_VERSION = 1
DEFAULT_PER_SUBCLASS = 40
DEFAULT_SIZE = (160, 120)
# validation and test each get this fraction of the training count per subclass
EVAL_FRACTION = 0.5


def is_synthetic(root: str | Path) -> bool:
    """True when ``root`` (or a folder above it) is raylung's synthetic demo data."""
    path = Path(root).expanduser().resolve()
    return any((folder / MARKER).is_file() for folder in (path, *path.parents))


def _marker_text(per_subclass: int, size: tuple[int, int], seed: int) -> str:
    return (
        "SYNTHETIC DEMO DATA -- NOT REAL PATHOLOGY IMAGES\n"
        "Written by `raylung data demo` (raylung.data.demo) for smoke tests and tutorials.\n"
        "DAPI-like rendered nuclei; cancer = larger, irregular, crowded, brighter nuclei, with\n"
        "overlapping class distributions; bad = blurred, noisy. Results on it mean nothing clinically.\n"
        f"generator_version={DEMO_VERSION} per_subclass={per_subclass} size={size[0]}x{size[1]} seed={seed}\n"
    )


def make_demo_dataset(
    out: str | Path,
    per_subclass: int = DEFAULT_PER_SUBCLASS,
    size: tuple[int, int] = DEFAULT_SIZE,
    seed: int = 0,
) -> Path:
    """Write the demo set to ``out``: ``per_subclass`` training images per subclass and half
    as many in validation and in test. Refuses to write into a folder holding other data."""
    root = Path(out).expanduser()
    if per_subclass < 2:
        raise DataError(f"--per-subclass must be at least 2, got {per_subclass}")
    if min(size) < 16:
        raise DataError(f"demo image size must be at least 16x16, got {size[0]}x{size[1]}")
    if root.exists() and any(root.iterdir()) and not (root / MARKER).is_file():
        raise DataError(f"{root} exists and is not raylung demo data; choose an empty or new folder")
    root.mkdir(parents=True, exist_ok=True)
    (root / MARKER).write_text(_marker_text(per_subclass, size, seed))
    counts = {"train": per_subclass, "validation": max(1, round(per_subclass * EVAL_FRACTION))}
    counts["test"] = counts["validation"]
    for split_index, split in enumerate(SPLITS):
        for class_index, (subclass, label) in enumerate(PAPER_SUBCLASSES.values()):
            folder = root / split / subclass
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(counts[split]):
                rng = np.random.default_rng([seed, DEMO_VERSION, split_index, class_index, i])
                image = render_demo_image(rng, label, subclass.startswith("bad"), size)
                cv2.imwrite(str(folder / f"{subclass}_{i:04d}.png"), image[:, :, ::-1])  # RGB -> BGR
    log.info("wrote synthetic demo data to %s", root)
    return root


def ensure_demo_data(cfg: DataConfig) -> Path:
    """``cfg.root``, after writing the demo set there when ``cfg.demo`` and it is missing or empty.

    Safe when several processes call it at once: one writes into a temp folder under a file lock
    and renames it into place; the others wait and find it done.
    """
    root = Path(cfg.root).expanduser()
    if not cfg.demo or is_synthetic(root):
        return root
    if root.exists() and any(root.iterdir()):
        log.warning("data.demo is set but %s holds other data; using it as is", root)
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(root.parent / f".{root.name}.lock", preserve_lock_file=True):
        if is_synthetic(root):
            return root
        staging = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{root.name}.staging-"))
        try:
            make_demo_dataset(staging)
            if root.exists():
                root.rmdir()  # empty, checked above
            os.replace(staging, root)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return root
