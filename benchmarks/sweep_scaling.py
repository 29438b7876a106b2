"""A cost model of a sweep: wall time = start-up x trials + per-image cost x images seen.

Runs the smoke tune (``search_spaces/smoke.yaml``; W&B disabled; demo data and its image cache
made beforehand, untimed) at several ``search.num_samples``, each with ASHA on (smoke.yaml's
grace period 1, reduction factor 2) and off, every run in its own subprocess with its own
local Ray on 2 CPUs, through raylung's public steps (``workflows.tune.start``,
``tune.tuner.run``, ``workflows.tune.finish``; the helpers of ``tune_overhead.py``). Early
stopping (``train.patience``) is off in both arms, so ASHA is the only thing that ends a
trial early. Each run records the wall time of ``tuner.run``, its trials, and the images and
epochs they trained (from each trial's history: images/s x seconds per epoch).

The runs go in alternating arm order after one untimed warm-up tune (cold file caches). A
least-squares fit (``sweep_model.py``) of wall = a x trials + b x images seen -- plain, with an
intercept, and with a, b >= 0 (the one the prediction uses: a negative start-up means nothing)
-- over the runs whose trials all ended normally gives each run's prediction and the fit's
error, and ASHA's saving at equal num_samples. Trials run two at a time on the 2 cores, so
``a`` and ``b`` are wall seconds per trial and per image *at concurrency 2*; a trial's own
start-up in its slot is about 2a.

``--predict-gpus`` turns the fit into a prediction for ``search_spaces/ours.yaml`` on the
paper's data (28,614 training and 3,577 validation images of 35,769) on N GPUs, one trial per
GPU, from ResNet-ours(50)'s images/s measured on an H200 (``benchmarks/reference/gpu_h200.json``).

    python benchmarks/sweep_scaling.py                       # 2, 4, 8 trials x ASHA on/off, 4 epochs
    python benchmarks/sweep_scaling.py --quick               # 1, 2 trials x 2 epochs, no warm-up
    python benchmarks/sweep_scaling.py --from-json benchmarks/results/sweep_scaling.json  # refit, predict
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(BENCH_DIR))

from harness import git_commit, print_table, save_json  # noqa: E402
from sweep_model import asha_saving, fit_cost, images_seen, predict_cost  # noqa: E402
from sweep_predict import CONCURRENCY, predict_ours, report_prediction  # noqa: E402
from timeline import TIMELINE_ENV  # noqa: E402
from tune_overhead import SMOKE, child_env, overrides, prepare_data, timed  # noqa: E402

os.environ.setdefault("COLUMNS", "160")

# (name, intercept, coefficients kept >= 0); the prediction uses PREDICTION_FIT.
FITS = [("no_intercept", False, False), ("intercept", True, False), ("nonnegative", False, True)]
PREDICTION_FIT = "nonnegative"
SEED = 0  # smoke.yaml's search.seed, stated so a run is the same sweep every time


def arm_overrides(work: Path, name: str, trials: int, epochs: int, asha: bool) -> list[str]:
    """tune_overhead's smoke tune (early stopping off) with ASHA as smoke.yaml has it, or off."""
    return [
        *overrides(work, name, trials, epochs),
        f"search.asha.enabled={str(asha).lower()}",
        f"search.seed={SEED}",
    ]


# --- the child: one tune in its own process and its own local Ray ----------------------------


def child(args: argparse.Namespace) -> None:
    os.environ.pop("RAY_ADDRESS", None)
    import ray

    from raylung.cluster.connect import RayTarget, connect
    from raylung.config.loading import load_config
    from raylung.tune import tuner
    from raylung.workflows import tune as workflow

    target = RayTarget(num_cpus=2)
    connect(target)
    loaded = load_config(SMOKE, arm_overrides(args.work, args.name, args.trials, args.epochs, args.asha))
    phases: dict[str, float] = {}
    with timed(phases, "start"):
        prepared = workflow.start(loaded, loaded.config.experiment.name, target)
    with timed(phases, "run"):
        grid = tuner.run(prepared, 0.0)
    with timed(phases, "finish"):
        outcome = workflow.finish(prepared, grid)
    ray.shutdown()
    trials = [
        {
            "trial_id": t.trial_id,
            "status": t.status,
            "epochs": len(t.history),
            "history": t.history,
            "error": (t.error or "")[-2000:] or None,
        }
        for t in outcome.trials
    ]
    Path(args.child).write_text(json.dumps({"phases_s": phases, "trials": trials}))


