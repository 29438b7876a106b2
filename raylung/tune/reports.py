"""Forward a Ray Train run's per-epoch reports to Tune from the trial's own thread.

Ray's ``TuneReportCallback`` (Ray 2.60) hands each report to the trial actor's main thread,
which then puts it on the session's one-slot result queue itself. When the training function
returns right after the last report, the function's own thread puts its "finished" marker on
that queue first, and the main thread blocks forever on its second put: the only consumer is
the thread that is stuck. On a busy machine that race hangs trials at their last epoch.

Here the Train run fits in a helper thread, its reports travel through a one-slot channel to
the trial (:mod:`raylung.tune.report_channel`: a loopback socket, not an actor), and the trial's
thread (the one Tune expects reports from) calls ``tune.report`` for each: one producer, so
nothing can overtake the last report. The metrics carry ``checkpoint_path`` as
``TuneReportCallback``'s do; the checkpoint itself is already in storage and is not re-uploaded.
When Tune stops a trial (ASHA) its channel goes with it, and the Train run's last reports, made
before the trial's actor takes the run down, are dropped quietly.

A trial can also have nothing left to train: it finished just before the driver died, after
Tune last saved its state (every ~10 s), so a resumed search restores it as RUNNING. Its Train
run resumes from the last checkpoint, trains nothing and reports nothing, and Tune would fail
the trial (no ``val_loss`` in its result) and every ``--resume`` with it. So a fit that reported
nothing reports its last kept epoch again, marked :data:`RESTATED`: not a new epoch (W&B never
sees it; :mod:`raylung.tune.results` leaves it out), only the trial's closing result.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

from ray import tune
from ray.train.v2.api.callback import UserCallback

from raylung.errors import RaylungError
from raylung.tune.report_channel import ReportChannel, send_report

CHECKPOINT_PATH_KEY = "checkpoint_path"
RESTATED = "restated"  # 1 on a report that repeats the last kept epoch (see above)
_FINISHED = None  # reports are dicts: None marks the end of the run


class ChannelReportCallback(UserCallback):
    """Send rank 0's metrics of each ``ray.train.report`` (and its checkpoint path) to the trial."""

    def __init__(self, address: tuple[str, int], authkey: bytes) -> None:
        self._address = address
        self._authkey = authkey
        self._delivered = False

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
        item = dict(metrics[0])
        if checkpoint is not None:
            item[CHECKPOINT_PATH_KEY] = checkpoint.path
        # One slot: the controller waits until the trial takes it. Refused after an earlier
        # report got through: Tune stopped the trial (ASHA, which decides on reports) and its
        # channel went with it; the report is dropped. Refused before any got through: the
        # channel was never reachable from here, and every report would be lost in silence.
        if send_report(self._address, self._authkey, item):
            self._delivered = True
        elif not self._delivered:
            raise RaylungError(
                f"this trial's Train controller cannot reach the trial's report channel at "
                f"{self._address[0]}:{self._address[1]}: raylung expects Ray Train to run a run's "
                "controller on the node of the process that fits it, as Ray 2.60 does"
            )


def fit_reporting_to_tune(
    fit: Callable[[list[UserCallback]], Any], kept: Mapping[str, Any] | None = None
) -> Any:
    """Run ``fit(callbacks)`` in a helper thread and ``tune.report`` each report here.

    Returns what `fit` returns and re-raises what it raises. If Tune stops the trial (ASHA),
    ``tune.report`` ends this thread, as it would any function trainable, and the trial's
    actor takes the Train run down with it. `kept`: the run's last kept report before this fit
    (``launcher.latest_report``), reported again, marked :data:`RESTATED`, if the fit succeeds
    without reporting anything.
    """
    channel = ReportChannel()
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = fit([ChannelReportCallback(channel.address, channel.authkey)])
        except BaseException as exc:  # handed to the trial's thread below
            outcome["error"] = exc
        finally:
            channel.put(_FINISHED)  # behind every report the run made: they were taken first

    thread = threading.Thread(target=run, name="raylung-train-fit", daemon=True)
    thread.start()
    reported = False
    try:
        while (item := channel.get()) is not _FINISHED:
            tune.report(item)
            reported = True
        thread.join()
    finally:
        channel.close()
    if "error" in outcome:
        raise outcome["error"]
    if not reported and kept is not None:
        tune.report({**kept, RESTATED: 1})
    return outcome.get("value")
