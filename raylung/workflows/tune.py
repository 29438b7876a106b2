"""`raylung tune` end to end: connect, prepare or reload, search, summarise, export the best."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raylung.cluster.connect import RayTarget, connect
from raylung.cluster.run_log import RUN_LOG_FILE
from raylung.config.loading import LoadedConfig
from raylung.experiment import Experiment
from raylung.plan.space_check import require_sound_space
from raylung.storage import check_writable
from raylung.tracking import offline_run_dirs, resolve_mode
from raylung.tracking.links import WandbLinks, announce, links_for
from raylung.train.launcher import check_data
from raylung.tune import tuner
from raylung.tune.results import (
    TrialSummary,
    export_best,
    pick_best,
    print_table,
    summarize_trial,
    write_tables,
)
from raylung.tune.summary import log_wandb_summary, plot_trials

log = logging.getLogger(__name__)


@dataclass
class TuneOutcome:
    experiment: Experiment
    trials: list[TrialSummary]
    best: dict[str, Any] | None
    wandb_dirs: list[Path]
    wandb_links: WandbLinks | None = None  # online searches only: project, group, best trial's run


def tune(loaded: LoadedConfig, target: RayTarget = RayTarget()) -> TuneOutcome:
    """Start a new experiment from a validated search space and run it to the end.

    Everything that can be checked without compute is checked before an experiment folder is
    made or Ray is started: the space (each searched parameter must change the pipeline), W&B
    credentials, the storage, and the data (layout, classes, split). A start that fails after
    the folder was made (e.g. the cluster lacks resources) removes it again.
    """
    resolve_mode(loaded.config.wandb)  # fail now, not after an hour, when online W&B lacks credentials
    prepared = start(loaded, loaded.config.experiment.name, target)
    log.info("experiment %s", prepared.experiment.path)
    announce(_links(prepared))
    grid = tuner.run(prepared, target.wait_s)
    return finish(prepared, grid)


def start(loaded: LoadedConfig, name: str, target: RayTarget) -> tuner.PreparedSearch:
    """Check the space and the data, then make the experiment `name-STAMP` and connect to Ray.

    Nothing is created or started before the checks pass, and a failure after the folder is
    made (the cluster lacks resources) removes it again. Used by tune and benchmark alike.
    """
    cfg = loaded.config
    for warning in require_sound_space(loaded):
        log.warning("search space: %s", warning)
    split_set = check_data(cfg)
    check_writable(cfg.experiment.storage)
    experiment = Experiment.new(cfg.experiment.storage, name)
    with experiment.discarded_on_failure():
        prepared = tuner.prepare(loaded, experiment, split_set)
        connect(target, log_file=experiment.local / RUN_LOG_FILE)
        tuner.check_start(prepared, target.wait_s)
    return prepared


def resume(experiment_dir: str | Path, target: RayTarget = RayTarget()) -> TuneOutcome:
    """Continue an interrupted experiment: finished trials are kept, unfinished ones resume."""
    experiment = Experiment.at(experiment_dir)
    prepared = tuner.reload(experiment)
    connect(target, log_file=experiment.local / RUN_LOG_FILE)
    announce(_links(prepared))
    grid = tuner.resume(prepared, target.wait_s)
    return finish(prepared, grid)


def finish(prepared: tuner.PreparedSearch, grid: Any) -> TuneOutcome:
    base, space, experiment = prepared.base, prepared.space, prepared.experiment
    metric, mode = base.search_metric, base.search_mode
    trials = [
        summarize_trial(result, space, metric, mode, base.train.epochs, experiment, base) for result in grid
    ]
    trials.sort(key=lambda t: t.trial_id)
    # The best of the trials that finished: an errored trial's last epochs may be half-trained.
    best_trial = pick_best([t for t in trials if t.status != "error"], mode)
    write_tables(experiment, trials, space, metric)
    plots = [plot_trials(trials, metric, experiment.local / "plots" / "trials.png", best_trial)]
    best = export_best(experiment, best_trial, base, metric, mode) if best_trial else None
    print_table(trials, space, metric, best_trial)
    wandb_mode = resolve_mode(base.wandb)
    log_wandb_summary(experiment, base, space, trials, best, plots, wandb_mode)
    wandb_dirs = offline_run_dirs(experiment.wandb_dir) if wandb_mode == "offline" else []
    experiment.sync_up()
    links = _links(prepared, best["trial_id"] if best else None)
    return TuneOutcome(experiment, trials, best, wandb_dirs, links)


def _links(prepared: tuner.PreparedSearch, best_trial: str | None = None) -> WandbLinks | None:
    """The search's W&B project and group (trial runs are named and identified by trial id)."""
    base = prepared.base
    runs = {best_trial: best_trial} if best_trial else None
    return links_for(base.wandb, resolve_mode(base.wandb), prepared.experiment.name, runs)
