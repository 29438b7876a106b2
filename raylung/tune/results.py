"""What a search found: one row per trial, the best trial's best epoch, and its export.

Tune records each trial's *last* checkpoint, not its best. The best epoch is looked up in the
trial's own Ray Train run (``Result.from_path(...).get_best_checkpoint``), which only knows
checkpoints still on storage, so one deleted by ``num_to_keep`` is never picked.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from raylung.config import RaylungConfig
from raylung.config.search_space import SearchSpace
from raylung.experiment import Experiment
from raylung.plan.effective import augment_text
from raylung.storage import join
from raylung.train.failures import failure_cause

log = logging.getLogger(__name__)


@dataclass
class TrialSummary:
    trial_id: str
    params: dict[str, Any]
    status: str  # completed | early-stopped (patience) | pruned (ASHA) | error
    epochs: int
    best_value: float | None
    best_epoch: int | None
    history: list[dict[str, float]] = field(default_factory=list)
    error: str | None = None
    # Epochs Tune itself received (what ASHA, Optuna and W&B saw). The history can hold more: a
    # trial ASHA stops may finish one more epoch before it is stopped, and a resumed trial's
    # early epochs may be missing from Tune's log; the trial's checkpoint keeps them all.
    reported_epochs: list[int] = field(default_factory=list)
    # What the trial trained, as built (raylung.plan.effective): written by the trial itself.
    pipeline: dict[str, Any] | None = None

    @property
    def stopped_early(self) -> bool:
        return self.status in ("pruned", "early-stopped")


def _better(a: float, b: float, mode: str) -> bool:
    return a < b if mode == "min" else a > b


def checkpoint_history(experiment: Experiment, trial_id: str) -> list[dict[str, float]]:
    """The per-epoch metrics kept in the trial's latest checkpoint: complete across restarts,
    unlike Tune's result log, which loses the rows a killed driver had not flushed."""
    from raylung.train.launcher import RunLocation, latest_history

    try:
        return latest_history(RunLocation(experiment.trials_storage, trial_id))
    except Exception:  # noqa: BLE001 - a trial that never checkpointed has no run folder
        return []


def trial_pipeline_record(
    experiment: Experiment | None, trial_id: str, base: RaylungConfig | None, space: SearchSpace, params: dict
) -> dict[str, Any] | None:
    """The pipeline the trial wrote into its folder; else resolved again from its parameters."""
    from raylung.data import storage
    from raylung.plan.effective import PIPELINE_FILE, effective_pipeline

    if experiment is not None:
        location = join(experiment.trials_storage, trial_id, PIPELINE_FILE)
        if storage.exists(location):
            return json.loads(storage.read_text(location))
    if base is None:
        return None
    from raylung.config.loading import trial_config

    return effective_pipeline(trial_config(base, space, params)).to_json()


def summarize_trial(
    result: Any,
    space: SearchSpace,
    metric: str,
    mode: str,
    max_epochs: int,
    experiment: Experiment | None = None,
    base: RaylungConfig | None = None,
) -> TrialSummary:
    """One Tune ``Result`` -> a summary row (history from the trial's checkpoint if given)."""
    from raylung.tune.reports import RESTATED

    frame = result.metrics_dataframe
    rows = [] if frame is None else frame.to_dict("records")
    history = [
        {
            k: v
            for k, v in row.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k != RESTATED
        }
        for row in rows
        # A restated row repeats the last kept epoch to close a resumed trial: not a new epoch.
        if "epoch" in row and row.get(metric) is not None and row.get(RESTATED) != 1
    ]
    metrics = result.metrics or {}
    trial_id = metrics.get("trial_id") or Path(result.path).name  # folders are named by trial id
    reported = [int(row["epoch"]) for row in history]
    if experiment is not None:
        by_epoch = {int(row["epoch"]): row for row in history}
        by_epoch.update({int(row["epoch"]): row for row in checkpoint_history(experiment, str(trial_id))})
        history = [by_epoch[epoch] for epoch in sorted(by_epoch)]
    best_value, best_epoch = None, None
    for row in history:
        value = row[metric]
        if math.isfinite(value) and (best_value is None or _better(value, best_value, mode)):
            best_value, best_epoch = value, int(row["epoch"])
    epochs = int(max((row["epoch"] for row in history), default=0))
    if result.error is not None:
        status = "error"
    elif metrics.get("stopped_early"):
        status = "early-stopped"
    elif epochs < max_epochs:
        status = "pruned"
    else:
        status = "completed"
    params = space.decode({k: v for k, v in (result.config or {}).items() if k in space.paths})
    return TrialSummary(
        trial_id=str(trial_id),
        params=params,
        status=status,
        epochs=epochs,
        best_value=best_value,
        best_epoch=best_epoch,
        history=history,
        error=None if result.error is None else failure_cause(result.error)[:400],
        reported_epochs=reported,
        pipeline=trial_pipeline_record(experiment, str(trial_id), base, space, params),
    )


