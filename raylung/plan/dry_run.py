"""`raylung tune SPACE --dry-run`: the trials a search would start, without Ray, data or training.

The trials are drawn by the search's own sampler (:func:`raylung.plan.sampler.make_sampler`,
same seed and start-up count) through the same define-by-run space, in an in-memory Optuna
study, and each is resolved by the same :func:`~raylung.config.loading.trial_config` the tune
uses. Random and grid samplers, and TPE's start-up trials, are exactly the trials the tune
starts; TPE's later trials depend on the results of earlier ones, so the dry run shows what TPE
draws with no results yet (marked ``sampled_by: "tpe-without-results"``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raylung.config.loading import LoadedConfig, trial_config
from raylung.plan.effective import EffectivePipeline, effective_pipeline
from raylung.plan.sampler import make_sampler


@dataclass(frozen=True)
class PlannedTrial:
    number: int
    params: dict[str, Any]  # decoded values of the active parameters
    pipeline: EffectivePipeline
    sampled_by: str  # random | grid | tpe-startup | tpe-without-results

    def to_json(self) -> dict[str, Any]:
        pipeline = self.pipeline.to_json()
        return {
            "trial": self.number,
            "params": self.params,
            "sampled_by": self.sampled_by,
            "augment": pipeline["augment"],
            "model": pipeline["model"],
            "input": pipeline["input"],
            "optimization": pipeline["optimization"],
            "digest": pipeline["digest"],
        }


def plan_trials(loaded: LoadedConfig) -> list[PlannedTrial]:
    """The `search.num_samples` trials the search would start, in order."""
    import optuna

    search, space = loaded.config.search, loaded.space
    sampler = make_sampler(search.sampler, search.seed, search.n_startup_trials, space)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=sampler)
    planned = []
    for number in range(search.num_samples):
        trial = study.ask()
        space.define_by_run(trial)
        values = space.resolve(space.decode(trial.params))
        cfg = trial_config(loaded.config, space, values)
        planned.append(PlannedTrial(number, values, effective_pipeline(cfg), _sampled_by(loaded, number)))
    return planned


def _sampled_by(loaded: LoadedConfig, number: int) -> str:
    search = loaded.config.search
    if search.sampler != "tpe":
        return search.sampler
    return "tpe-startup" if number < search.n_startup_trials else "tpe-without-results"


def write_jsonl(trials: list[PlannedTrial], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(t.to_json(), default=str) + "\n" for t in trials))
    return path