def run_arm(work: Path, trials: int, epochs: int, asha: bool, index: int) -> dict[str, Any]:
    """One tune in a fresh subprocess with a fresh local Ray; its wall time, trials, images."""
    name = f"sweep-{index}"
    out = work / f"{name}.json"
    command = [sys.executable, __file__, "--child", str(out), "--work", str(work), "--name", name]
    command += ["--trials", str(trials), "--epochs", str(epochs), "--asha" if asha else "--no-asha"]
    label = "warm-up" if index < 0 else f"ASHA {'on ' if asha else 'off'}"
    print(f"{label}: {trials} trials x {epochs} epochs ...", flush=True)
    env = child_env(None, work / f"{name}.timeline.jsonl")
    for key in ("RAY_TRAIN_CALLBACKS", TIMELINE_ENV):  # no timeline: nothing but the tune is timed
        env.pop(key, None)
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode or not out.is_file():
        raise RuntimeError(f"tune failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    result = json.loads(out.read_text())
    images, trained = images_seen([t["history"] for t in result["trials"]])
    return {
        "asha": asha,
        "num_samples": trials,
        "epochs": epochs,
        "trials": len(result["trials"]),
        "epochs_trained": trained,
        "images_seen": images,
        "wall_s": result["phases_s"]["run"],
        "process_s": time.perf_counter() - start,
        "phases_s": result["phases_s"],
        "statuses": [t["status"] for t in result["trials"]],
        "epochs_per_trial": [t["epochs"] for t in result["trials"]],
        "errors": [t["error"] for t in result["trials"] if t["error"]],
    }


def split_sizes(work: Path) -> dict[str, int]:
    """Images per split of the demo set the tunes train on."""
    from raylung.config.loading import load_config
    from raylung.data import resolve_splits

    cfg = load_config(SMOKE, overrides(work, "sizes", 1, 1)).config
    return {name: len(samples) for name, samples in resolve_splits(cfg.data).items()}


def fits(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Both fits over the runs whose trials all ended normally: a trial that errored (a worker
    group that timed out waiting for its CPU, say) measures the failure, not the model."""
    used = [r for r in runs if "error" not in r["statuses"]] or runs
    columns = ([r["trials"] for r in used], [r["images_seen"] for r in used], [r["wall_s"] for r in used])
    fitted = {}
    for name, intercept, nonnegative in FITS:
        fit = fit_cost(*columns, intercept=intercept, nonnegative=nonnegative)
        fit["runs_used"] = [runs.index(r) for r in used]
        fit["predicted_s"] = [predict_cost(fit, r["trials"], r["images_seen"]) for r in runs]
        fitted[name] = fit
    return fitted


def report(runs: list[dict[str, Any]], fitted: dict[str, dict[str, Any]], savings: list[dict]) -> None:
    plain = fitted["no_intercept"]
    print_table(
        f"Sweeps of smoke.yaml (concurrency {CONCURRENCY}: 2 trials at once on 2 cores)",
        [
            "ASHA",
            "num_samples",
            "epochs each",
            "epochs",
            "images",
            "wall s",
            *(f"fit s: {n}" for n in fitted),
            "statuses",
        ],
        [
            [
                "on" if r["asha"] else "off",
                r["num_samples"],
                r.get("epochs", "-"),
                r["epochs_trained"],
                r["images_seen"],
                r["wall_s"],
                *(f["predicted_s"][i] for f in fitted.values()),
                ", ".join(f"{s}:{r['statuses'].count(s)}" for s in sorted(set(r["statuses"])))
                + ("" if i in plain["runs_used"] else " (not fitted)"),
            ]
            for i, r in enumerate(runs)
        ],
    )
    print_table(
        f"wall = a x trials + b x images (+ c), at concurrency {CONCURRENCY}",
        ["fit", "a: s per trial", "b: ms per image", "c: s", "MAPE %", "max APE %", "rank"],
        [
            [
                name,
                f["per_trial_s"],
                f["per_image_s"] * 1e3,
                f["constant_s"],
                f["mape_pct"],
                f["max_ape_pct"],
                f["rank"],
            ]
            for name, f in fitted.items()
        ],
    )
    if plain["rank"] < 2:
        print("trials and images seen lie on one line (no trial was cut short): a and b are not separable")
    if savings:
        print_table(
            "ASHA's saving at equal num_samples (1 - on / off)",
            ["num_samples", "wall saving %", "images saving %", "errored trials"],
            [
                [
                    s["num_samples"],
                    s["wall_saving"] * 100,
                    s["images_saving"] * 100,
                    "yes" if s["with_errors"] else "",
                ]
                for s in savings
            ],
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    parser.add_argument("--quick", action="store_true", help="1 and 2 trials x 2 epochs")
    parser.add_argument("--trials", type=int, nargs="+", default=None, help="num_samples (default 2 4 8)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs (default 4, smoke.yaml's)")
    parser.add_argument(
        "--short-epochs",
        type=int,
        default=None,
        help="also ASHA off at this many epochs per num_samples, so start-up and per-image cost "
        "separate (default 1; 0 = none, the default with --quick)",
    )
    parser.add_argument(
        "--arms", choices=["on", "off"], nargs="+", default=["off", "on"], help="ASHA arms to run"
    )
    parser.add_argument(
        "--warmup",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="an untimed 1-trial, 1-epoch tune first (default: on, off with --quick)",
    )
    parser.add_argument("--predict-gpus", type=int, nargs="+", default=[1, 4, 8], help="GPUs to predict")
    parser.add_argument(
        "--startup-s",
        type=float,
        default=None,
        help="a trial's start-up on a GPU node (default: from the fit)",
    )
    parser.add_argument(
        "--from-json", type=Path, default=None, help="refit and predict from a saved run's JSON; run nothing"
    )
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default benchmarks/results/)")
    parser.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--name", default="sweep", help=argparse.SUPPRESS)
    parser.add_argument("--asha", action=argparse.BooleanOptionalAction, default=True, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        args.trials = args.trials[0]
        return args
    args.trials = args.trials or ([1, 2] if args.quick else [2, 4, 8])
    args.epochs = args.epochs or (2 if args.quick else 4)
    args.warmup = not args.quick if args.warmup is None else args.warmup
    if args.short_epochs is None:
        args.short_epochs = 0 if args.quick else 1
    return args


def sweep(args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, int], dict[str, Any]]:
    """Every (num_samples, ASHA arm) tune, each in its own process and Ray: runs, split sizes."""
    load_start = os.getloadavg()
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="raylung-sweep-scaling-") as tmp:
        work = Path(tmp)
        prepare_data(work, 1, args.epochs)
        sizes = split_sizes(work)
        if args.warmup:  # the first tune after the data pays for cold file caches; not counted
            run_arm(work, 1, 1, False, -1)
        for i, n in enumerate(args.trials):
            for arm in args.arms if i % 2 == 0 else args.arms[::-1]:  # neither arm always goes first
                runs.append(run_arm(work, n, args.epochs, arm == "on", len(runs)))
            if 0 < args.short_epochs < args.epochs:  # images per trial differ from the full runs'
                runs.append(run_arm(work, n, args.short_epochs, False, len(runs)))
    config = {
        "trials": args.trials,
        "epochs": args.epochs,
        "short_epochs": args.short_epochs,
        "arms": args.arms,
        "quick": args.quick,
        "seed": SEED,
        "space": str(SMOKE.relative_to(REPO)),
        "early_stopping": "off (train.patience=null) in both arms",
        "concurrency": CONCURRENCY,
        "load_average_start": load_start,
        "load_average_end": os.getloadavg(),
    }
    return runs, sizes, config


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.child:
        child(args)
        return {}
    if args.from_json:
        saved = json.loads(args.from_json.read_text())
        runs, sizes, config = saved["runs"], saved["split_sizes"], saved["config"]
        config.update(refitted_from=str(args.from_json), run_commit=saved.get("commit"))
    else:
        runs, sizes, config = sweep(args)
    fitted = fits(runs)
    savings = asha_saving(runs)
    report(runs, fitted, savings)
    prediction = predict_ours(fitted[PREDICTION_FIT]["per_trial_s"], args.predict_gpus, args.startup_s)
    report_prediction(prediction)
    payload = {
        "config": config,
        "commit": git_commit(),
        "split_sizes": sizes,
        "runs": runs,
        "fit": fitted,
        "asha_saving": savings,
        "prediction": prediction,
    }
    save_json("sweep_scaling", payload, args.out)
    return payload


if __name__ == "__main__":
    main()