def errored_trials_line(trials: list[TrialSummary], experiment: str, best_trial: str | None) -> str | None:
    """The one line a search with errored trials ends on: which, why, what is kept, how to go on.

    None when no trial errored. Ray's tracebacks are in the experiment's raylung.log."""
    errored = [t for t in trials if t.status == "error"]
    if not errored:
        return None
    reasons: dict[str, list[str]] = {}
    for trial in errored:  # one node lost takes several trials down for one reason
        reasons.setdefault(trial.error or "unknown error", []).append(trial.trial_id)
    why = "; ".join(f"{', '.join(ids)}: {reason}" for reason, ids in reasons.items())
    good = len(trials) - len(errored)
    kept = (
        f"the results of the {good} other trial(s) are written to {experiment}"
        if good
        else "no trial finished"
    )
    if best_trial:
        kept += f" (best trial {best_trial} in best.json)"
    return (
        f"{len(errored)} of {len(trials)} trial(s) errored ({why}); {kept}; their checkpoints are kept, "
        f"continue with raylung tune --resume {experiment}"
    )


def pick_best(trials: list[TrialSummary], mode: str) -> TrialSummary | None:
    scored = [t for t in trials if t.best_value is not None]
    if not scored:
        return None
    best = scored[0]
    for trial in scored[1:]:
        if _better(trial.best_value, best.best_value, mode):
            best = trial
    return best


def best_checkpoint(experiment: Experiment, trial_id: str, metric: str, mode: str):
    """(checkpoint, its metrics) of the trial's best epoch among checkpoints still stored."""
    import ray.train

    run = ray.train.Result.from_path(join(experiment.trials_storage, trial_id))
    checkpoint = run.get_best_checkpoint(metric, mode)
    if checkpoint is None:
        return None, {}
    metrics = next((m for c, m in run.best_checkpoints if c.path == checkpoint.path), {})
    return checkpoint, metrics


def export_best(
    experiment: Experiment, best: TrialSummary, base: RaylungConfig, metric: str, mode: str
) -> dict[str, Any]:
    """Export the best trial's best epoch and write best.json; returns what it wrote."""
    from raylung.artifacts.export import export_checkpoint

    checkpoint, metrics = best_checkpoint(experiment, best.trial_id, metric, mode)
    if checkpoint is None:
        raise RuntimeError(f"trial {best.trial_id} has no stored checkpoint")
    if metrics.get(metric) != best.best_value:
        log.warning(
            "best checkpoint of %s has %s=%s, but the best reported epoch had %s",
            best.trial_id,
            metric,
            metrics.get(metric),
            best.best_value,
        )
    with checkpoint.as_directory() as directory:
        export = export_checkpoint(Path(directory), experiment.best_export, metrics=metrics)
    record = {
        "experiment": experiment.name,
        "trial_id": best.trial_id,
        "metric": metric,
        "mode": mode,
        "value": metrics.get(metric),
        "epoch": metrics.get("epoch"),
        "checkpoint": checkpoint.path,
        "export": str(export),
        "params": best.params,
        # What the best trial trained, as built; `train --best` checks it rebuilds the same.
        "pipeline": best.pipeline,
        "metrics": metrics,
    }
    experiment.best_json.write_text(json.dumps(record, indent=1, default=str))
    return record


def table_rows(trials: list[TrialSummary], space: SearchSpace, metric: str) -> list[dict[str, Any]]:
    rows = []
    for t in trials:
        row: dict[str, Any] = {"trial": t.trial_id}
        for path in space.paths:
            row[path] = t.params.get(path, "")
        pipeline = t.pipeline or {}
        model = pipeline.get("model") or {}
        row.update(
            {
                "augmentation as built": augment_text(pipeline["augment"]) if pipeline else "",
                "model as built": f"{model['name']} {model['params']:,} {model['fingerprint']}"
                if model
                else "",
                f"best {metric}": t.best_value,
                "best epoch": t.best_epoch,
                "epochs": t.epochs,
                "status": t.status,
            }
        )
        rows.append(row)
    return rows


def write_tables(experiment: Experiment, trials: list[TrialSummary], space: SearchSpace, metric: str) -> None:
    rows = table_rows(trials, space, metric)
    local = experiment.local
    (local / "results.json").write_text(json.dumps([asdict(t) for t in trials], indent=1, default=str))
    if not rows:
        return
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    (local / "results.csv").write_text(buffer.getvalue())
    header = "| " + " | ".join(rows[0]) + " |"
    rule = "|" + "---|" * len(rows[0])
    body = ["| " + " | ".join(_fmt(v) for v in row.values()) + " |" for row in rows]
    (local / "results.md").write_text("\n".join([header, rule, *body]) + "\n")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "" if value is None else str(value)


def print_table(
    trials: list[TrialSummary], space: SearchSpace, metric: str, best: TrialSummary | None
) -> None:
    from rich.console import Console
    from rich.table import Table

    rows = table_rows(trials, space, metric)
    if not rows:
        return
    table = Table(title="Trials")
    for column in rows[0]:
        table.add_column(column.removeprefix("data.").removeprefix("model.").removeprefix("train."))
    for trial, row in zip(trials, rows, strict=True):
        style = "bold green" if best is not None and trial.trial_id == best.trial_id else None
        table.add_row(*[_fmt(v) for v in row.values()], style=style)
    Console().print(table)
