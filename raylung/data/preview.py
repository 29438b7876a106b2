"""``raylung data preview``: a PNG grid of augmented training images, to see what is tuned.

Rows are images (cancer and non-cancer alternating), the first column the un-augmented resized
image, the others augmented draws with the configured policy and strengths.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from raylung.config import DataConfig
from raylung.data.images import load_image
from raylung.data.samples import Sample
from raylung.data.transforms import build_transform, describe_augmentations
from raylung.errors import DataError


def pick_samples(samples: list[Sample], rows: int, seed: int) -> list[Sample]:
    """Up to ``rows`` samples, alternating cancer / non-cancer, chosen reproducibly."""
    rng = np.random.default_rng(seed)
    by_label = {label: [s for s in samples if s.label == label] for label in (1, 0)}
    for label in by_label:
        order = rng.permutation(len(by_label[label]))
        by_label[label] = [by_label[label][i] for i in order]
    picked: list[Sample] = []
    while len(picked) < rows and any(by_label.values()):
        for label in (1, 0):
            if by_label[label] and len(picked) < rows:
                picked.append(by_label[label].pop())
    return picked


def make_preview(
    samples: list[Sample],
    cfg: DataConfig,
    out: str | Path,
    rows: int = 4,
    columns: int = 6,
    seed: int = 0,
    synthetic: bool = False,
) -> Path:
    """Write the grid PNG to ``out`` and return its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chosen = pick_samples(samples, rows, seed)
    if not chosen:
        raise DataError("no samples to preview")
    train = build_transform(cfg, train=True)
    width, height = cfg.image_size
    figure, axes = plt.subplots(
        len(chosen), columns, figsize=(columns * 2.2 * width / height, len(chosen) * 2.2), squeeze=False
    )
    for row, sample in enumerate(chosen):
        image = load_image(sample.path, cfg.in_chans, cfg.image_size, cfg.keep_aspect)
        for column in range(columns):
            if column == 0:
                shown, title = image, f"{sample.subclass or sample.label_name}\n{Path(sample.path).name}"
            else:
                train.reseed(seed, row, column)
                shown, title = train.augment(image), f"augmented #{column}"
            axis = axes[row][column]
            axis.imshow(shown[:, :, 0] if shown.shape[2] == 1 else shown, cmap="gray", vmin=0, vmax=255)
            axis.set_title(title, fontsize=7)
            axis.axis("off")
    active = ", ".join(f"{name} {p:g}" for name, p in describe_augmentations(cfg)) or "no augmentation"
    title = f"policy {cfg.augment.policy}: {active}"
    if synthetic:
        title = "SYNTHETIC DEMO DATA\n" + title
    figure.suptitle(title, fontsize=9, color="red" if synthetic else "black")
    figure.tight_layout()
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
