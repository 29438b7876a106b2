"""Named augmentation policies and how AugmentConfig overrides them.

Every field is the probability that one transform is applied to a training image; magnitudes are
fixed (see :mod:`raylung.data.transforms`). ``custom`` starts from ``none``, so only the
strengths given apply. A tuner may search ``policy`` and any strength independently.
"""

from __future__ import annotations

from raylung.config import AugmentConfig

STRENGTH_FIELDS: tuple[str, ...] = (
    "hflip",
    "vflip",
    "rotate90",
    "affine",
    "brightness_contrast",
    "gamma",
    "blur",
    "noise",
    "hed_jitter",
    "intensity_jitter",
)
# Flips and quarter turns are label-preserving for tissue at any rate; the photometric and
# degradation transforms grow with the policy because too much of them erases morphology.
POLICIES: dict[str, dict[str, float]] = {
    "none": dict.fromkeys(STRENGTH_FIELDS, 0.0),
    "light": {
        "hflip": 0.5, "vflip": 0.5, "rotate90": 0.5, "affine": 0.0,
        "brightness_contrast": 0.2, "gamma": 0.0, "blur": 0.0, "noise": 0.0,
        "hed_jitter": 0.2, "intensity_jitter": 0.2,
    },
    "medium": {
        "hflip": 0.5, "vflip": 0.5, "rotate90": 0.75, "affine": 0.3,
        "brightness_contrast": 0.4, "gamma": 0.2, "blur": 0.1, "noise": 0.1,
        "hed_jitter": 0.4, "intensity_jitter": 0.4,
    },
    "heavy": {
        "hflip": 0.5, "vflip": 0.5, "rotate90": 0.75, "affine": 0.6,
        "brightness_contrast": 0.6, "gamma": 0.4, "blur": 0.25, "noise": 0.25,
        "hed_jitter": 0.6, "intensity_jitter": 0.6,
    },
}  # fmt: skip


def resolve_strengths(augment: AugmentConfig) -> dict[str, float]:
    """The probability of every transform: the policy's table row, then the fields set."""
    base = POLICIES["none" if augment.policy == "custom" else augment.policy]
    strengths = dict(base)
    for name in STRENGTH_FIELDS:
        value = getattr(augment, name)
        if value is not None:
            strengths[name] = float(value)
    return strengths
