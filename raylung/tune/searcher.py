"""Optuna TPE search whose study lives in sqlite inside the experiment, and survives resumes.

Ray restores a searcher from its pickled state, sampler RNG included. A resumed study would
then draw the very same "random" start-up configurations again (optuna issue #3255), so on
restore the sampler is reseeded with the original seed plus the number of trials already in
the study: different on each resume, still reproducible.

The study is a local sqlite file (sqlite must not live on NFS or an object store). With URI
storage, every suggestion and every finished trial copies it to storage
(:meth:`~raylung.experiment.Experiment.save_study`), so a driver lost mid-search loses nothing
Optuna knew. The pickled searcher (Tune's ``tuner.pkl`` and searcher state) names the
experiment, not a local path: a resume on another machine, or under another HOME, opens its
own local copy, downloaded from storage.
"""

from __future__ import annotations

import logging
import pickle
from typing import Any

import optuna
from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch

from raylung.config.search_space import SearchSpace
from raylung.experiment import Experiment
from raylung.plan.sampler import make_sampler

log = logging.getLogger(__name__)

# Opened again from the experiment when unpickled: a sqlite URL is a path on one machine.
_UNPICKLED = ("_storage", "_ot_study")


class ResumableOptunaSearch(OptunaSearch):
    """OptunaSearch over a raylung SearchSpace, kept in storage as it goes, reseeded on restore."""

    def __init__(
        self,
        space: SearchSpace,
        *,
        sampler: str,
        experiment: Experiment,
        seed: int,
        n_startup_trials: int,
        metric: str,
        mode: str,
    ) -> None:
        self._base_seed = seed
        self._n_startup_trials = n_startup_trials
        self._sampler_kind = sampler
        self._search_space = space
        self._experiment = experiment
        super().__init__(
            space=space.define_by_run,
            metric=metric,
            mode=mode,
            sampler=make_sampler(sampler, seed, n_startup_trials, space),
            storage=self._open_storage(),
            study_name=experiment.name,
        )

    def _open_storage(self) -> optuna.storages.RDBStorage:
        self._experiment.local.mkdir(parents=True, exist_ok=True)
        return optuna.storages.RDBStorage(self._experiment.optuna_url)

    def suggest(self, trial_id: str) -> dict | None:
        config = super().suggest(trial_id)
        self._experiment.save_study()
        return config

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        super().on_trial_complete(trial_id, result, error)
        self._experiment.save_study()

    def __getstate__(self) -> dict[str, Any]:
        """Everything but the open study; its trials by Optuna's trial id."""
        state = self.__dict__.copy()
        for name in _UNPICKLED:
            state[name] = None
        state["_ot_trials"] = {tune_id: _optuna_id(trial) for tune_id, trial in self._ot_trials.items()}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._storage = self._open_storage()
        self._setup_study(self._mode)  # loads the study of this name from the local copy
        # Finished trials stay ids: Tune never asks about them again, and an ``optuna.Trial``
        # would run the sampler's per-trial set-up on a trial that is over.
        self._ot_trials = {
            tune_id: _optuna_id(trial)
            if tune_id in self._completed_trials
            else optuna.Trial(self._ot_study, _optuna_id(trial))
            for tune_id, trial in state["_ot_trials"].items()
        }

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as stream:
            pickle.dump(self.__getstate__(), stream)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as stream:
            self.__setstate__(pickle.load(stream))
        failed = self._fail_unrecorded_trials()
        told = self._close_trials_the_study_finished()
        done = len(self._ot_study.trials)
        seed = self._base_seed + done
        self._ot_study.sampler = make_sampler(
            self._sampler_kind, seed, self._n_startup_trials, self._search_space
        )
        self._experiment.save_study()
        log.info(
            "resumed the Optuna study with %d trials (%d started after Tune's last record, marked "
            "failed; %d finished after it, not told again); sampler reseeded with %d",
            done,
            failed,
            told,
            seed,
        )

    def _close_trials_the_study_finished(self) -> int:
        """Count as completed the trials Tune restores as running but the study holds as finished.

        The study is saved when a trial finishes, Tune's searcher state only every few seconds: a
        trial that finished (or that ASHA stopped) just before the driver was lost comes back as
        running, and its next result would be told to an Optuna trial that is over
        (``UpdateFinishedTrialError``, which ended the resumed search). Optuna keeps what it was
        told first; Tune's further results of that trial are for Tune alone.
        """
        finished = {
            trial._trial_id
            for trial in self._ot_study.get_trials(deepcopy=False)
            if trial.state.is_finished()
        }
        closed = [
            tune_id
            for tune_id, trial in self._ot_trials.items()
            if tune_id not in self._completed_trials and _optuna_id(trial) in finished
        ]
        for tune_id in closed:
            self._completed_trials.add(tune_id)
            self._ot_trials[tune_id] = _optuna_id(self._ot_trials[tune_id])
        return len(closed)

    def _fail_unrecorded_trials(self) -> int:
        """Mark FAIL the trials the study holds as RUNNING that Tune never recorded.

        The study is saved after each suggestion, Tune's state only every few seconds: a driver
        lost in between leaves trials that no one will ever finish. As FAIL, Optuna's samplers
        ignore them and the suggestion sequence continues; as RUNNING they would sit in the
        study for good. Trials Tune did record (in `_ot_trials`) resume and finish normally.
        """
        recorded = {_optuna_id(trial) for trial in self._ot_trials.values()}
        orphans = [
            trial
            for trial in self._ot_study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if trial._trial_id not in recorded
        ]
        for trial in orphans:
            self._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        return len(orphans)


def _optuna_id(trial: Any) -> int:
    """Optuna's storage id of a trial: from an ``optuna.Trial``, or as pickled here (an int)."""
    return trial if isinstance(trial, int) else trial._trial_id
