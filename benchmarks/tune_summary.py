"""The tune benchmark's arithmetic and tables: per-trial overhead, start-up, concurrency, and
raylung's health-check interval against Ray's default.

Inputs are plain data -- Tune's clock per trial (start, first result, complete), each trial's
per-epoch history, the timeline of every trial's Ray Train run (``timeline.py``; the Train
runs are named after their trial ids) and the seconds of each phase of the tune -- so all of
it is checked without running a tune.
"""

from __future__ import annotations

import statistics
from typing import Any

from harness import print_table
from timeline import moment, spans, total

RAYLUNG_INTERVAL = "raylung (0.25 s)"
RAY_DEFAULT_INTERVAL = "Ray default (2 s)"
MEAN_KEYS = (
    "wall_s",
    "train_s",
    "validate_s",
    "checkpoint_save_s",
    "report_s",
    "startup_s",
    "startup_from_created_s",
    "startup_raw_s",
    "teardown_s",
    "overhead_s",
)


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


def _process(events: list[dict], pid: int | None, role: str, trial: str | None = None) -> dict | None:
    """The `process_up` mark (spawn time `created`, recorder unpickled at `t`) of a process."""
    for e in events:
        if e["event"] == "process_up" and e.get("role") == role and e.get("created"):
            if (trial is not None and e.get("trial") == trial) or (trial is None and e.get("pid") == pid):
                return e
    return None


def _pid(events: list[dict], run: str, event: str, rank: int | None = None) -> int | None:
    return next(
        (
            e.get("pid")
            for e in events
            if e.get("run") == run and e["event"] == event and e.get("rank") == rank
        ),
        None,
    )


def startup_breakdown(
    events: list[dict], trial_id: str, start: float, first_step: float | None
) -> dict[str, float] | None:
    """Tune start -> first training step, process by process (``timeline.mark_process``): each
    process's spawn, its imports (spawn -> its recorder unpickled), Ray Train's steps between.
    None when a mark is missing (an older timeline)."""
    actor = _process(events, None, "hooks", trial_id)
    controller_pid = _pid(events, trial_id, "controller_start")
    controller = _process(events, controller_pid, "callback")
    worker_pid = _pid(events, trial_id, "train_context_ready", rank=0)
    worker = _process(events, worker_pid, "callback")
    marks = {
        name: moment(events, trial_id, name)
        for name in ("controller_start", "worker_group_start", "worker_group_ready", "train_fn_launched")
    }
    context = [e["t"] for e in events if e.get("run") == trial_id and e["event"] == "train_context_ready"]
    setup = spans(events, trial_id, "setup")
    if not (actor and controller and worker and context and setup and first_step) or None in marks.values():
        return None
    # Ray may hand the trial an idle worker it started earlier (spawn 0, imports from Tune's start).
    points = [
        ("Tune start -> trial actor process spawned", start),
        ("trial actor imports (until its hooks unpickle)", max(start, actor["created"])),
        ("trial: config, pipeline, queue, trainer -> controller spawned", actor["t"]),
        ("controller imports and init", controller["created"]),
        ("controller -> worker group start", marks["controller_start"]),
        ("placement group, worker actor spawned", marks["worker_group_start"]),
        ("worker imports (until its callback unpickles)", worker["created"]),
        ("worker -> train context ready", worker["t"]),
        ("process group (gloo) -> worker group ready", min(context)),
        ("train fn launched -> loop starts (unpickle train fn: imports)", marks["worker_group_ready"]),
        ("data and model set-up in the worker", setup[0][0]),
        ("end", first_step),
    ]
    return {name: points[i + 1][1] - at for i, (name, at) in enumerate(points[:-1])}


def startup_cpu(events: list[dict], trial_id: str) -> dict[str, float | None]:
    """CPU seconds each of the trial's processes spent before the first training step: the
    trial actor until its TorchTrainer fits, the Train controller until it starts, the rank-0
    worker until its first epoch. Steadier than wall time on a shared machine."""
    trainer = _process(events, None, "trainer", trial_id)
    controller = next(
        (e for e in events if e.get("run") == trial_id and e["event"] == "controller_start"), None
    )
    worker = next(
        (
            e
            for e in events
            if e.get("run") == trial_id
            and e["event"] == "train_epoch"
            and e["phase"] == "begin"
            and e.get("rank") == 0
        ),
        None,
    )
    cpu = {
        "trial actor (until its trainer fits)": trainer and trainer["cpu"],
        "Train controller (until it starts)": controller and controller["cpu"],
        "Train worker, rank 0 (until its first step)": worker and worker["cpu"],
    }
    return cpu


