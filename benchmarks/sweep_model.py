"""The sweep cost model's arithmetic: images seen, the least-squares fit, ASHA's saving, and
the prediction of a GPU sweep. Plain data in, plain data out, so all of it is checked without
running a tune (``tests/test_sweep_scaling.py``).

The model: a sweep's wall time = a x trials + b x images seen (optionally + c). ``a`` is the
wall time each trial adds besides its training (start-up, teardown, Tune's bookkeeping) and
``b`` the wall time per training image, both *at the concurrency the sweep ran with*: two
trials at once on two cores make each trial's own start-up about 2a.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def images_seen(histories: Sequence[Sequence[dict[str, float]]]) -> tuple[int, int]:
    """(images, epochs) the trials trained: each epoch's row holds its images/s and seconds,
    whose product is the images that epoch went through (all of them: no drop_last)."""
    epochs = sum(len(h) for h in histories)
    images = sum(round(row["images_per_s"] * row["epoch_time_s"]) for h in histories for row in h)
    return images, epochs


def fit_cost(
    trials: Sequence[float],
    images: Sequence[float],
    wall: Sequence[float],
    intercept: bool = False,
    nonnegative: bool = False,
) -> dict[str, Any]:
    """Least squares wall = a x trials + b x images (+ c): coefficients, each run's prediction
    and the error. The rank says whether the points pin both coefficients down: with ASHA off
    every trial sees the same images, so trials and images are proportional unless ASHA (or
    another epoch count) breaks the line. `nonnegative`: a coefficient the plain fit makes
    negative (no physical meaning: a sweep's trials and images only add time) is fixed at 0
    and the others are fitted again."""
    columns = [np.asarray(trials, float), np.asarray(images, float)]
    if intercept:
        columns.append(np.ones(len(trials)))
    design = np.column_stack(columns)
    measured = np.asarray(wall, float)
    free = list(range(design.shape[1]))
    while True:
        coef = np.zeros(design.shape[1])
        coef[free], _, rank, _ = np.linalg.lstsq(design[:, free], measured, rcond=None)
        negative = [i for i in free if coef[i] < 0]
        if not nonnegative or not negative:
            break
        free.remove(min(negative, key=lambda i: coef[i]))
    predicted = design @ coef
    fit = {
        "intercept": intercept,
        "nonnegative": nonnegative,
        "per_trial_s": float(coef[0]),
        "per_image_s": float(coef[1]),
        "constant_s": float(coef[2]) if intercept else 0.0,
        "rank": int(rank),
        "predicted_s": [float(p) for p in predicted],
    }
    return fit | fit_error(measured, predicted)


def predict_cost(fit: dict[str, Any], trials: float, images: float) -> float:
    """The fitted wall time of a sweep of `trials` trials that trained `images` images."""
    return fit["per_trial_s"] * trials + fit["per_image_s"] * images + fit["constant_s"]


def fit_error(measured: Sequence[float], predicted: Sequence[float]) -> dict[str, float]:
    """Absolute percentage error of each prediction: its mean (MAPE) and its largest."""
    measured, predicted = np.asarray(measured, float), np.asarray(predicted, float)
    ape = np.abs(predicted - measured) / measured * 100
    return {"mape_pct": float(ape.mean()), "max_ape_pct": float(ape.max())}


def asha_saving(runs: Sequence[dict[str, Any]]) -> list[dict[str, float]]:
    """ASHA on against off at equal num_samples: the fraction of wall time and of images seen
    it saved (positive = ASHA cheaper), for each num_samples both arms ran."""
    full = max(r.get("epochs", 0) for r in runs) if runs else 0
    # Only runs at the sweep's full epochs pair up (the short runs that separate start-up are off only).
    by_arm = {(r["asha"], r["num_samples"]): r for r in runs if r.get("epochs", full) == full}
    savings = []
    for n in sorted({r["num_samples"] for r in runs}):
        on, off = by_arm.get((True, n)), by_arm.get((False, n))
        if on and off:
            savings.append(
                {
                    "num_samples": n,
                    "wall_saving": 1 - on["wall_s"] / off["wall_s"],
                    "images_saving": 1 - on["images_seen"] / off["images_seen"],
                    "with_errors": "error" in on.get("statuses", []) + off.get("statuses", []),
                }
            )
    return savings


def asha_epoch_fraction(epochs: int, grace_period: int, reduction_factor: int) -> float:
    """ASHA's budget in theory: the expected share of `epochs` a trial trains when each rung
    (grace x rf^k epochs, below `epochs`, as Ray's ASHAScheduler places them) passes the top
    1/rf of the trials on. Async ASHA never stops the first trial to reach a rung, so a small
    sweep saves less than this."""
    rungs = []
    rung = min(grace_period, epochs)
    while rung < epochs:
        rungs.append(rung)
        rung *= reduction_factor
    if not rungs:
        return 1.0
    expected = rungs[0]
    for k, (start, end) in enumerate(zip(rungs, [*rungs[1:], epochs], strict=True)):
        expected += (end - start) / reduction_factor ** (k + 1)
    return expected / epochs


def predict_sweep(
    *,
    num_samples: int,
    epochs: int,
    epoch_fraction: float,
    train_images: int,
    val_images: int,
    train_images_per_s: float,
    val_images_per_s: float,
    startup_s: float,
    gpus: int,
    max_concurrent: int | None = None,
) -> dict[str, float]:
    """A sweep of one-GPU trials on `gpus` GPUs: every trial holds its GPU from its start-up
    to its last epoch (train + validation each epoch); trials run `min(gpus, max_concurrent)`
    at a time, packed without gaps (a lower bound: the last wave's tail is not counted, except
    that the sweep lasts at least one trial)."""
    concurrency = min(gpus, max_concurrent or gpus, num_samples)
    epoch_s = train_images / train_images_per_s + val_images / val_images_per_s
    trial_epochs = num_samples * epochs * epoch_fraction
    busy_s = num_samples * startup_s + trial_epochs * epoch_s
    longest_trial_s = startup_s + epochs * epoch_s
    wall_s = max(busy_s / concurrency, min(longest_trial_s, busy_s))
    return {
        "gpus": gpus,
        "concurrency": concurrency,
        "epoch_s": epoch_s,
        "trial_epochs": trial_epochs,
        "wall_h": wall_s / 3600,
        "gpu_h_busy": busy_s / 3600,
        "gpu_h_held": wall_s * gpus / 3600,
    }
