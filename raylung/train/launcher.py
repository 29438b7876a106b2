"""Launch one training run: a Ray Train ``TorchTrainer`` over the configured workers.

Short and separate from the loop, like Ray's examples: scaling, run and checkpoint configs are
derived from the typed config, then ``fit()``. A run directory holds everything about the
run (Ray Train's checkpoints and snapshot, the splits file, W&B files), so pointing a new
launch at the same directory resumes it from its latest checkpoint.
"""

from __future__ import annotations

import json
import logging
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raylung.config import RaylungConfig
from raylung.data import SplitSet, ensure_demo_data, resolve_splits
from raylung.errors import ClusterError, RaylungError
from raylung.train.hooks import PhaseHooks
from raylung.train.patience import start_patiently

try:  # Ray Train V2 (the default since Ray 2.5x) raises this when a run fails for good
    from ray.train import TrainingFailedError
except ImportError:  # pragma: no cover - older Ray
    TrainingFailedError = RuntimeError
from raylung.storage import join, resolve_storage

log = logging.getLogger(__name__)

SPLITS_FILE = "splits.csv"
SNAPSHOT_FILE = "checkpoint_manager_snapshot.json"
STORAGE_PROBE_FILE = ".raylung_storage_probe"  # written to see whether storage takes writes again


@dataclass(frozen=True)
class RunLocation:
    """A run lives at `storage/name`; `storage` is a local path or a pyarrow URI."""

    storage: str
    name: str

    @property
    def path(self) -> str:
        return join(self.storage, self.name)

    @property
    def local_path(self) -> Path | None:
        return None if "://" in self.storage else Path(self.path)


def check_data(cfg: RaylungConfig) -> SplitSet:
    """Read the data's layout and split (writing the demo data if asked) and validate them.

    Run before anything is created or started, so a missing root, an empty class or a leaking
    split fails at once and leaves no experiment folder and no Ray behind.
    """
    if cfg.data.demo:
        ensure_demo_data(cfg.data)
    return resolve_splits(cfg.data)


def prepare_splits(cfg: RaylungConfig, directory: str, split_set: SplitSet | None = None) -> RaylungConfig:
    """Fix the run's split once, in its directory, and point the config at it."""
    splits_file = join(directory, SPLITS_FILE)
    if split_set is None:
        split_set = check_data(cfg)
    split_set.save(splits_file)
    data = cfg.data.model_copy(update={"splits_file": splits_file})
    return cfg.model_copy(update={"data": data})


def use_gpu(cfg: RaylungConfig) -> bool:
    if cfg.resources.use_gpu != "auto":
        return bool(cfg.resources.use_gpu)
    import ray

    return ray.cluster_resources().get("GPU", 0) >= cfg.resources.gpus_per_worker


def scaling_config(cfg: RaylungConfig):
    from ray.train import ScalingConfig

    gpu = use_gpu(cfg)
    per_worker: dict[str, float] = {"CPU": cfg.resources.cpus_per_worker}
    if gpu:
        per_worker["GPU"] = cfg.resources.gpus_per_worker
    return ScalingConfig(
        num_workers=cfg.resources.num_workers,
        use_gpu=gpu,
        resources_per_worker=per_worker,
        placement_strategy=cfg.resources.placement_strategy,
    )


