"""What a smoke tune costs beyond its training: overhead per trial and trial start-up.

Runs ``raylung.workflows.tune.tune`` on ``search_spaces/smoke.yaml`` (N trials, ASHA off and no
early stopping, so every trial runs every epoch; W&B disabled; demo data and its image cache
made beforehand, untimed) and sets its wall time against the trials' own training time: the
sum of ``epoch_time_s`` over every trial's history, and the validation time, which a timeline
of each trial's Ray Train run separates (``train_overhead.Timeline``, named in
``RAY_TRAIN_CALLBACKS`` so each trial's ``TorchTrainer`` picks it up). A Tune callback records
when Tune starts each trial, its first result and its end, so

* overhead per trial = trial wall (Tune start -> complete) - its training - its validation;
* start-up = Tune start -> the first training step (Tune's trial actor, the trial's Train
  controller and worker, data and model set-up); ``startup_raw`` is the brief's definition,
  Tune start -> first result minus that epoch's ``epoch_time_s``;
* experiment overhead per trial = (concurrency x tune wall - training - validation) / N.

What raylung does to cut it (``raylung.cluster.connect``, ``raylung.tune.tuner``): Ray Train's
health-check interval 0.25 s instead of 2 s (``ray.train.report`` hands its result over at
the next poll, and a run's end is seen at the next poll); no print patching in workers; trial
drivers reserve a custom resource instead of a CPU, so 2 one-CPU trials run at once on 2
cores. Each setting runs in its own subprocess with its own local Ray, so the same tune with
``RAY_TRAIN_HEALTH_CHECK_INTERVAL_S=2`` (Ray's default) is measured side by side.

    python benchmarks/tune_overhead.py                 # 4 trials x 4 epochs, both settings
    python benchmarks/tune_overhead.py --quick         # 2 trials x 2 epochs
    python benchmarks/tune_overhead.py --no-compare    # raylung's settings only
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
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

from harness import print_table, save_json  # noqa: E402
from train_overhead import TIMELINE_ENV, moment, read_events, spans, total  # noqa: E402

os.environ.setdefault("COLUMNS", "160")  # rich tables are not cut to 80 columns in a pipe

SMOKE = REPO / "search_spaces" / "smoke.yaml"
RAYLUNG_INTERVAL = "raylung (0.25 s)"
RAY_DEFAULT_INTERVAL = "Ray default (2 s)"
SETTINGS = {RAYLUNG_INTERVAL: None, RAY_DEFAULT_INTERVAL: "2"}  # None: raylung's TRAIN_ENV applies


def overrides(work: Path, name: str, trials: int, epochs: int) -> list[str]:
    """search_spaces/smoke.yaml pointed at this run's folders; every trial runs every epoch."""
    return [
        f"experiment.storage={work / name}",
        f"data.root={work / 'demo_data'}",
        f"data.cache_dir={work / 'cache'}",
        "wandb.mode=disabled",
        "search.asha.enabled=false",
        "train.patience=null",
        f"search.num_samples={trials}",
        f"train.epochs={epochs}",
    ]


def prepare_data(work: Path, trials: int, epochs: int) -> None:
    """The demo set the smoke tune would write on first use, and its image cache."""
    from raylung.config.loading import load_config
    from raylung.data import ImageCache, discover, make_demo_dataset

    make_demo_dataset(work / "demo_data")
    cfg = load_config(SMOKE, overrides(work, "prepare", trials, epochs)).config
    ImageCache(cfg.data).build([s.path for s in discover(cfg.data)])


def overlap(intervals: list[tuple[float, float]]) -> int:
    """The most intervals open at one moment."""
    points = sorted(
        [(a, 1) for a, _ in intervals] + [(b, -1) for _, b in intervals], key=lambda p: (p[0], p[1])
    )
    best = running = 0
    for _, step in points:
        running += step
        best = max(best, running)
    return best


