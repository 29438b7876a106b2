"""Each trial's tracked run: described by the trial, fed by its reports, ended by the driver.

A trial starts its run in the driver's tracker hub (:mod:`raylung.tracking.hub`) with its
sampled parameters and its effective pipeline as the run's config; its Ray Train reports reach
the run through the hub's epoch logger, the same route as a plain ``raylung train``. Tune's
driver ends the run when the trial completes, errors or is stopped by ASHA, so a trial whose
actors are killed mid-epoch still leaves complete run files behind.
"""

from __future__ import annotations

from typing import Any

from ray.tune import Callback


def trial_run_spec(
    template: dict[str, Any], trial_id: str, params: dict[str, Any], pipeline: dict[str, Any]
) -> dict[str, Any]:
    """``wandb.init`` keywords of one trial's run: named and identified by the trial id, so a
    trial that Tune restarts continues its run."""
    return {
        **template,
        "name": trial_id,
        "id": trial_id,
        "resume": "allow",
        "config": {**params, "effective": pipeline},
    }


class FinishTrialRuns(Callback):
    """Tune callback on the driver: a trial's run ends when the trial does, however it ends.

    It names the hub rather than holding it: Tune keeps its callbacks with the experiment, and
    a resumed search must reach the hub it started, not the one of the interrupted process.
    """

    def __init__(self, hub_name: str) -> None:
        self.hub_name = hub_name

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._finish(trial.trial_id)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._finish(trial.trial_id)

    def _finish(self, trial_id: str) -> None:
        import ray

        try:
            hub = ray.get_actor(self.hub_name)
        except ValueError:  # no hub (W&B disabled); the hub finishes what is open when it closes
            return
        hub.finish.remote(trial_id)
