"""Ray Tune's W&B logger, made to leave complete run files behind.

Ray's callback logs each trial from a small logging actor and kills that actor as soon as its
``run()`` returns. ``wandb.finish()`` hands the last records to W&B's service process and
returns; killing the actor then kills the service before it writes them, leaving offline run
files without the last epochs or the exit record (seen with wandb 0.31 on trials that end
together, e.g. pruned by ASHA). ``wandb.teardown()`` waits for the service to flush and exit.
"""

from __future__ import annotations

from ray.air.integrations.wandb import WandbLoggerCallback, _WandbLoggingActor


class _FlushingLoggingActor(_WandbLoggingActor):
    def run(self) -> None:
        try:
            super().run()
        finally:
            self._wandb.teardown()


class FlushingWandbLoggerCallback(WandbLoggerCallback):
    """`WandbLoggerCallback` whose per-trial runs are fully written before the actor goes."""

    _logger_actor_cls = _FlushingLoggingActor