def summarize_trial(
    trial_id: str, clock: dict[str, float], history: list[dict], events: list[dict]
) -> dict[str, Any]:
    """One trial's wall, training, validation, start-up and overhead (seconds)."""
    train_s = sum(row["epoch_time_s"] for row in history)
    validate = spans(events, trial_id, "validate")
    first_step = spans(events, trial_id, "train_epoch")
    wall = clock["complete"] - clock["start"]
    summary = {
        "trial_id": trial_id,
        "epochs": len(history),
        "wall_s": wall,
        "train_s": train_s,
        "validate_s": total(validate) if validate else None,
        "checkpoint_save_s": total(spans(events, trial_id, "checkpoint_save")) if validate else None,
        "report_s": total(spans(events, trial_id, "report")) if validate else None,
        "startup_raw_s": clock["first_result"] - clock["start"] - history[0]["epoch_time_s"]
        if history
        else None,
        "startup_s": first_step[0][0] - clock["start"] if first_step else None,
        "teardown_s": None,
    }
    reports = spans(events, trial_id, "report")
    if reports:
        summary["teardown_s"] = clock["complete"] - reports[-1][1]
    controller = moment(events, trial_id, "controller_start")
    fn_start = spans(events, trial_id, "train_fn_start")
    if controller is not None and fn_start and first_step:
        phases = {"Tune starts the trial -> Train controller up": controller - clock["start"]}
        if history and "time_total_s" in history[0]:  # Tune's clock starts in the trial actor
            actor_up = clock["first_result"] - history[0]["time_total_s"]
            phases = {
                "Tune starts the trial -> its actor runs the trainable": actor_up - clock["start"],
                "trainable -> Train controller up": controller - actor_up,
            }
        summary["startup_phases_s"] = {
            **phases,
            "Train controller -> train fn (worker, process group)": fn_start[0][0] - controller,
            "data and model set-up in the worker": first_step[0][0] - fn_start[0][0],
        }
    summary["overhead_s"] = wall - train_s - (summary["validate_s"] or 0.0)
    return summary


def summarize_tune(
    clocks: dict[str, dict[str, float]],
    histories: dict[str, list[dict]],
    events: list[dict],
    tune_wall_s: float,
    phases_s: dict[str, float],
    ray_init_s: float,
) -> dict[str, Any]:
    trials = [summarize_trial(tid, clocks[tid], histories.get(tid, []), events) for tid in sorted(clocks)]
    n = len(trials)
    concurrency = overlap([(clocks[t]["start"], clocks[t]["complete"]) for t in clocks])
    sum_train = sum(t["train_s"] for t in trials)
    sum_validate = sum(t["validate_s"] or 0.0 for t in trials)

    def mean(key: str) -> float | None:
        values = [t[key] for t in trials if t[key] is not None]
        return statistics.mean(values) if values else None

    return {
        "ray_init_s": ray_init_s,
        "tune_wall_s": tune_wall_s,
        "phases_s": phases_s,
        "trials": trials,
        "n_trials": n,
        "concurrency": concurrency,
        "sum_train_s": sum_train,
        "sum_validate_s": sum_validate,
        "wall_over_training": tune_wall_s * concurrency / max(sum_train + sum_validate, 1e-9),
        "experiment_overhead_per_trial_s": (concurrency * tune_wall_s - sum_train - sum_validate) / max(n, 1),
        "mean": {
            key: mean(key)
            for key in (
                "wall_s",
                "train_s",
                "validate_s",
                "checkpoint_save_s",
                "report_s",
                "startup_s",
                "startup_raw_s",
                "teardown_s",
                "overhead_s",
            )
        },
    }