def summarize_trial(
    trial_id: str, clock: dict[str, float], history: list[dict], events: list[dict]
) -> dict[str, Any]:
    """One trial's wall, training, validation, start-up and overhead (seconds). Loop phases
    (validation, set-up, checkpoint save, report) are None where the timeline lacks them."""
    train_s = sum(row["epoch_time_s"] for row in history)
    validate = spans(events, trial_id, "validate")
    first_step = spans(events, trial_id, "train_epoch")
    reports = spans(events, trial_id, "report")
    wall = clock["complete"] - clock["start"]
    summary = {
        "trial_id": trial_id,
        "epochs": len(history),
        "wall_s": wall,
        "train_s": train_s,
        "validate_s": total(validate) if validate else None,
        "checkpoint_save_s": total(spans(events, trial_id, "checkpoint_save")) if validate else None,
        "report_s": total(reports) if reports else None,
        "startup_raw_s": clock["first_result"] - clock["start"] - history[0]["epoch_time_s"]
        if history
        else None,
        "startup_s": first_step[0][0] - clock["start"] if first_step else None,
        # From when Tune's loop first held the trial: its actor's creation too (on_trial_start
        # comes once the actor is built), and any wait for resources.
        "startup_from_created_s": first_step[0][0] - clock["created"]
        if first_step and "created" in clock
        else None,
        "teardown_s": clock["complete"] - reports[-1][1] if reports else None,
    }
    controller = moment(events, trial_id, "controller_start")
    setup = spans(events, trial_id, "setup")
    fine = startup_breakdown(events, trial_id, clock["start"], first_step[0][0] if first_step else None)
    if fine:
        summary["startup_phases_s"] = fine
        summary["startup_cpu_s"] = startup_cpu(events, trial_id)
    elif controller is not None and setup and first_step:
        phases = {"Tune starts the trial -> Train controller up": controller - clock["start"]}
        if history and "time_total_s" in history[0]:  # Tune's clock starts in the trial actor
            actor_up = clock["first_result"] - history[0]["time_total_s"]
            phases = {
                "Tune starts the trial -> its actor runs the trainable": actor_up - clock["start"],
                "trainable -> Train controller up": controller - actor_up,
            }
        summary["startup_phases_s"] = {
            **phases,
            "Train controller -> train fn (worker, process group)": setup[0][0] - controller,
            "data and model set-up in the worker": first_step[0][0] - setup[0][0],
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
    ran = sorted(tid for tid, clock in clocks.items() if "start" in clock)  # not those only created
    trials = [summarize_trial(tid, clocks[tid], histories.get(tid, []), events) for tid in ran]
    n = len(trials)
    concurrency = overlap([(clocks[t]["start"], clocks[t]["complete"]) for t in ran])
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
        "loop_phases_recorded": any(t["validate_s"] is not None for t in trials),
        "sum_train_s": sum_train,
        "sum_validate_s": sum_validate,
        "wall_over_training": tune_wall_s * concurrency / max(sum_train + sum_validate, 1e-9),
        "experiment_overhead_per_trial_s": (concurrency * tune_wall_s - sum_train - sum_validate) / max(n, 1),
        "mean": {key: mean(key) for key in MEAN_KEYS},
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
    if run_ours and run_default:  # Tune itself, without ray.init, start and finish (export, plots)
        out["tuner_run_ratio"] = run_default / run_ours
        out["tuner_run_saved_s"] = run_default - run_ours
    for key in ("overhead_s", "wall_s", "startup_s", "report_s", "teardown_s"):
        a, b = ours["mean"][key], ray_default["mean"][key]
        if a is not None and b is not None:
            out[f"trial_{key}_ratio"] = b / a if a else None
            out[f"trial_{key}_saved"] = b - a
    return out


TRIAL_COLUMNS = (
    "wall_s",
    "train_s",
    "validate_s",
    "startup_s",
    "startup_from_created_s",
    "startup_raw_s",
    "report_s",
    "teardown_s",
)


def report(results: dict[str, dict[str, Any]], comparison: dict[str, Any] | None) -> None:
    for label, r in results.items():
        rows = [
            [t["trial_id"][:8], t["epochs"], *(t[k] for k in TRIAL_COLUMNS), t["overhead_s"]]
            for t in r["trials"]
        ]
        m = r["mean"]
        rows.append(["mean", "", *(m[k] for k in TRIAL_COLUMNS), m["overhead_s"]])
        print_table(
            f"{label}: {r['n_trials']} trials, up to {r['concurrency']} at once, seconds",
            ["trial", "epochs", "wall", "train", "validate", "start-up", "from created", "start-up (raw)"]
            + ["reports"]
            + ["teardown", "overhead"],
            [[v if v is not None else "n/a" for v in row] for row in rows],
        )
        if not r.get("loop_phases_recorded", True):
            print(f"{label}: no loop phases came back from the trials: overhead includes validation")
        print_table(
            f"{label}: the experiment",
            ["measure", "s"],
            [
                ["ray.init", r["ray_init_s"]],
                ["tune wall (start + run + finish)", r["tune_wall_s"]],
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
        if phases and all(phases):
            print_table(
                f"{label}: trial start-up, mean seconds",
                ["phase", "s"],
                [[k, statistics.mean(p[k] for p in phases)] for k in phases[0]],
            )
        cpus = [t.get("startup_cpu_s") or {} for t in r["trials"]]
        if cpus and all(cpus) and all(v is not None for c in cpus for v in c.values()):
            rows = [[k, statistics.mean(c[k] for c in cpus)] for k in cpus[0]]
            rows.append(["sum", sum(row[1] for row in rows)])
            print_table(f"{label}: trial start-up, mean CPU seconds per process", ["process", "CPU s"], rows)
    if comparison:
        print_table(
            f"health-check interval: {RAY_DEFAULT_INTERVAL} vs {RAYLUNG_INTERVAL}",
            ["measure", "value"],
            [[k, v if v is not None else "n/a"] for k, v in comparison.items()],
        )
