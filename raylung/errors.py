"""User-facing errors.

Anything the user can fix (a bad config, a missing folder, a corrupt image) raises a subclass
of :class:`RaylungError` with one clear message; the CLI prints that message without a
traceback and exits with status 2. Everything else is a bug and keeps its traceback.
"""


class RaylungError(Exception):
    """An error the user can fix; its message says what and where."""


class ConfigError(RaylungError):
    """Invalid configuration or search space."""


class DataError(RaylungError):
    """Missing, malformed, unreadable or leaking data."""


class ClusterError(RaylungError):
    """The Ray cluster cannot run what was asked (unreachable, missing resources)."""


class TrainingFailedError(RaylungError):
    """A training run failed beyond its retry budget; its checkpoints are kept for resuming.

    `reason` is the cause alone, in one sentence (:func:`raylung.train.failures.failure_cause`),
    for a summary that names several failures (a search's errored trials)."""

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason or message

    def __reduce__(self):  # raised inside a Tune trial: it travels pickled, attributes and all
        return (type(self), (str(self), self.reason))


class SearchTrialsFailedError(RaylungError):
    """Trials of a search errored: the others' results are written, and a resume retries them."""
