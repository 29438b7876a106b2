"""Optuna TPE search whose study lives in sqlite inside the experiment, and survives resumes.

Ray restores a searcher from its pickled state, sampler RNG included. A resumed study would
then draw the very same "random" start-up configurations again (optuna issue #3255), so on
restore the sampler is reseeded with the original seed plus the number of trials already in
the study: different on each resume, still reproducible.
"""

from __future__ import annotations

import logging

import optuna
from ray.tune.search.optuna import OptunaSearch

from raylung.config.search_space import SearchSpace
from raylung.plan.sampler import make_sampler

log = logging.getLogger(__name__)


class ResumableOptunaSearch(OptunaSearch):
    """OptunaSearch over a raylung SearchSpace, reseeded on restore."""

    def __init__(
        self,
        space: SearchSpace,
        *,
        sampler: str,
        storage_url: str,
        study_name: str,
        seed: int,
        n_startup_trials: int,
        metric: str,
        mode: str,
    ) -> None:
        self._base_seed = seed
        self._n_startup_trials = n_startup_trials
        self._sampler_kind = sampler
        self._search_space = space
        storage = optuna.storages.RDBStorage(storage_url)
        super().__init__(
            space=space.define_by_run,
            metric=metric,
            mode=mode,
            sampler=make_sampler(sampler, seed, n_startup_trials, space),
            storage=storage,
            study_name=study_name,
        )

    def restore(self, checkpoint_path: str) -> None:
        super().restore(checkpoint_path)
        done = len(self._ot_study.trials)
        seed = self._base_seed + done
        self._ot_study.sampler = make_sampler(
            self._sampler_kind, seed, self._n_startup_trials, self._search_space
        )
        log.info("resumed the Optuna study with %d trials; sampler reseeded with %d", done, seed)
