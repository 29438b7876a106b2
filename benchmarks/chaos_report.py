"""What a chaos run left behind, read back and checked (:mod:`chaos_checks`), and its report.

Split from :mod:`chaos_tune` (which runs the search and its faults): `collect` reads the tune's
state, every trial's checkpoints, result.json and W&B history, the epoch ledger, best.json and
its export, and the Optuna study, and returns the checks and figures; `print_report` prints them.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import chaos_checks as checks
from chaos_faults import FaultLog
from chaos_ledger import epochs_trained, read_ledger, worker_group_starts


def finished_in_study(paths: Any, name: str) -> list[int]:
    """Finished trials in the driver's own study (where it keeps it: under its HOME for URI
    storage; the storage copy where there is no local one)."""
    local = paths.local(name) / "optuna.db"
    return checks.finished_numbers(local if local.is_file() else paths.storage / name / "optuna.db")


# --- what the run left behind ------------------------------------------------------------------


def collect(
    settings: Any,
    paths: Any,
    processes: list[dict[str, Any]],
    at_kill: dict[str, Any] | None,
    log: FaultLog,
    faults: bool,
) -> dict[str, Any]:
    import logging

    from raylung.experiment import Experiment
    from raylung.tune.results import checkpoint_history

    logging.getLogger("ray").setLevel(logging.WARNING)  # Ray Train's notes on each run it reads
    name = paths.experiment()
    found: list[checks.Check] = [checks.check_exits(processes)]
    figures: dict[str, Any] = {
        "faults": log.counts(),
        "faults_skipped": sum(1 for e in log.events if not e["ok"]),
    }
    if name is None:
        found.append(checks.Check(checks.TERMINAL, False, "no experiment folder"))
        return {"checks": [c.to_json() for c in found], "figures": figures, "processes": processes}
    exp_dir, local = paths.storage / name, paths.local(name)
    experiment = Experiment.at(f"file://{exp_dir}")
    tune = checks.tune_trials(exp_dir / "tune")
    state_file = next((d["state_file"] for d in tune.values()), "no experiment state")
    found.append(
        checks.check_terminal({t: d["status"] for t, d in tune.items()}, settings.trials, state_file)
    )

    summaries = {t["trial_id"]: t for t in _read_json(local / "results.json", [])}
    wandb = checks.wandb_histories(local / "wandb")
    histories, kept = {}, 0
    for trial in tune:
        history = checkpoint_history(experiment, trial)
        kept += len(history)
        histories[trial] = {
            "checkpoint": [int(row["epoch"]) for row in history],
            "result.json": checks.result_epochs(exp_dir / "tune" / trial),
            "wandb": wandb.get(trial, []),
        }
    complete = {t: summaries.get(t, {}).get("status") in ("completed", "early-stopped") for t in tune}
    ledger = read_ledger(paths.ledger)
    trained = epochs_trained(ledger)
    per_trial = Counter()
    for (run, _), times in trained.items():
        per_trial[run] += times
    found.append(checks.check_epochs(histories, complete, per_trial))

    best = _read_json(local / "best.json", None)
    if best:
        named = checks.load_tensors(Path(best["checkpoint"]))
        exported = checks.load_tensors(Path(best["export"]))
        found.append(
            checks.check_best_export(named, exported, f"{best['trial_id']} epoch {best.get('epoch')}")
        )
    else:
        found.append(checks.check_best_export(None, None, "no best.json"))

    paths_searched = [d["path"] for d in _read_json(local / "space.json", [])]
    finished = {
        t: {"status": d["status"], "params": {k: v for k, v in d["config"].items() if k in paths_searched}}
        for t, d in tune.items()
        if d["status"] in checks.FINISHED_TUNE
    }
    study = checks.study_trials(local / "optuna.db")
    found.append(checks.check_study(finished, study))
    if faults:
        found.append(checks.check_study_copy(at_kill))

    statuses = Counter(s.get("status") for s in summaries.values())
    figures.update(
        trials=len(tune),
        trials_completed=statuses.get("completed", 0) + statuses.get("early-stopped", 0),
        trials_pruned=statuses.get("pruned", 0),
        trials_error=statuses.get("error", 0),
        epochs_trained=sum(trained.values()),
        epochs_kept=kept,
        epochs_recomputed=sum(n - 1 for n in trained.values() if n > 1),
        worker_group_starts=sum(worker_group_starts(ledger).values()),
        # Suggested to a driver that died before its trial was saved: never told, never run.
        study_trials_left_running=sum(1 for t in study if t["state"] == "RUNNING"),
    )
    return {
        "experiment": str(exp_dir),
        "checks": [c.to_json() for c in found],
        "figures": figures,
        "processes": processes,
        "faults": log.events,
        "histories": histories,
    }


def _read_json(path: Path, default: Any) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return default


# --- output ------------------------------------------------------------------------------------


def print_report(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=160)
    table = Table(title=f"Chaos checks ({'faults' if report['settings']['faults'] else 'baseline'})")
    for column in ("#", "check", "result", "detail"):
        table.add_column(column, overflow="fold")
    for number, check in enumerate(report["checks"], 1):
        result = "[green]PASS[/]" if check["passed"] else "[red]FAIL[/]"
        table.add_row(str(number), check["title"], result, check["detail"])
    console.print(table)
    figures = Table(title="Figures")
    figures.add_column("figure")
    figures.add_column("value", justify="right")
    for key, value in {**report["figures"], "wall_s": report["wall_s"]}.items():
        figures.add_row(key, json.dumps(value) if isinstance(value, dict) else str(value))
    console.print(figures)
