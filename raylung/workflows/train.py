"""`raylung train` end to end: one run (new, resumed, or the retrain of a search's best).

A run directory holds the resolved config, the split, Ray Train's checkpoints (``run/``), W&B
files, plots, the export of the best epoch and ``raylung.log`` (raylung's and Ray's log lines),
so the directory alone is enough to resume, evaluate or share the run.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raylung.cluster.connect import RayTarget, connect
from raylung.cluster.run_log import RUN_LOG_FILE
from raylung.config import RaylungConfig
from raylung.errors import ConfigError
from raylung.experiment import Experiment
from raylung.plan.effective import PIPELINE_FILE, effective_pipeline
from raylung.storage import check_writable
from raylung.tracking import Tracking, init_kwargs, offline_run_dirs, resolve_mode
from raylung.tracking.hub import HubRun, tracker_hub
from raylung.tracking.links import WandbLinks, announce, links_for
from raylung.train.launcher import (
    RunLocation,
    check_resources,
    fit,
    has_snapshot,
    latest_history,
    prepare_splits,
)

log = logging.getLogger(__name__)

RUN_NAME = "run"
CONFIG_FILE = "config.json"


@dataclass
class TrainOutcome:
    directory: Path
    config: RaylungConfig
    metrics: dict[str, Any]
    best_metrics: dict[str, Any]
    export: Path | None
    history: list[dict[str, Any]]
    wandb_dirs: list[Path] = field(default_factory=list)
    evaluation: Any = None
    explanations: list[Path] = field(default_factory=list)
    wandb_links: WandbLinks | None = None  # online runs only


def run_spec(cfg: RaylungConfig, directory: Path, job_type: str) -> dict[str, Any] | None:
    """The tracked run of a training in `directory` (``wandb.init`` keywords), None if disabled."""
    mode = resolve_mode(cfg.wandb)
    if mode == "disabled":
        return None
    name = directory.name
    return init_kwargs(
        cfg.wandb,
        mode,
        directory / "wandb",
        group=cfg.wandb.group or cfg.experiment.name,
        name=name,
        # Stable across processes, so a resumed run continues the same W&B run.
        run_id=f"{name}-{hashlib.sha1(str(directory).encode()).hexdigest()[:8]}",
        config={**cfg.model_dump(mode="json"), "effective": effective_pipeline(cfg).to_json()},
        job_type=job_type,
    )


# Called with the finished outcome and its still-open tracked run (the retrain's test results).
AfterTraining = Callable[[TrainOutcome, Tracking], None]


def train(
    cfg: RaylungConfig,
    target: RayTarget = RayTarget(),
    *,
    output: str | None = None,
    resume: bool = False,
    progress: bool = True,
    job_type: str = "train",
) -> TrainOutcome:
    """Run one training (or resume it from `output`), then export its best epoch.

    The run's directory is an experiment (a local path or a URI): Ray Train writes its
    checkpoints there, and the driver's files (config, export, plots) are mirrored to it."""
    if resume:
        if output is None:
            raise ConfigError("--resume needs --output DIR, the run directory to continue")
        experiment = Experiment.at(output)
        experiment.sync_down()
        saved = experiment.local / CONFIG_FILE
        if not saved.is_file():
            raise ConfigError(f"cannot resume: {saved} not found (is {output} a raylung run?)")
        cfg = RaylungConfig.model_validate_json(saved.read_text())
    else:
        resolve_mode(cfg.wandb)
        if output is None:
            check_writable(cfg.experiment.storage)
            experiment = Experiment.new(cfg.experiment.storage, cfg.experiment.name)
        else:
            experiment = Experiment.at(output)
        if has_snapshot(RunLocation(experiment.path, RUN_NAME)):
            raise ConfigError(
                f"{output or experiment.path} already holds a run; continue it with --resume, "
                "or choose another --output"
            )
        experiment.local.mkdir(parents=True, exist_ok=True)
        cfg = prepare_splits(cfg, experiment.path)
        write_config(cfg, experiment.local)
        experiment.sync_up()
    return run_training(
        cfg,
        target,
        experiment,
        RunLocation(experiment.path, RUN_NAME),
        experiment.local,
        progress=progress,
        job_type=job_type,
        resume_hint=f"raylung train --output {experiment.path} --resume",
    )