def compare(results: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """The 2 s interval against raylung's 0.25 s: ratios and seconds saved."""
    if RAYLUNG_INTERVAL not in results or RAY_DEFAULT_INTERVAL not in results:
        return None
    ours, ray_default = results[RAYLUNG_INTERVAL], results[RAY_DEFAULT_INTERVAL]
    out: dict[str, Any] = {
        "tune_wall_ratio": ray_default["tune_wall_s"] / ours["tune_wall_s"],
        "tune_wall_saved_s": ray_default["tune_wall_s"] - ours["tune_wall_s"],
    }
    run_ours, run_default = ours["phases_s"].get("run"), ray_default["phases_s"].get("run")
    if run_ours and run_default:  # Tune itself, without ray.init, prepare and finish (export, plots)
        out["tuner_run_ratio"] = run_default / run_ours
        out["tuner_run_saved_s"] = run_default - run_ours
    for key in ("overhead_s", "wall_s", "startup_s", "report_s", "teardown_s"):
        a, b = ours["mean"][key], ray_default["mean"][key]
        if a is not None and b is not None:
            out[f"trial_{key}_ratio"] = b / a if a else None
            out[f"trial_{key}_saved"] = b - a
    return out


# --- the child: one tune in its own process and its own local Ray ----------------------------


def child(args: argparse.Namespace) -> None:
    os.environ.pop("RAY_ADDRESS", None)
    import ray
    from ray.tune import Callback

    from raylung.cluster.connect import RayTarget, connect
    from raylung.config.loading import load_config
    from raylung.tune import tuner
    from raylung.workflows import tune as workflow

    clocks: dict[str, dict[str, float]] = {}

    class TrialClock(Callback):
        """When Tune starts each trial, gets its first result and completes it (driver side)."""

        def on_trial_start(self, iteration, trials, trial, **info):
            clocks.setdefault(trial.trial_id, {})["start"] = time.time()

        def on_trial_result(self, iteration, trials, trial, result, **info):
            clocks[trial.trial_id].setdefault("first_result", time.time())

        def on_trial_complete(self, iteration, trials, trial, **info):
            clocks[trial.trial_id]["complete"] = time.time()

        on_trial_error = on_trial_complete

    phases: dict[str, float] = {}

    def timed(module: Any, name: str) -> None:
        original = getattr(module, name)

        def wrapper(*a: Any, **k: Any) -> Any:
            start = time.perf_counter()
            try:
                return original(*a, **k)
            finally:
                phases[name] = phases.get(name, 0.0) + time.perf_counter() - start

        setattr(module, name, wrapper)

    original_callbacks = tuner._callbacks
    tuner._callbacks = lambda prepared: [*original_callbacks(prepared), TrialClock()]
    timed(tuner, "prepare")
    timed(tuner, "run")
    timed(workflow, "finish")

    start = time.perf_counter()
    connect(RayTarget(num_cpus=2))
    ray_init_s = time.perf_counter() - start
    loaded = load_config(SMOKE, overrides(args.work, args.name, args.trials, args.epochs))
    start = time.perf_counter()
    outcome = workflow.tune(loaded, RayTarget(num_cpus=2))
    tune_wall_s = time.perf_counter() - start
    ray.shutdown()
    histories = {t.trial_id: t.history for t in outcome.trials}
    summary = summarize_tune(
        clocks, histories, read_events(os.environ[TIMELINE_ENV]), tune_wall_s, phases, ray_init_s
    )
    summary["health_check_s"] = float(os.environ["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"])
    summary["statuses"] = [t.status for t in outcome.trials]
    Path(args.child).write_text(json.dumps(summary, indent=1))


def run_setting(
    label: str, interval: str | None, work: Path, trials: int, epochs: int, index: int
) -> dict[str, Any]:
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)  # a local Ray of its own, never a shared cluster
    env.pop("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", None)
    if interval is not None:
        env["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] = interval
    name = f"tune-{index}"
    env[TIMELINE_ENV] = str(work / f"{name}.timeline.jsonl")
    env["RAY_TRAIN_CALLBACKS"] = "train_overhead.Timeline"  # each trial's TorchTrainer builds one
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(BENCH_DIR), str(REPO), env.get("PYTHONPATH")) if p)
    env.update(WANDB_MODE="disabled", RAY_USAGE_STATS_ENABLED="0")
    out = work / f"{name}.json"
    command = [
        sys.executable,
        __file__,
        "--child",
        str(out),
        "--work",
        str(work),
        "--name",
        name,
        "--trials",
        str(trials),
        "--epochs",
        str(epochs),
    ]
    print(f"{label}: {trials} trials x {epochs} epochs ...", flush=True)
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode or not out.is_file():
        raise RuntimeError(
            f"tune under {label} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
    return json.loads(out.read_text())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    parser.add_argument("--quick", action="store_true", help="2 trials x 2 epochs")
    parser.add_argument("--trials", type=int, default=None, help="trials (default 4; 2 with --quick)")
    parser.add_argument(
        "--epochs", type=int, default=None, help="epochs per trial (default 4, smoke.yaml's; 2 with --quick)"
    )
    parser.add_argument(
        "--compare",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run with Ray's default 2 s health-check interval",
    )
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default benchmarks/results/)")
    parser.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--name", default="tune", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.trials = args.trials or (2 if args.quick else 4)
    args.epochs = args.epochs or (2 if args.quick else 4)
    return args


