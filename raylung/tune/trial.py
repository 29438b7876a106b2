"""One Tune trial: sampled parameters -> a full config -> a distributed Ray Train run.

Ray 2.60 runs Train V2, where a Tuner can no longer wrap a trainer: each trial is a function
trainable that builds and fits its own ``TorchTrainer``; :mod:`raylung.tune.reports` forwards
rank 0's per-epoch report (validation metrics already reduced over all workers) to Tune, where ASHA
and Optuna see it. Each trial's checkpoints live under ``trials/<trial_id>``, so a trial that
Tune restarts after an interruption resumes from its latest checkpoint; its effective pipeline
(what it trains, as built) is written there as ``pipeline.json`` before training starts.
"""

from __future__ import annotations

import json
from typing import Any

from ray import tune

from raylung.config import RaylungConfig
from raylung.config.loading import trial_config as resolve_trial
from raylung.config.search_space import SearchSpace
from raylung.data import storage
from raylung.plan.effective import PIPELINE_FILE, effective_pipeline
from raylung.storage import join
from raylung.tracking.hub import HubRun
from raylung.train.launcher import RunLocation, fit, latest_history, latest_report
from raylung.train.patience import patiently
from raylung.tune.reports import fit_reporting_to_tune
from raylung.tune.trial_runs import trial_run_spec


def trial_config(base: RaylungConfig, space: SearchSpace, params: dict[str, Any]) -> RaylungConfig:
    """The full config of a trial from Ray's sampled parameters (inactive ones at their defaults)."""
    return resolve_trial(base, space, space.decode(params))


def run_trial(
    params: dict[str, Any],
    *,
    base: RaylungConfig,
    space: SearchSpace,
    trials_storage: str,
    resource_wait_s: float = 0.0,
    hub: Any = None,
    hooks: Any = None,
    run_template: dict[str, Any] | None = None,
) -> None:
    """Tune function trainable (bound with `tune.with_parameters`).

    With a tracker `hub`, the trial's run (``run_template`` completed by the trial) is started
    there and the trial's reports reach it; the driver finishes it (see :mod:`.trial_runs`).
    """
    cfg = trial_config(base, space, params)
    trial_id = tune.get_context().get_trial_id()
    location = RunLocation(trials_storage, trial_id)
    # What this trial trains, as built from its own config, next to its checkpoints.
    pipeline = effective_pipeline(cfg).to_json()
    # Written patiently: a trial starting in a storage outage waits for it rather than erroring.
    text = json.dumps(pipeline, indent=1)
    patiently(lambda: storage.write_text(join(location.path, PIPELINE_FILE), text), PIPELINE_FILE)
    spec = trial_run_spec(run_template, trial_id, params, pipeline) if run_template else None
    # A restarted trial's run starts with the epochs its checkpoint kept (one W&B history).
    run = HubRun(hub, trial_id, spec, latest_history(location) if spec else ())
    fit_reporting_to_tune(
        lambda callbacks: fit(
            cfg,
            location,
            # The run logs an epoch before Tune (and ASHA) hear of it.
            callbacks=[*run.report_callbacks(), *callbacks],
            resume_hint="raylung tune --resume EXPERIMENT_DIR",
            resource_wait_s=resource_wait_s,
            hooks=hooks,
        ),
        kept=latest_report(location),
    )
