"""Ray's failures as the one sentence the console shows (raylung.train.failures), and a search's
one line for its errored trials. Ray's own exception classes, built as Ray builds them."""

from __future__ import annotations

import pickle

from raylung.errors import TrainingFailedError
from raylung.train.failures import failure_cause
from raylung.tune.results import TrialSummary, errored_trials_line


def _node_died():
    from ray.core.generated.common_pb2 import ActorDiedErrorContext
    from ray.exceptions import ActorDiedError

    return ActorDiedError(
        ActorDiedErrorContext(
            class_name="RayTrainWorker",
            actor_id=b"\x01" * 16,
            pid=4242,
            node_ip_address="10.0.0.7",
            error_message="The actor is dead because its node has died. Node Id: abc",
        )
    )


def test_a_worker_group_that_cannot_start_again_after_a_node_loss(monkeypatch):
    from ray.train import ControllerError, WorkerGroupError
    from ray.train.v2._internal.exceptions import WorkerGroupStartupTimeoutError

    monkeypatch.setenv("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "10")
    timeout = ControllerError(WorkerGroupStartupTimeoutError(2))
    timeout.__cause__ = WorkerGroupError("rank 1 died", {1: _node_died()})
    cause = failure_cause(timeout, restart_wait_s=20)
    assert cause.startswith("the cluster could not start the run's 2 worker(s) again within 20 s (")
    assert "the node of a worker (10.0.0.7) was lost" in cause and "timed out after 10 s" in cause
    assert "\n" not in cause


def test_a_dead_actor_and_a_killed_process_are_named():
    from ray.core.generated.common_pb2 import ActorDiedErrorContext
    from ray.exceptions import ActorDiedError
    from ray.train import WorkerGroupError

    assert (
        failure_cause(WorkerGroupError("x", {0: _node_died()})) == "the node of a worker (10.0.0.7) was lost"
    )
    killed = ActorDiedError(
        ActorDiedErrorContext(
            class_name="RayTrainWorker",
            actor_id=b"\x02" * 16,
            pid=77,
            error_message="The actor is dead because its worker process has died. Worker exit type: "
            "SYSTEM_ERROR Worker exit detail: killed by SIGKILL",
        )
    )
    assert failure_cause(WorkerGroupError("x", {0: killed})) == "a worker process (pid 77) died"


def test_a_trial_error_is_its_own_exception_not_rays_wrapping():
    from ray.exceptions import RayTaskError

    try:
        raise ValueError("loss is NaN at epoch 3\nmore detail")
    except ValueError as exc:
        task_error = RayTaskError("ImplicitFunc.train", "Traceback (most recent call last): ...", exc)
    assert failure_cause(task_error.as_instanceof_cause()) == "ValueError: loss is NaN at epoch 3"
    # raylung's own failure, raised in a trial, travels pickled with its one-sentence reason
    ours = pickle.loads(pickle.dumps(TrainingFailedError("training failed: x; kept in y", "x")))
    wrapped = RayTaskError("ImplicitFunc.train", "Traceback ...", ours).as_instanceof_cause()
    assert failure_cause(wrapped) == "x"


def _trial(trial_id: str, status: str, error: str | None = None) -> TrialSummary:
    return TrialSummary(trial_id, {}, status, 2, None if error else 0.5, None if error else 2, error=error)


def test_a_search_with_errored_trials_ends_on_one_line():
    trials = [
        _trial("a", "completed"),
        _trial("b", "error", "a worker process (pid 7) died"),
        _trial("c", "error", "a worker process (pid 7) died"),
    ]
    line = errored_trials_line(trials, "file:///s/smoke-1", "a")
    assert line == (
        "2 of 3 trial(s) errored (b, c: a worker process (pid 7) died); the results of the 1 other "
        "trial(s) are written to file:///s/smoke-1 (best trial a in best.json); their checkpoints are "
        "kept, continue with raylung tune --resume file:///s/smoke-1"
    )
    assert errored_trials_line(trials[:1], "x", "a") is None
