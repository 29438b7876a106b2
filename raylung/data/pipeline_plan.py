"""What a config's image pipeline does, resolved without building it.

The normalisation statistics and the training transforms that apply, with their probabilities,
in pipeline order. :mod:`raylung.data.transforms` builds the pipeline from this plan, and the
effective pipeline a run records (:mod:`raylung.plan.effective`) reads it directly: a Tune trial
records its pipeline without importing albumentations (0.6 CPU-s of each trial's start-up).
"""

from __future__ import annotations

from raylung.config import DataConfig
from raylung.data.policies import resolve_strengths
from raylung.errors import DataError

# ImageNet statistics: what the pretrained timm baselines expect; harmless when training from
# scratch. `raylung data check` prints a dataset's own mean/std to use instead.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
GRAY_MEAN = (0.449,)  # mean of the ImageNet channel statistics, for in_chans = 1
GRAY_STD = (0.226,)

# The training transforms in the order they are applied (geometry, then stain and intensity,
# then degradations); each name is an ``AugmentConfig`` strength field.
PIPELINE_ORDER: tuple[str, ...] = (
    "hflip",
    "vflip",
    "rotate90",
    "affine",
    "hed_jitter",
    "intensity_jitter",
    "brightness_contrast",
    "gamma",
    "blur",
    "noise",
)

# Transforms that can never change an image of `in_chans` channels: never built for it.
_NO_EFFECT_ON: dict[int, frozenset[str]] = {1: frozenset({"hed_jitter"})}


def normalisation(cfg: DataConfig) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) on the 0..1 scale: the config's, else ImageNet's (gray: their average)."""
    mean = cfg.mean or (IMAGENET_MEAN if cfg.in_chans == 3 else GRAY_MEAN)
    std = cfg.std or (IMAGENET_STD if cfg.in_chans == 3 else GRAY_STD)
    if len(mean) != cfg.in_chans or len(std) != cfg.in_chans:
        raise DataError(
            f"data.mean and data.std need {cfg.in_chans} value(s) each (in_chans), got {mean}, {std}"
        )
    if min(std) <= 0:
        raise DataError(f"data.std must be positive, got {std}")
    return tuple(mean), tuple(std)


def planned_augmentations(cfg: DataConfig) -> list[tuple[str, float]]:
    """(strength field, probability) of every training transform that is built, in order.

    A transform is built when its resolved probability is above zero and it can act on the
    input (HED stain jitter needs 3 channels).
    """
    p = resolve_strengths(cfg.augment)
    skipped = _NO_EFFECT_ON.get(cfg.in_chans, frozenset())
    return [(name, p[name]) for name in PIPELINE_ORDER if p[name] > 0 and name not in skipped]
