"""The sweep cost model (``benchmarks/sweep_scaling.py``): its arithmetic on numbers worked out
by hand, and one small real sweep run end to end as a subprocess (no timed assertions)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH_DIR = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH_DIR))

import sweep_model  # noqa: E402
import sweep_predict  # noqa: E402
import sweep_scaling  # noqa: E402


def test_fit_recovers_known_coefficients_exactly():
    trials = [2, 2, 4, 4, 8, 8]
    images = [1280, 900, 2560, 1700, 5120, 3000]
    wall = [15.0 * t + 0.02 * i for t, i in zip(trials, images, strict=True)]
    fit = sweep_model.fit_cost(trials, images, wall)
    assert fit["per_trial_s"] == pytest.approx(15.0) and fit["per_image_s"] == pytest.approx(0.02)
    assert fit["rank"] == 2 and fit["mape_pct"] == pytest.approx(0, abs=1e-9)
    with_c = sweep_model.fit_cost(trials, images, [w + 7.0 for w in wall], intercept=True)
    coefficients = (with_c["per_trial_s"], with_c["per_image_s"], with_c["constant_s"])
    assert coefficients == pytest.approx((15, 0.02, 7))


def test_nonnegative_fit_drops_a_coefficient_the_plain_fit_makes_negative():
    trials, images = [2, 2, 4, 4], [1000, 600, 2000, 1400]
    wall = [0.02 * i - 1.0 * t for t, i in zip(trials, images, strict=True)]  # a < 0: no physical sense
    assert sweep_model.fit_cost(trials, images, wall)["per_trial_s"] == pytest.approx(-1.0)
    kept = sweep_model.fit_cost(trials, images, wall, nonnegative=True)
    assert kept["per_trial_s"] == 0.0 and kept["per_image_s"] > 0
    only_images = sweep_model.fit_cost(images, images, wall, nonnegative=True)  # same column twice
    assert only_images["per_trial_s"] >= 0 and only_images["per_image_s"] >= 0


def test_fit_says_when_trials_and_images_are_on_one_line():
    """ASHA off: images = trials x epochs x images per epoch, so one coefficient is unknown."""
    fit = sweep_model.fit_cost([2, 4, 8], [640, 1280, 2560], [40.0, 80.0, 160.0])
    assert fit["rank"] == 1 and fit["max_ape_pct"] == pytest.approx(0, abs=1e-9)


def test_fit_error_is_the_mean_and_max_absolute_percentage_error():
    error = sweep_model.fit_error([100.0, 200.0, 50.0], [110.0, 190.0, 50.0])
    assert error["mape_pct"] == pytest.approx((10 + 5 + 0) / 3) and error["max_ape_pct"] == pytest.approx(10)


def test_images_seen_sums_images_per_s_times_seconds_over_every_epoch():
    histories = [
        [{"images_per_s": 80.0, "epoch_time_s": 2.0}, {"images_per_s": 40.0, "epoch_time_s": 4.0}],
        [{"images_per_s": 160.0, "epoch_time_s": 1.0}],
    ]
    assert sweep_model.images_seen(histories) == (480, 3)


def test_asha_saving_pairs_the_arms_at_equal_num_samples():
    runs = [
        {"asha": False, "num_samples": 4, "wall_s": 100.0, "images_seen": 2560},
        {"asha": True, "num_samples": 4, "wall_s": 80.0, "images_seen": 1600},
        {"asha": True, "num_samples": 8, "wall_s": 150.0, "images_seen": 3000},  # no pair: left out
        # a short run (it separates start-up from per-image cost) is no arm of the comparison
        {"asha": False, "num_samples": 8, "epochs": 1, "wall_s": 40.0, "images_seen": 1280},
    ]
    for run in runs[:3]:
        run["epochs"] = 4
    (saving,) = sweep_model.asha_saving(runs)
    assert saving["num_samples"] == 4
    assert saving["wall_saving"] == pytest.approx(0.2) and saving["images_saving"] == pytest.approx(0.375)


@pytest.mark.parametrize(
    "epochs, grace, rf, expected",
    [
        (4, 1, 2, (1 + 1 / 2 + 2 / 4) / 4),  # rungs 1, 2: half go on to 2, a quarter to 4
        (20, 3, 3, (3 + 6 / 3 + 11 / 9) / 20),  # ours.yaml: rungs 3, 9
        (2, 3, 3, 1.0),  # grace period past the last epoch: no rung, nothing saved
    ],
)
def test_asha_epoch_fraction_follows_the_rungs(epochs, grace, rf, expected):
    assert sweep_model.asha_epoch_fraction(epochs, grace, rf) == pytest.approx(expected)


def test_predict_sweep_on_hand_computed_numbers():
    common = dict(
        num_samples=10,
        epochs=4,
        epoch_fraction=0.5,
        train_images=100,
        val_images=50,
        train_images_per_s=10.0,
        val_images_per_s=50.0,
        startup_s=30.0,
    )
    # Each epoch 100/10 + 50/50 = 11 s; 10 x 4 x 0.5 = 20 epochs; busy 10 x 30 + 20 x 11 = 520 s.
    two = sweep_model.predict_sweep(**common, gpus=2)
    assert two["epoch_s"] == pytest.approx(11) and two["trial_epochs"] == pytest.approx(20)
    assert two["gpu_h_busy"] == pytest.approx(520 / 3600) and two["wall_h"] == pytest.approx(260 / 3600)
    # 16 GPUs but at most 4 trials at once: wall 520 / 4, every GPU held for it.
    capped = sweep_model.predict_sweep(**common, gpus=16, max_concurrent=4)
    assert capped["concurrency"] == 4 and capped["wall_h"] == pytest.approx(130 / 3600)
    assert capped["gpu_h_held"] == pytest.approx(16 * 130 / 3600)
    # More GPUs than trials: the sweep still lasts one whole trial (30 + 4 x 11 s).
    wide = sweep_model.predict_sweep(**common, gpus=64)
    assert wide["concurrency"] == 10 and wide["wall_h"] == pytest.approx(74 / 3600)


def test_ours_prediction_reads_ours_yaml_and_the_h200_rates():
    prediction = sweep_predict.predict_ours(10.0, [1, 8])
    search = prediction["search"]
    assert (search["num_samples"], search["epochs"], search["max_concurrent"]) == (48, 20, 8)
    assert search["epoch_fraction"] == pytest.approx((3 + 2 + 11 / 9) / 20)
    assert prediction["startup_s"] == 20.0  # 10 s per trial at concurrency 2
    batch8 = [r for r in prediction["rows"] if r["setting"].startswith("batch 8")]
    assert [r["gpus"] for r in batch8] == [1, 8]
    assert batch8[0]["train_images_per_s"] == pytest.approx(148.2, rel=0.01)
    assert batch8[0]["wall_h"] == pytest.approx(8 * batch8[1]["wall_h"])  # 48 trials pack 8 GPUs evenly


def test_quick_flags_pick_the_small_sweep_without_a_warm_up():
    quick = sweep_scaling.parse_args(["--quick"])
    assert (quick.trials, quick.epochs, quick.warmup, quick.arms) == ([1, 2], 2, False, ["off", "on"])
    assert quick.short_epochs == 0
    full = sweep_scaling.parse_args(["--epochs", "3"])
    assert (full.trials, full.epochs, full.warmup, full.short_epochs) == ([2, 4, 8], 3, True, 1)


def test_arm_overrides_switch_only_asha():
    from raylung.config.loading import load_config

    on, off = (
        load_config(sweep_scaling.SMOKE, sweep_scaling.arm_overrides(Path("/tmp/x"), "x", 3, 2, asha)).config
        for asha in (True, False)
    )
    assert on.search.asha.enabled and not off.search.asha.enabled
    assert on.train.patience is None and off.train.patience is None
    assert on.search.asha.grace_period == 1 and on.search.asha.reduction_factor == 2
    assert on.model_dump(exclude={"search"}) == off.model_dump(exclude={"search"})


@pytest.mark.slow
def test_sweep_scaling_runs_a_tune_end_to_end_and_counts_its_images(tmp_path):
    """A 2-trial sweep at 2 epochs and at 1 (ASHA off, no warm-up: the smallest setting that
    separates start-up from per-image cost), each with its own Ray."""
    out = tmp_path / "sweep.json"
    command = [sys.executable, str(BENCH_DIR / "sweep_scaling.py"), "--trials", "2", "--epochs", "2"]
    command += [
        "--short-epochs",
        "1",
        "--arms",
        "off",
        "--no-warmup",
        "--predict-gpus",
        "1",
        "--out",
        str(out),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and out.is_file(), done.stdout[-3000:] + done.stderr[-3000:]
    saved = json.loads(out.read_text())
    train_images = saved["split_sizes"]["train"]
    full, short = saved["runs"]
    for run, epochs in ((full, 2), (short, 1)):
        assert train_images > 0 and run["asha"] is False and run["trials"] == 2 and run["wall_s"] > 0
        # Every trial trains every epoch on every training image: 2 trials x epochs x the split.
        assert run["epochs"] == epochs and run["epochs_per_trial"] == [epochs, epochs]
        assert run["epochs_trained"] == 2 * epochs and run["images_seen"] == 2 * epochs * train_images
    fit = saved["fit"]["no_intercept"]
    assert len(fit["predicted_s"]) == 2 and fit["rank"] == 2  # trials and images no longer on one line
    # Only full-length runs pair up for ASHA's saving, and there is no ASHA arm here.
    assert saved["asha_saving"] == [] and [r["gpus"] for r in saved["prediction"]["rows"]][:1] == [1]
