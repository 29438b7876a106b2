"""A benchmark's runs done, of how many, as Ray Tune finishes them (on the driver)."""

from __future__ import annotations

from typing import Any

from ray.tune import Callback

from raylung.progress import Bar


class RunsDone(Callback):
    """Tune callback: advance `task` of `bar` when a run completes or fails.

    Tune keeps its callbacks with the experiment (pickled in ``tuner.pkl``); the bar belongs to
    this process's terminal, so a pickled copy keeps only the task and advances nothing.
    """

    def __init__(self, bar: Bar | None, task: Any) -> None:
        self.bar = bar
        self.task = task

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "bar": None}

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._advance()

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._advance()

    def _advance(self) -> None:
        if self.bar is not None:
            self.bar.advance(self.task)