def run_training(
    cfg: RaylungConfig,
    target: RayTarget,
    experiment: Experiment,
    location: RunLocation,
    directory: Path,
    *,
    progress: bool,
    job_type: str,
    resume_hint: str,
    keep: str = "best",
    after: AfterTraining | None = None,
) -> TrainOutcome:
    """Fit on the cluster, finish locally in `directory`, mirror to the experiment's storage.

    The run is tracked from the driver: each epoch's report reaches it through the tracker
    hub, then the best epoch and whatever `after` adds, all in the one run.
    """
    connect(target, log_file=directory / RUN_LOG_FILE)
    check_resources(cfg, target.wait_s)
    spec = run_spec(cfg, directory, job_type)
    links = None
    if spec is not None:
        links = links_for(cfg.wandb, spec["mode"], spec["group"], {spec["name"]: spec["id"]})
        announce(links)
    with tracker_hub(spec is not None) as hub:
        # A resumed run starts with the epochs its checkpoint kept: one W&B history per run.
        run = HubRun(hub, directory.name, spec, latest_history(location) if spec else ())
        result = fit(
            cfg,
            location,
            progress=progress,
            callbacks=run.report_callbacks(),
            resume_hint=resume_hint,
            resource_wait_s=target.wait_s,
        )
        outcome = _finish(cfg, directory, result, keep=keep)
        if outcome.history:
            last, monitor = outcome.history[-1], cfg.train.monitor
            run.summary(
                {"best_epoch": last.get("best_epoch"), f"best_{monitor}": last.get(f"best_{monitor}")}
            )
        if after is not None:
            after(outcome, run)
        run.finish()
    if spec is not None and spec["mode"] == "offline":
        outcome.wandb_dirs = offline_run_dirs(directory / "wandb")
    outcome.wandb_links = links
    experiment.sync_up()
    return outcome


def _finish(cfg: RaylungConfig, directory: Path, result: Any, keep: str = "best") -> TrainOutcome:
    """Export the best epoch (or the last, `keep="last"`), plot, and record the metrics."""
    from raylung.artifacts.export import export_checkpoint
    from raylung.plots import learning_curves

    monitor, mode = cfg.train.monitor, cfg.train.monitor_mode
    checkpoint = result.get_best_checkpoint(monitor, mode) if keep == "best" else result.checkpoint
    best_metrics = next(
        (m for c, m in result.best_checkpoints if checkpoint and c.path == checkpoint.path), {}
    )
    history = _history(result)
    export = None
    if checkpoint is not None:
        with checkpoint.as_directory() as ckpt_dir:
            export = export_checkpoint(Path(ckpt_dir), directory / "export", metrics=best_metrics)
    if history:
        learning_curves(history, directory / "plots" / "learning_curves.png", monitor=monitor)
    (directory / "metrics.json").write_text(
        json.dumps({"final": result.metrics, "best": best_metrics, "history": history}, indent=1, default=str)
    )
    return TrainOutcome(directory, cfg, result.metrics, best_metrics, export, history)


def _history(result: Any) -> list[dict[str, Any]]:
    """Every epoch's metrics, across resumes: kept in the latest checkpoint's TrainState
    (Ray's metrics_dataframe only lists the checkpoints it still keeps)."""
    from raylung.artifacts.checkpoint import load_state

    if result.checkpoint is None:
        return []
    with result.checkpoint.as_directory() as directory:
        return load_state(Path(directory)).history


def write_config(cfg: RaylungConfig, directory: Path) -> None:
    """The run's config and its effective pipeline (what it trains, as built)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / CONFIG_FILE).write_text(cfg.model_dump_json(indent=1))
    (directory / PIPELINE_FILE).write_text(json.dumps(effective_pipeline(cfg).to_json(), indent=1))
