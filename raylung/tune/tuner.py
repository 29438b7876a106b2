"""Run, or resume, a search: Ray Tune + Optuna (TPE) + ASHA, every trial logged to W&B.

The launcher is short, like Ray's examples: a trainable bound to the base config, a
``TuneConfig`` carrying metric and mode (so ASHA and Optuna both see them), and a
``RunConfig`` whose storage is the experiment directory. Trial drivers reserve a custom
resource instead of CPUs so they never starve their own training workers.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass
from typing import Any

import yaml

from raylung.cluster.connect import TRIAL_DRIVER_RESOURCE
from raylung.config import RaylungConfig
from raylung.config.loading import LoadedConfig, load_config
from raylung.config.search_space import SearchSpace
from raylung.data import SplitSet
from raylung.errors import ClusterError, ConfigError
from raylung.experiment import Experiment
from raylung.tracking import init_kwargs, resolve_mode
from raylung.tracking.hub import tracker_hub
from raylung.train.launcher import check_resources, prepare_splits
from raylung.tune.searcher import ResumableOptunaSearch
from raylung.tune.trial import run_trial
from raylung.tune.trial_runs import FinishTrialRuns

log = logging.getLogger(__name__)

SPACE_FILE = "raylung.yaml"
BASE_FILE = "base_config.json"


@dataclass(frozen=True)
class PreparedSearch:
    """Everything a tune needs, fixed once for the whole experiment."""

    experiment: Experiment
    base: RaylungConfig
    space: SearchSpace


def prepare(
    loaded: LoadedConfig, experiment: Experiment, split_set: SplitSet | None = None
) -> PreparedSearch:
    """Fix the split, save the space and the base config into the experiment directory."""
    if not loaded.space:
        raise ConfigError("the search space has no distributions: use `raylung train` for one run")
    check_grid(loaded)
    base = loaded.config
    # In a tune, the search metric drives ASHA, early stopping and checkpoint retention alike,
    # so the best epoch of every trial is always among the kept checkpoints.
    train = base.train.model_copy(update={"monitor": base.search_metric})
    base = base.model_copy(update={"train": train})
    os.makedirs(experiment.local, exist_ok=True)
    base = prepare_splits(base, experiment.path, split_set)
    (experiment.local / SPACE_FILE).write_text(yaml.safe_dump(loaded.source.data, sort_keys=False))
    (experiment.local / BASE_FILE).write_text(base.model_dump_json(indent=1))
    (experiment.local / "space.json").write_text(json.dumps(loaded.space.to_json(), indent=1))
    experiment.sync_up()
    return PreparedSearch(experiment, base, loaded.space)


def check_grid(loaded: LoadedConfig) -> None:
    """A grid search needs only `choice` parameters and exactly one trial per combination."""
    search = loaded.config.search
    if search.sampler != "grid":
        return
    where = loaded.source.where("search.sampler")
    ranged = [d.path for d in loaded.space.distributions if d.kind != "choice" or d.when]
    if ranged:
        raise ConfigError(
            f"{where}: search.sampler grid needs unconditional `choice` parameters; not: {', '.join(ranged)}"
        )
    size = math.prod(len(d.choices) for d in loaded.space.distributions)
    if search.num_samples != size:
        raise ConfigError(f"{where}: the grid has {size} combinations; set search.num_samples: {size}")


def reload(experiment: Experiment) -> PreparedSearch:
    """The prepared search of an existing experiment, for resume and reporting."""
    experiment.sync_down()
    base_file = experiment.local / BASE_FILE
    if not base_file.is_file():
        raise ConfigError(f"{experiment.local} is not a raylung tune experiment (no {BASE_FILE})")
    space = load_config(experiment.local / SPACE_FILE).space
    base = RaylungConfig.model_validate_json(base_file.read_text())
    return PreparedSearch(experiment, base, space)


def default_concurrency(base: RaylungConfig) -> int:
    """How many trials fit on the cluster now (each needs its whole worker group)."""
    import ray

    total = ray.cluster_resources()
    per_trial_cpu = base.resources.num_workers * base.resources.cpus_per_worker
    fits = math.floor(total.get("CPU", 0) / per_trial_cpu + 1e-9)
    if total.get("GPU", 0) and base.resources.use_gpu is not False:
        fits = min(
            fits, math.floor(total["GPU"] / (base.resources.num_workers * base.resources.gpus_per_worker))
        )
    return max(1, fits)


def check_driver_resource() -> None:
    import ray

    if ray.cluster_resources().get(TRIAL_DRIVER_RESOURCE, 0) < 1:
        raise ClusterError(
            f"the Ray cluster has no '{TRIAL_DRIVER_RESOURCE}' resource, which raylung's trial "
            "drivers reserve instead of CPUs. Start the head node with "
            f"`ray start --head --resources='{{\"{TRIAL_DRIVER_RESOURCE}\": 8}}'` (cluster.yaml "
            "sets it), or run without --address to use a local Ray."
        )


def _trainable(
    prepared: PreparedSearch, resource_wait_s: float = 0.0, hub: Any = None, train_hooks: Any = None
):
    from ray import tune

    bound = tune.with_parameters(
        run_trial,
        base=prepared.base,
        space=prepared.space,
        trials_storage=prepared.experiment.trials_storage,
        resource_wait_s=resource_wait_s,
        hub=hub,
        hooks=train_hooks,
        run_template=_run_template(prepared) if hub is not None else None,
    )
    return tune.with_resources(bound, {"CPU": 0, TRIAL_DRIVER_RESOURCE: 1})


def restorable_trainable():
    """A trainable for reading a finished search with Ray's own API, without raylung's driver::

        tune.Tuner.restore(TUNE_DIR, trainable=restorable_trainable()).get_results()

    Ray only needs it to rebuild the Tuner; reading results runs nothing. To continue a
    search, use ``raylung tune --resume`` (it binds the trial's config and tracking again).
    """
    from ray import tune

    return tune.with_resources(run_trial, {"CPU": 0, TRIAL_DRIVER_RESOURCE: 1})


def _run_template(prepared: PreparedSearch) -> dict[str, Any]:
    """What every trial's tracked run shares: project, mode, group (the experiment), folder."""
    mode = resolve_mode(prepared.base.wandb)
    return init_kwargs(
        prepared.base.wandb,
        mode,
        prepared.experiment.wandb_dir,
        group=prepared.experiment.name,
        job_type="trial",
    )


def _tracked(prepared: PreparedSearch) -> bool:
    return resolve_mode(prepared.base.wandb) != "disabled"


def hub_name(prepared: PreparedSearch) -> str:
    """The tracker hub's actor name: the same for a resumed search, whose restored Tune
    callbacks find the new hub by it."""
    return f"raylung-tracking-{prepared.experiment.name}"


def _trial_dirname(trial) -> str:
    return trial.trial_id


def build_tuner(
    prepared: PreparedSearch,
    resource_wait_s: float = 0.0,
    hub: Any = None,
    callbacks: list | None = None,
    train_hooks: Any = None,
):
    """The search's ``Tuner``; with a tracker `hub`, every trial is a tracked run.

    `callbacks` are extra Tune callbacks (a benchmark's clocks, say), run after raylung's own;
    `train_hooks` (:class:`raylung.train.hooks.PhaseHooks`) time each trial's training phases.
    """
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    base = prepared.base
    search = base.search
    scheduler = (
        ASHAScheduler(
            time_attr="epoch",
            max_t=base.train.epochs,
            grace_period=min(search.asha.grace_period, base.train.epochs),
            reduction_factor=search.asha.reduction_factor,
            brackets=search.asha.brackets,
        )
        if search.asha.enabled
        else FIFOScheduler()
    )
    searcher = ResumableOptunaSearch(
        prepared.space,
        sampler=search.sampler,
        experiment=prepared.experiment,
        seed=search.seed,
        n_startup_trials=search.n_startup_trials,
        metric=base.search_metric,
        mode=base.search_mode,
    )
    own = [FinishTrialRuns(hub_name(prepared))] if hub is not None else []
    return tune.Tuner(
        _trainable(prepared, resource_wait_s, hub, train_hooks),
        tune_config=tune.TuneConfig(
            metric=base.search_metric,
            mode=base.search_mode,
            search_alg=searcher,
            scheduler=scheduler,
            num_samples=search.num_samples,
            max_concurrent_trials=search.max_concurrent_trials or default_concurrency(base),
            trial_dirname_creator=_trial_dirname,
        ),
        run_config=tune.RunConfig(
            name="tune",
            storage_path=prepared.experiment.path,
            callbacks=[*own, *(callbacks or [])],
            failure_config=tune.FailureConfig(max_failures=0),
            verbose=1,
        ),
    )


def check_start(prepared: PreparedSearch, resource_wait_s: float = 0.0) -> None:
    """The connected cluster can run this search's trials (driver slots, worker resources)."""
    check_driver_resource()
    check_resources(prepared.base, resource_wait_s)


def run(
    prepared: PreparedSearch,
    resource_wait_s: float = 0.0,
    callbacks: list | None = None,
    train_hooks: Any = None,
) -> Any:
    """Fit the search (-> ``ray.tune.ResultGrid``); the caller has run :func:`check_start`.

    `callbacks`: extra Tune callbacks, e.g. a benchmark's trial clocks; `train_hooks`: timing
    hooks for each trial's training loop (see :func:`build_tuner`).
    """
    with tracker_hub(_tracked(prepared), hub_name(prepared)) as hub:
        return build_tuner(prepared, resource_wait_s, hub, callbacks, train_hooks).fit()


def resume(prepared: PreparedSearch, resource_wait_s: float = 0.0) -> Any:
    from ray import tune

    check_driver_resource()
    tune_dir = prepared.experiment.tune_dir
    if not tune.Tuner.can_restore(tune_dir):
        raise ConfigError(f"nothing to resume at {tune_dir}: the tune never started there")
    with tracker_hub(_tracked(prepared), hub_name(prepared)) as hub:
        tuner = tune.Tuner.restore(
            tune_dir,
            trainable=_trainable(prepared, resource_wait_s, hub),
            resume_unfinished=True,
            resume_errored=True,
        )
        return tuner.fit()
