"""``search_spaces/ours.yaml`` on the paper's data on N GPUs, predicted from the sweep fit.

No GPU is measured here. The prediction takes
* ours.yaml's search: num_samples, epochs, ASHA's grace period and reduction factor,
  ``max_concurrent_trials``, one GPU per trial (``resources``: 1 worker x 1 GPU);
* the paper's split: 28,614 training and 3,577 validation images (35,769 with the test set);
* ResNet-ours(50)'s training images/s on an H200 (``benchmarks/reference/gpu_h200.json``): batch
  8 bf16 channels_last eager, what ours.yaml trains (``amp``/``channels_last: auto``), and the
  faster settings docs/performance.md names (batch 64; batch 64 compiled);
* for the compiled setting, the H200's first compile (95 s) added to every trial's start-up:
  trials differ in architecture (ECA k, stem widths), so a warm cache (7.5 s) is not assumed;
* validation at 3x the training images/s: forward only, about a third of a step's work
  (an assumption: gpu.py times training steps only);
* a trial's start-up: the fit's wall seconds per trial x the concurrency the smoke sweeps ran
  at (2), i.e. a trial's own start-up in its slot on 2 shared cores;
* ASHA's budget in theory (``asha_epoch_fraction``), not the smoke sweeps' measured saving:
  their rungs (grace 1, rf 2, 4 epochs) are not ours.yaml's (grace 3, rf 3, 20 epochs).
Early stopping (patience 5) is left out, so the hours are an upper bound on that count.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness import print_table
from sweep_model import asha_epoch_fraction, predict_sweep

BENCH_DIR = Path(__file__).resolve().parent
OURS = BENCH_DIR.parent / "search_spaces" / "ours.yaml"
GPU_REFERENCE = BENCH_DIR / "reference" / "gpu_h200.json"
PAPER_SPLIT = {"train": 28_614, "validation": 3_577, "test": 3_578}  # 35,769 images in all
CONCURRENCY = 2  # trials at once in the smoke sweeps (2 one-CPU trials on 2 cores)
VALIDATION_SPEEDUP = 3.0
# (label, batch, mode) of the H200 rows: bf16 channels_last, raylung's GPU default.
GPU_SETTINGS = [
    ("batch 8 (ours.yaml)", 8, "eager"),
    ("batch 64", 64, "eager"),
    ("batch 64 compiled", 64, "compile"),
]


def gpu_rates(path: Path = GPU_REFERENCE) -> dict[str, tuple[float, float]]:
    """ResNet-ours(50)'s training images/s on the H200 and its compile seconds (0 eager), for
    each of GPU_SETTINGS."""
    rows = json.loads(path.read_text())["rows"]
    rates = {}
    for label, batch, mode in GPU_SETTINGS:
        for row in rows:
            if (row["model"], row["batch"], row["mode"], row["precision"], row["layout"]) == (
                "resnet_ours50",
                batch,
                mode,
                "bf16",
                "channels_last",
            ) and row.get("images_per_s"):
                rates[label] = (float(row["images_per_s"]), float(row.get("compile_s") or 0.0))
    return rates


def ours_search() -> dict[str, Any]:
    """What the prediction needs from ours.yaml."""
    from raylung.config.loading import load_config

    cfg = load_config(OURS).config
    if cfg.resources.num_workers * cfg.resources.gpus_per_worker != 1:
        raise ValueError("the prediction assumes one GPU per trial, as ours.yaml has it")
    asha = cfg.search.asha
    fraction = (
        asha_epoch_fraction(cfg.train.epochs, asha.grace_period, int(asha.reduction_factor))
        if asha.enabled
        else 1.0
    )
    return {
        "num_samples": cfg.search.num_samples,
        "epochs": cfg.train.epochs,
        "asha": {"grace_period": asha.grace_period, "reduction_factor": asha.reduction_factor},
        "epoch_fraction": fraction,
        "max_concurrent": cfg.search.max_concurrent_trials,
    }


def predict_ours(per_trial_s: float, gpus: list[int], startup_s: float | None = None) -> dict[str, Any]:
    """Wall hours and GPU-hours of ours.yaml for each GPU count and each GPU setting; a trial's
    start-up is the fit's seconds per trial x CONCURRENCY unless `startup_s` is given."""
    search = ours_search()
    startup_s = per_trial_s * CONCURRENCY if startup_s is None else startup_s
    rows = []
    for label, (rate, compile_s) in gpu_rates().items():
        for n in gpus:
            predicted = predict_sweep(
                num_samples=search["num_samples"],
                epochs=search["epochs"],
                epoch_fraction=search["epoch_fraction"],
                train_images=PAPER_SPLIT["train"],
                val_images=PAPER_SPLIT["validation"],
                train_images_per_s=rate,
                val_images_per_s=rate * VALIDATION_SPEEDUP,
                startup_s=startup_s + compile_s,
                gpus=n,
                max_concurrent=search["max_concurrent"],
            )
            rows.append({"setting": label, "train_images_per_s": rate, "compile_s": compile_s, **predicted})
    return {"search": search, "startup_s": startup_s, "split": PAPER_SPLIT, "rows": rows}


def report_prediction(prediction: dict[str, Any]) -> None:
    search = prediction["search"]
    print_table(
        f"ours.yaml on the paper's data: {search['num_samples']} trials x {search['epochs']} epochs, ASHA "
        f"budget {search['epoch_fraction']:.3f} (theory), start-up {prediction['startup_s']:.0f} s/trial",
        ["setting", "images/s", "GPUs", "epoch s", "wall h", "GPU-h busy", "GPU-h held"],
        [
            [
                r["setting"],
                r["train_images_per_s"],
                r["gpus"],
                r["epoch_s"],
                r["wall_h"],
                r["gpu_h_busy"],
                r["gpu_h_held"],
            ]
            for r in prediction["rows"]
        ],
    )
