"""Ray's failures as one sentence each, for the console's one-line error.

When a node is lost or an actor killed, Ray raises errors that wrap each other (a Train controller
error around a worker-group error around an actor's death, inside the task error of a Tune trial),
each with a traceback and many lines of advice. The details belong in the run's log
(``raylung.log``, where Ray's loggers write them); the user needs what failed, in words: a lost
node, a killed worker, a worker group that could not be started again, or the trial's own error.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator

# Ray Train's start-up timeout of a worker group (ray.train.v2's WORKER_GROUP_START_TIMEOUT_S).
START_TIMEOUT_ENV = "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"
_NODE_DIED = re.compile(r"node (?:has )?died|NODE_DIED|node .* (?:is )?dead", re.IGNORECASE)
_PROCESS_DIED = re.compile(r"worker process (?:has )?died|SIGKILL|killed|exit", re.IGNORECASE)


def failure_cause(exc: BaseException, restart_wait_s: float | None = None) -> str:
    """One sentence saying why Ray gave up, from the innermost error that names a cause.

    `restart_wait_s`: how long raylung let Ray try to start the worker group again (the
    ``--resource-wait``), said instead of Ray's per-attempt timeout when given.
    """
    chain = list(_errors(exc))
    for error in chain:
        reason = getattr(error, "reason", None)  # raylung's TrainingFailedError: already a sentence
        if isinstance(reason, str):
            return reason
    for error in chain:
        if type(error).__name__ == "WorkerGroupStartupTimeoutError":
            workers = getattr(error, "num_workers", None)
            timeout = float(os.environ.get(START_TIMEOUT_ENV, "60"))
            within = restart_wait_s if restart_wait_s else timeout
            died = next((_actor_death(e) for e in chain if _is_actor_death(e)), None)
            why = f"{died}; " if died else ""
            return (
                f"the cluster could not start the run's {workers or 'its'} worker(s) again within "
                f"{within:g} s ({why}Ray's worker group start-up timed out after {timeout:g} s)"
            )
    for error in chain:
        if _is_actor_death(error):
            return _actor_death(error)
    return _last_line(chain[-1])


def _errors(exc: BaseException) -> Iterator[BaseException]:
    """`exc` and what it wraps: Train's controller and worker failures, a Ray task's cause, and
    Python's chained exceptions; each once, outermost first."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        error = todo.pop(0)
        if error is None or id(error) in seen:
            continue
        seen.add(id(error))
        yield error
        todo.append(getattr(error, "controller_failure", None))
        todo.extend((getattr(error, "worker_failures", None) or {}).values())
        todo.append(getattr(error, "health_check_failure", None))
        cause = getattr(error, "cause", None)  # RayTaskError: the exception the task raised
        todo.append(cause if isinstance(cause, BaseException) else None)
        todo.append(error.__cause__)


def _is_actor_death(error: BaseException) -> bool:
    from ray.exceptions import RayActorError

    return isinstance(error, RayActorError) or "actor died" in str(error).lower()


def _actor_death(error: BaseException) -> str:
    """'the node of a worker (10.0.0.2) was lost' / 'a worker process (pid 12) died'."""
    text = str(error)
    ip = re.search(r"\bip: (\S+)", text)
    pid = re.search(r"\bpid: (\d+)", text)
    if _NODE_DIED.search(text) or getattr(error, "preempted", False):
        return "the node of a worker" + (f" ({ip.group(1)})" if ip else "") + " was lost"
    if _PROCESS_DIED.search(text):
        return "a worker process" + (f" (pid {pid.group(1)})" if pid else "") + " died"
    return "a Ray actor of the run died"


def _last_line(error: BaseException) -> str:
    """`Type: message` of the error itself, its traceback and Ray's advice left out."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    message = lines[0] if lines else ""
    name = type(error).__name__
    for marker in ("RayTaskError(", "RayActorError("):  # Ray's dual classes: name the user's
        if name.startswith(marker):
            name = name[len(marker) : -1]
    return f"{name}: {message[:300]}" if message else name
