"""Ray Tune's W&B logger, made to leave complete run files behind.

Ray's callback logs each trial from a small logging actor and kills that actor as soon as its
``run()`` returns. ``wandb.finish()`` hands the last records to W&B's service process and
returns; killing the actor then kills the service before it writes them, leaving offline run
files without the last epochs or the exit record (seen with wandb 0.31 on trials that end
together, e.g. pruned by ASHA). ``wandb.teardown()`` waits for the service to flush and exit.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from ray.air.integrations.wandb import WandbLoggerCallback, _WandbLoggingActor

log = logging.getLogger(__name__)


class _FlushingLoggingActor(_WandbLoggingActor):
    def run(self) -> None:
        try:
            super().run()
        finally:
            self._wandb.teardown()


class FlushingWandbLoggerCallback(WandbLoggerCallback):
    """`WandbLoggerCallback` whose per-trial runs are fully written before the actor goes.

    With `effective`, each run's config also holds the trial's effective pipeline under
    ``effective`` (augmentation and model as built), next to the sampled parameters.
    """

    _logger_actor_cls = _FlushingLoggingActor

    def __init__(
        self, *args: Any, effective: Callable[[dict[str, Any]], dict[str, Any]] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self._effective = effective

    def _start_logging_actor(self, trial: Any, exclude_results: list[str], **wandb_init_kwargs: Any) -> None:
        effective = getattr(self, "_effective", None)
        if effective is not None:
            config = dict(wandb_init_kwargs.get("config") or {})
            config["effective"] = effective(dict(trial.config))
            wandb_init_kwargs["config"] = config
        super()._start_logging_actor(trial, exclude_results, **wandb_init_kwargs)
