"""Ray Train's backend for raylung's runs: the torch process group, set up by a controller that
never imports torch.

Every Ray Train run has a controller process that only coordinates: it places the workers,
watches them and collects their reports. With Ray's ``TorchConfig`` that process unpickles the
config from ``ray.train.torch.config``, which imports torch and ``torch.distributed``: 1.3-1.5
CPU-seconds in every trial of a tune, in a process that never computes. This backend does the
same job (gloo on CPUs, NCCL on GPUs, one rank per worker, ``env://`` rendezvous at rank 0's
address) with the controller side in plain Ray calls and the torch side in functions that run
inside the workers, which import torch anyway. Nothing in this module imports torch at import
time; keep it so (``tests/test_process_group.py`` checks, from inside a real run's controller,
that it never imported torch).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import timedelta
from types import TracebackType

import ray
from ray.train._internal.utils import get_address_and_port  # Ray's own helper; torch-free
from ray.train.backend import Backend, BackendConfig

__all__ = ["ProcessGroupConfig", "torch_backend_name"]

log = logging.getLogger(__name__)

NCCL_ERROR_HANDLING = "TORCH_NCCL_ASYNC_ERROR_HANDLING"  # fail a hung collective instead of waiting forever
NCCL_BLOCKING_WAIT = "TORCH_NCCL_BLOCKING_WAIT"
SHUTDOWN_TIMEOUT_ENV = "TORCH_PROCESS_GROUP_SHUTDOWN_TIMEOUT_S"  # Ray's name for the same knob
DEFAULT_SHUTDOWN_TIMEOUT_S = 30.0


def torch_backend_name(gpus_per_worker: float) -> str:
    """The collective backend for a worker group: NCCL between GPUs, gloo between CPUs."""
    return "nccl" if gpus_per_worker > 0 else "gloo"


@dataclass
class ProcessGroupConfig(BackendConfig):
    """Configuration of the workers' process group (Ray Train's ``backend_config``).

    Args:
        backend: ``gloo``, ``nccl``, or None to choose from the workers' GPUs.
        timeout_s: how long a collective may wait for the other ranks before it fails.
    """

    backend: str | None = None
    timeout_s: int = 1800

    @property
    def backend_cls(self) -> type[Backend]:
        return ProcessGroupBackend

    @property
    def train_func_context(self) -> type[WorkerDevice]:
        return WorkerDevice

    @property
    def framework(self):  # Ray Train's state records it (and asks rank 0 for torch's version)
        from ray.train.v2._internal.util import TrainingFramework

        return TrainingFramework.TORCH

    def to_dict(self) -> dict[str, object]:
        return {"backend": self.backend, "init_method": "env", "timeout_s": self.timeout_s}


class ProcessGroupBackend(Backend):
    """Starts the process group when the worker group starts, and ends it when it stops."""

    share_cuda_visible_devices = True  # NCCL needs every GPU of the node visible in each worker

    def on_start(self, worker_group, backend_config: ProcessGroupConfig) -> None:
        backend = backend_config.backend or torch_backend_name(
            worker_group.get_resources_per_worker().get("GPU", 0)
        )
        # Rank 0's node address and a free port there, for the ``env://`` rendezvous.
        address, port = worker_group.execute_single(0, get_address_and_port)
        size = len(worker_group)
        ray.get(
            [
                worker_group.execute_single_async(
                    rank,
                    _join_process_group,
                    backend=backend,
                    address=address,
                    port=port,
                    world_rank=rank,
                    world_size=size,
                    timeout_s=backend_config.timeout_s,
                )
                for rank in range(size)
            ]
        )

    def on_shutdown(self, worker_group, backend_config: ProcessGroupConfig) -> None:
        timeout_s = float(os.environ.get(SHUTDOWN_TIMEOUT_ENV, DEFAULT_SHUTDOWN_TIMEOUT_S))
        futures = worker_group.execute_async(_leave_process_group, destroy=len(worker_group) > 1)
        try:
            ray.get(futures, timeout=timeout_s)
        except ray.exceptions.GetTimeoutError:
            log.warning("the workers' process group did not shut down within %.0f s", timeout_s)


class WorkerDevice:
    """Around the train function in each worker: makes the worker's GPU (if it has one) torch's
    current device, so a bare ``.cuda()`` or NCCL call lands on the GPU Ray gave this worker."""

    def __enter__(self) -> None:
        import torch

        if torch.cuda.is_available():
            import ray.train.torch

            device = ray.train.torch.get_device()
            if device.type == "cuda":
                torch.cuda.set_device(device)

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> bool:
        return False


def _join_process_group(
    backend: str, address: str, port: int, world_rank: int, world_size: int, timeout_s: int
) -> None:
    """Runs on every worker: torch's rendezvous variables, then ``init_process_group``."""
    import torch.distributed as dist

    context = ray.train.get_context()
    os.environ.update(
        MASTER_ADDR=address,
        MASTER_PORT=str(port),
        RANK=str(world_rank),
        WORLD_SIZE=str(world_size),
        LOCAL_RANK=str(context.get_local_rank()),
        LOCAL_WORLD_SIZE=str(context.get_local_world_size()),
        NODE_RANK=str(context.get_node_rank()),
    )
    if backend == "nccl" and NCCL_ERROR_HANDLING not in os.environ and NCCL_BLOCKING_WAIT not in os.environ:
        os.environ[NCCL_ERROR_HANDLING] = "1"
    log.debug(
        "rank %d of %d joins the %s process group at %s:%d", world_rank, world_size, backend, address, port
    )
    dist.init_process_group(
        backend=backend,
        init_method="env://",
        rank=world_rank,
        world_size=world_size,
        timeout=timedelta(seconds=timeout_s),
    )


def _leave_process_group(destroy: bool) -> None:
    """Runs on every worker at the end: leave the group (if there is more than one rank) and give
    the GPU's cached memory back, so the next run on this GPU starts with all of it."""
    import torch
    import torch.distributed as dist

    if destroy and dist.is_initialized():
        dist.destroy_process_group()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
