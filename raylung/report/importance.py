"""Which searched parameters mattered: Optuna's fANOVA importance on the experiment's study.

The study in optuna.db is the one the search sampled from (study name = experiment name). Ray's
OptunaSearch tells it each trial's metric at the trial's *last* reported epoch, so an
ASHA-pruned trial counts with the value it was stopped at. A search of a few trials gives
importances with wide error; the report says how many trials they rest on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from raylung.experiment import Experiment

log = logging.getLogger(__name__)

MIN_TRIALS = 2  # fANOVA fits a forest to (params -> value); below this there is nothing to fit
SEED = 0  # fANOVA's forest is random; a fixed seed makes the report reproducible


@dataclass(frozen=True)
class Importance:
    """Normalised importances (sum 1, most important first), or why there are none."""

    values: dict[str, float] = field(default_factory=dict)
    n_trials: int = 0
    notes: list[str] = field(default_factory=list)
    method: str = f"Optuna fANOVA (seed {SEED})"


def _searched(study) -> list[str]:
    names: set[str] = set()
    for trial in study.get_trials(deepcopy=False):
        names.update(trial.params)
    return sorted(names)


def param_importance(experiment: Experiment) -> Importance:
    """Importances from optuna.db, with a note instead whenever they cannot be assessed."""
    db = experiment.local / "optuna.db"
    if not db.is_file():
        return Importance(notes=[f"no Optuna study found ({db} is missing)"])
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.load_study(study_name=experiment.name, storage=experiment.optuna_url)
    except KeyError:
        return Importance(notes=[f"optuna.db holds no study named {experiment.name!r}"])
    completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    n = len(completed)
    if n < MIN_TRIALS:
        return Importance(
            n_trials=n,
            notes=[f"only {n} completed trial(s) in the Optuna study; importance needs {MIN_TRIALS}"],
        )
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=SEED)
    try:
        values = optuna.importance.get_param_importances(study, evaluator=evaluator)
    except (ValueError, RuntimeError) as exc:
        log.warning("parameter importance failed: %s", exc)
        return Importance(n_trials=n, notes=[f"Optuna could not assess importance: {exc}"])
    notes = []
    left_out = [name for name in _searched(study) if name not in values]
    if left_out:
        notes.append(
            f"left out: {', '.join(left_out)} (sampled in only some trials, e.g. conditional on "
            "another choice; Optuna assesses the parameters every trial has)"
        )
    if len(values) == 1:
        notes.append(f"only one parameter ({next(iter(values))}) is assessed: its importance is 1 by design")
    if not values:
        notes.append("no parameter is common to all completed trials")
    if values and not all(v == v for v in values.values()):  # NaN when every trial scored the same
        return Importance(n_trials=n, notes=[*notes, "every trial scored the same: importance is undefined"])
    notes.append(
        f"based on {n} completed trial(s), each scored by its metric at its last reported epoch "
        "(a pruned trial by the value it was stopped at); few trials make these estimates rough"
    )
    return Importance(values=dict(values), n_trials=n, notes=notes)
