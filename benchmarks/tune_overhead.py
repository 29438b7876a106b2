"""What a smoke tune costs beyond its training: overhead per trial and trial start-up.

Runs a tune of ``search_spaces/smoke.yaml`` (N trials, ASHA off and no early stopping, so
every trial runs every epoch; W&B disabled; demo data and its image cache made beforehand,
untimed) through raylung's public steps -- ``workflows.tune.start``, ``tune.tuner.run``,
``workflows.tune.finish``, each timed around its call -- and sets its wall time against the
trials' own training time: the sum of ``epoch_time_s`` over every trial's history, and the
validation time, which a timeline of each trial's Ray Train run separates (``timeline.py``:
the loop's phase hooks, passed as ``tuner.run(train_hooks=...)``, and the ``Timeline`` Ray
Train callback, named in ``RAY_TRAIN_CALLBACKS`` so each trial's ``TorchTrainer`` builds one).
A Tune callback, passed as ``tuner.run(callbacks=...)``, records when Tune starts each trial,
its first result and its end, so

* overhead per trial = trial wall (Tune start -> complete) - its training - its validation;
* start-up = Tune start -> the first training step (Tune's trial actor, the trial's Train
  controller and worker, data and model set-up); ``startup_raw`` is the brief's definition,
  Tune start -> first result minus that epoch's ``epoch_time_s``;
* experiment overhead per trial = (concurrency x tune wall - training - validation) / N.

Start-up is also shown process by process -- the trial's actor, its Train controller, its
rank-0 worker: each one's spawn, its imports (until it unpickles a recorder,
``timeline.mark_process``) and Ray Train's steps between -- and as CPU seconds per process,
which a busy machine changes far less than wall time.

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
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(BENCH_DIR))

from harness import save_json  # noqa: E402
from timeline import TIMELINE_ENV, TimelineHooks, read_events  # noqa: E402
from tune_summary import RAY_DEFAULT_INTERVAL, RAYLUNG_INTERVAL, compare, report, summarize_tune  # noqa: E402

os.environ.setdefault("COLUMNS", "160")  # rich tables are not cut to 80 columns in a pipe

SMOKE = REPO / "search_spaces" / "smoke.yaml"
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


# --- the child: one tune in its own process and its own local Ray ----------------------------


def trial_clock(clocks: dict[str, dict[str, float]]):
    """A Tune callback (driver side) noting when Tune's loop first holds each trial (created,
    before its actor is built), starts it (``on_trial_start``: the actor is up), gets its first
    result and completes it, into `clocks`."""
    from ray.tune import Callback

    class TrialClock(Callback):
        def on_step_begin(self, iteration, trials, **info):
            now = time.time()
            for trial in trials:
                clocks.setdefault(trial.trial_id, {}).setdefault("created", now)

        on_step_end = on_step_begin

        def on_trial_start(self, iteration, trials, trial, **info):
            clocks.setdefault(trial.trial_id, {})["start"] = time.time()

        def on_trial_result(self, iteration, trials, trial, result, **info):
            clocks[trial.trial_id].setdefault("first_result", time.time())

        def on_trial_complete(self, iteration, trials, trial, **info):
            clocks[trial.trial_id]["complete"] = time.time()

        on_trial_error = on_trial_complete

    return TrialClock()


@contextlib.contextmanager
def timed(phases: dict[str, float], name: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        phases[name] = phases.get(name, 0.0) + time.perf_counter() - start


def run_tuner(prepared, callbacks: list, hooks: TimelineHooks) -> Any:
    """``tuner.run`` with the benchmark's Tune callbacks and the loop's phase hooks for every
    trial's Train run."""
    from raylung.tune import tuner

    return tuner.run(prepared, 0.0, callbacks=callbacks, train_hooks=hooks)


def child(args: argparse.Namespace) -> None:
    os.environ.pop("RAY_ADDRESS", None)
    import ray

    from raylung.cluster.connect import RayTarget, connect
    from raylung.config.loading import load_config
    from raylung.workflows import tune as workflow

    target = RayTarget(num_cpus=2)
    start = time.perf_counter()
    connect(target)
    ray_init_s = time.perf_counter() - start
    loaded = load_config(SMOKE, overrides(args.work, args.name, args.trials, args.epochs))
    clocks: dict[str, dict[str, float]] = {}
    phases: dict[str, float] = {}
    timeline = os.environ[TIMELINE_ENV]
    start = time.perf_counter()
    with timed(phases, "start"):  # checks, the experiment folder, the split; Ray is up already
        prepared = workflow.start(loaded, loaded.config.experiment.name, target)
    with timed(phases, "run"):
        grid = run_tuner(prepared, [trial_clock(clocks)], TimelineHooks(timeline))
    with timed(phases, "finish"):  # tables, plots, the export of the best trial
        outcome = workflow.finish(prepared, grid)
    tune_wall_s = time.perf_counter() - start
    ray.shutdown()
    histories = {t.trial_id: t.history for t in outcome.trials}
    summary = summarize_tune(clocks, histories, read_events(timeline), tune_wall_s, phases, ray_init_s)
    summary["health_check_s"] = float(os.environ["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"])
    summary["statuses"] = [t.status for t in outcome.trials]
    Path(args.child).write_text(json.dumps(summary, indent=1))


def child_env(interval: str | None, timeline: Path) -> dict[str, str]:
    """A local Ray of its own (never a shared cluster) that finds the benchmark's modules."""
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)
    env.pop("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", None)
    if interval is not None:
        env["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] = interval
    env[TIMELINE_ENV] = str(timeline)
    env["RAY_TRAIN_CALLBACKS"] = "timeline.Timeline"  # each trial's TorchTrainer builds one
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(BENCH_DIR), str(REPO), env.get("PYTHONPATH")) if p)
    env.update(WANDB_MODE="disabled", RAY_USAGE_STATS_ENABLED="0")
    return env


def run_setting(
    label: str, interval: str | None, work: Path, trials: int, epochs: int, index: int
) -> dict[str, Any]:
    name = f"tune-{index}"
    out = work / f"{name}.json"
    command = [sys.executable, __file__, "--child", str(out), "--work", str(work), "--name", name]
    command += ["--trials", str(trials), "--epochs", str(epochs)]
    print(f"{label}: {trials} trials x {epochs} epochs ...", flush=True)
    env = child_env(interval, work / f"{name}.timeline.jsonl")
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if os.environ.get("RAYLUNG_BENCH_KEEP_TIMELINE"):  # the raw events, for a closer look
        shutil.copy(work / f"{name}.timeline.jsonl", os.environ["RAYLUNG_BENCH_KEEP_TIMELINE"])
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