def _fits(cfg: RaylungConfig, nodes: list[dict[str, float]]) -> bool:
    """Whether the worker group could ever be placed on these nodes' total resources."""
    need = scaling_config(cfg).resources_per_worker
    per_node = [
        min(int(res.get(key, 0) // amount) for key, amount in need.items() if amount > 0) for res in nodes
    ]
    workers = cfg.resources.num_workers
    strategy = cfg.resources.placement_strategy
    if strategy == "STRICT_PACK":
        return any(n >= workers for n in per_node)
    if strategy == "STRICT_SPREAD":
        return sum(1 for n in per_node if n >= 1) >= workers
    return sum(per_node) >= workers


def check_resources(cfg: RaylungConfig, wait_s: float = 0.0) -> None:
    """Fail fast, or after a bounded wait, when the cluster cannot place the worker group.

    On an autoscaling cluster the missing nodes may be on their way: raylung asks the
    autoscaler for them, warns while it waits, and gives up after `wait_s` seconds with what
    is missing, instead of hanging on a placement group that never comes.
    """
    import time

    import ray

    need = scaling_config(cfg).resources_per_worker
    deadline = time.monotonic() + wait_s
    asked = False
    while True:
        nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
        if _fits(cfg, nodes):
            if asked:  # the nodes are up: withdraw the request, or it pins them forever
                _request_resources([])
            return
        have = "; ".join(f"CPU {r.get('CPU', 0):g} GPU {r.get('GPU', 0):g}" for r in nodes) or "no live nodes"
        wanted = f"{cfg.resources.num_workers} worker(s) x {need} ({cfg.resources.placement_strategy})"
        if time.monotonic() >= deadline:
            raise ClusterError(
                f"the cluster cannot place {wanted}; nodes have: {have}. Lower "
                "resources.cpus_per_worker / gpus_per_worker / num_workers, set "
                "resources.use_gpu: false, or add nodes"
                + (f" (waited {wait_s:.0f} s for the autoscaler)" if wait_s else "")
            )
        if not asked:
            asked = True
            _request_resources([dict(need)] * cfg.resources.num_workers)
            log.warning(
                "waiting up to %.0f s for the cluster to offer %s (nodes have: %s)", wait_s, wanted, have
            )
        time.sleep(2.0)


def failure_config(cfg: RaylungConfig, resource_wait_s: float):
    """Retry budgets: `train.max_failures` for crashed workers; for a worker group that cannot
    be placed again (a lost node), as many start-up timeouts as fit in `resource_wait_s`,
    instead of Ray's default of retrying forever (a silent hang)."""
    import math
    import os

    from ray.train import FailureConfig

    start_timeout = float(os.environ.get("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "60"))
    limit = max(1, math.ceil(resource_wait_s / start_timeout))
    return FailureConfig(max_failures=cfg.train.max_failures, controller_failure_limit=limit)


def _request_resources(bundles: list[dict[str, float]]) -> None:
    """Ask the autoscaler for nodes (an empty list withdraws the request)."""
    try:
        from ray.autoscaler.sdk import request_resources

        request_resources(bundles=bundles)
    except Exception:  # noqa: BLE001 - no autoscaler: waiting is all we can do
        pass


def run_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train's entry point: :func:`raylung.train.loop.train_loop_per_worker`, imported in the
    worker. The launching process (a Tune trial's actor) pickles only this function by name,
    so it never imports the loop's modules (scikit-learn among them: a second of CPU)."""
    from raylung.train.loop import train_loop_per_worker

    train_loop_per_worker(loop_config)


def _trainer(
    cfg: RaylungConfig,
    location: RunLocation,
    loop_config: dict[str, Any],
    callbacks: list,
    resource_wait_s: float,
):
    from ray.train import CheckpointConfig, RunConfig
    from ray.train.torch import TorchTrainer

    from raylung.train.process_group import ProcessGroupConfig

    return TorchTrainer(
        run_worker,
        train_loop_config=loop_config,
        # The same process group as Ray's TorchConfig, whose module would import torch in the
        # run's controller, a process that never computes (raylung.train.process_group).
        torch_config=ProcessGroupConfig(),
        scaling_config=scaling_config(cfg),
        run_config=RunConfig(
            name=location.name,
            storage_path=location.storage,
            checkpoint_config=CheckpointConfig(
                num_to_keep=cfg.train.checkpoints_to_keep,
                checkpoint_score_attribute=cfg.train.monitor,
                checkpoint_score_order=cfg.train.monitor_mode,
            ),
            failure_config=failure_config(cfg, resource_wait_s),
            callbacks=callbacks,
        ),
    )


def fit(
    cfg: RaylungConfig,
    location: RunLocation,
    *,
    progress: bool = False,
    callbacks: list | None = None,
    hooks: PhaseHooks | None = None,
    resume_hint: str | None = None,
    resource_wait_s: float = 0.0,
):  # -> ray.train.Result
    """Run (or resume) training; `cfg.data.splits_file` must already be fixed.

    `callbacks` are Ray Train callbacks (``RunConfig.callbacks``): a tracker follows the run's
    reports with a ``UserCallback``. `hooks` times the loop's phases inside every worker
    (:mod:`raylung.train.hooks`; picklable, no-op by default)."""
    if not cfg.data.splits_file:
        raise RaylungError("internal: fit() needs a config whose data.splits_file is set")
    loop_config: dict[str, Any] = {"config": cfg, "progress": None, "hooks": hooks}
    display: Any = nullcontext()
    if progress:
        from ray.util.queue import Queue

        from raylung.train.progress import ProgressDisplay

        loop_config["progress"] = Queue(maxsize=1000, actor_options={"num_cpus": 0})
        display = ProgressDisplay(loop_config["progress"])
    trainer = _trainer(cfg, location, loop_config, callbacks or [], resource_wait_s)
    try:
        with display:
            return start_patiently(trainer.fit, lambda: _probe_storage(location), location.name)
    except TrainingFailedError as exc:
        raise _explain_failure(exc, location, resume_hint, resource_wait_s) from exc
    finally:
        if progress:
            loop_config["progress"].shutdown()


def _probe_storage(location: RunLocation) -> None:
    """One small write to the run's folder: does storage take writes again?"""
    from raylung.data.storage import write_text

    write_text(join(location.path, STORAGE_PROBE_FILE), "")


def _explain_failure(
    exc: Exception, location: RunLocation, resume_hint: str | None, resource_wait_s: float = 0.0
) -> Exception:
    """Ray's failure as one line: what failed, what is kept, how to continue (Ray's tracebacks are
    in the run's log, where Ray's loggers wrote them)."""
    from raylung.cluster.run_log import record_error
    from raylung.errors import TrainingFailedError as RaylungTrainingFailed
    from raylung.train.failures import failure_cause

    record_error("training failed; Ray's error:", exc)  # the whole of it, in the run log only
    reason = failure_cause(exc, resource_wait_s or None)
    epoch = last_checkpoint_epoch(location)
    kept = (
        f"checkpoints up to epoch {epoch} are kept" if epoch else "nothing was checkpointed yet; the run is"
    )
    message = f"training failed: {reason}; {kept} in {location.path}"
    if resume_hint:
        message += f"; continue with {resume_hint}"
    return RaylungTrainingFailed(message, reason)


def last_checkpoint_epoch(location: RunLocation) -> int | None:
    """The epoch of the run's latest checkpoint (None: no checkpoint, or unreadable)."""
    try:
        report = latest_report(location)
    except Exception:  # noqa: BLE001 - no snapshot yet, or unreadable: say nothing about epochs
        return None
    epoch = (report or {}).get("epoch")
    return int(epoch) if epoch is not None else None


def has_snapshot(location: RunLocation) -> bool:
    """Whether Ray Train already recorded checkpoints at this location (a resumable run)."""
    import pyarrow.fs

    filesystem, path = resolve_storage(location.path)
    info = filesystem.get_file_info(join(path, SNAPSHOT_FILE))
    return info.type == pyarrow.fs.FileType.File


def _latest_result(location: RunLocation):  # -> ray.train.Result | None
    """Ray Train's record of the run (read from its snapshot); None before its first report."""
    import ray.train

    if not has_snapshot(location):
        return None
    result = ray.train.Result.from_path(location.path)
    return result if result.checkpoint is not None else None


def latest_history(location: RunLocation) -> list[dict[str, float]]:
    """Every epoch's report the run's latest checkpoint kept (its ``TrainState.history``): what a
    resumed run has already trained, so its tracked run can start with it. Only ``state.json`` is
    read, not the weights, wherever the checkpoint is stored."""
    from raylung.artifacts.checkpoint import STATE_FILE

    result = _latest_result(location)
    if result is None:
        return []
    checkpoint = result.checkpoint
    with checkpoint.filesystem.open_input_stream(f"{checkpoint.path.rstrip('/')}/{STATE_FILE}") as stream:
        return json.loads(stream.readall())["history"]


def latest_report(location: RunLocation) -> dict[str, Any] | None:
    """The run's last kept epoch as Ray Train reported it, with its ``checkpoint_path``: what a
    resumed run with nothing left to train reports again (:mod:`raylung.tune.reports`)."""
    result = _latest_result(location)
    if result is None or not result.metrics:
        return None
    return {**result.metrics, "checkpoint_path": result.checkpoint.path}