def report(results: dict[str, dict[str, Any]], comparison: dict[str, Any] | None) -> None:
    for label, r in results.items():
        rows = [
            [
                t["trial_id"][:8],
                t["epochs"],
                t["wall_s"],
                t["train_s"],
                t["validate_s"],
                t["startup_s"],
                t["startup_raw_s"],
                t["report_s"],
                t["teardown_s"],
                t["overhead_s"],
            ]
            for t in r["trials"]
        ]
        m = r["mean"]
        rows.append(
            [
                "mean",
                "",
                m["wall_s"],
                m["train_s"],
                m["validate_s"],
                m["startup_s"],
                m["startup_raw_s"],
                m["report_s"],
                m["teardown_s"],
                m["overhead_s"],
            ]
        )
        print_table(
            f"{label}: {r['n_trials']} trials, up to {r['concurrency']} at once, seconds",
            [
                "trial",
                "epochs",
                "wall",
                "train",
                "validate",
                "start-up",
                "start-up (raw)",
                "reports",
                "teardown",
                "overhead",
            ],
            [[v if v is not None else "n/a" for v in row] for row in rows],
        )
        print_table(
            f"{label}: the experiment",
            ["measure", "s"],
            [
                ["ray.init", r["ray_init_s"]],
                ["tune() wall", r["tune_wall_s"]],
                *[[f"  {k}", v] for k, v in r["phases_s"].items()],
                ["sum of training (epoch_time_s)", r["sum_train_s"]],
                ["sum of validation", r["sum_validate_s"]],
                [
                    "overhead per trial (concurrency x wall - train - val) / N",
                    r["experiment_overhead_per_trial_s"],
                ],
                ["concurrency x wall / (train + val)", r["wall_over_training"]],
            ],
        )
        phases = [t.get("startup_phases_s") or {} for t in r["trials"]]
        if all(phases):
            print_table(
                f"{label}: trial start-up, mean seconds",
                ["phase", "s"],
                [[k, statistics.mean(p[k] for p in phases)] for k in phases[0]],
            )
    if comparison:
        print_table(
            f"health-check interval: {RAY_DEFAULT_INTERVAL} vs {RAYLUNG_INTERVAL}",
            ["measure", "value"],
            [[k, v if v is not None else "n/a"] for k, v in comparison.items()],
        )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.child:
        child(args)
        return {}
    settings = dict(SETTINGS) if args.compare else {RAYLUNG_INTERVAL: None}
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="raylung-tune-overhead-") as tmp:
        work = Path(tmp)
        prepare_data(work, args.trials, args.epochs)
        for index, (label, interval) in enumerate(settings.items()):
            results[label] = run_setting(label, interval, work, args.trials, args.epochs, index)
    comparison = compare(results)
    report(results, comparison)
    payload = {
        "config": {
            "trials": args.trials,
            "epochs": args.epochs,
            "quick": args.quick,
            "compare": args.compare,
            "space": str(SMOKE.relative_to(REPO)),
        },
        "settings": results,
        "health_check": comparison,
    }
    save_json("tune_overhead", payload, args.out)
    return payload


if __name__ == "__main__":
    main()
