"""Where a DDP step's time goes, without Ray: why two workers scale as they do.

Two gloo processes (one torch thread each) take turns step by step between four modes: one
process alone at the global batch and at half of it (the other waits at a barrier, asleep),
then both with DDP at half the batch each, with gradient sync and under ``no_sync()``. Data,
forward, backward (with the exposed allreduce) and optimizer are timed apart. The factors
multiply to the DDP speed-up: batch effect (half vs global batch) x machine ceiling (two
free-running processes vs twice one: what this machine gives a second process now) x sync
cost (DDP vs free-running) x 2.

Each process builds its model, loaders and optimizer with raylung's ``build_run``, as a Ray
Train worker does; only the step is spelled out here, to time its parts.
"""

from __future__ import annotations

import contextlib
import json
import socket
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SOLO_FULL, SOLO_HALF, DDP_SYNC, DDP_NO_SYNC = (
    "1 process, global batch",
    "1 process, half batch",
    "ddp sync",
    "ddp no_sync",
)
SPLIT_MODES = (SOLO_FULL, SOLO_HALF, DDP_SYNC, DDP_NO_SYNC)
PHASES = ("data", "forward", "backward", "optimizer", "step")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _forever(loader) -> Iterator:
    for epoch in range(10**6):
        loader.sampler.set_epoch(epoch)
        yield from loader


def _split_worker(rank: int, world: int, cfg_json: str, steps: int, warmup: int, port: int, out: str) -> None:
    """Time each phase of training steps in one of two gloo processes (see the module's doc).

    Every step starts at a barrier, so a synced step's extra backward time is the exposed
    allreduce plus waiting for the slower rank."""
    import torch
    import torch.distributed as dist

    from raylung.config import RaylungConfig
    from raylung.train.host_memory import keep_freed_memory
    from raylung.train.parts import build_loader, build_run

    keep_freed_memory()  # as every Ray Train worker does (raylung.train.loop)
    cfg = RaylungConfig.model_validate_json(cfg_json)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    cpu = torch.device("cpu")
    solo = build_run(cfg, cpu)  # the whole global batch in one process
    ddp = build_run(cfg, cpu, rank, world, prepare_model=torch.nn.parallel.DistributedDataParallel)
    half = cfg.train.batch_size // world
    params = sum(p.numel() for p in solo.model.parameters())
    shared = _forever(ddp.train_loader)
    setups = {
        SOLO_FULL: (solo, _forever(solo.train_loader)),
        SOLO_HALF: (solo, _forever(build_loader(solo.train_set, half, True, cfg, False))),
        DDP_SYNC: (ddp, shared),
        DDP_NO_SYNC: (ddp, shared),
    }
    rows = []
    for i in range((warmup + steps) * len(SPLIT_MODES)):
        mode = SPLIT_MODES[i % len(SPLIT_MODES)]
        dist.barrier()
        if mode in (SOLO_FULL, SOLO_HALF) and rank != 0:
            continue
        parts, source = setups[mode]
        t0 = time.perf_counter()
        images, labels, _ = next(source)
        t1 = time.perf_counter()
        with ddp.model.no_sync() if mode == DDP_NO_SYNC else contextlib.nullcontext():
            loss = parts.loss_fn(parts.model(images).reshape(-1), labels)
            t2 = time.perf_counter()
            parts.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            t3 = time.perf_counter()
        parts.optimizer.step()
        loss.item()
        t4 = time.perf_counter()
        if i >= warmup * len(SPLIT_MODES):
            rows.append(
                {
                    "mode": mode,
                    "rank": rank,
                    "images": int(images.shape[0]),
                    "data": t1 - t0,
                    "forward": t2 - t1,
                    "backward": t3 - t2,
                    "optimizer": t4 - t3,
                    "step": t4 - t0,
                }
            )
    flat, allreduce = torch.zeros(params), []  # one allreduce of all gradients, as DDP's buckets add up to
    for _ in range(12):
        dist.barrier()
        t0 = time.perf_counter()
        dist.all_reduce(flat)
        allreduce.append(time.perf_counter() - t0)
    dist.destroy_process_group()
    Path(out, f"rank{rank}.json").write_text(
        json.dumps({"rows": rows, "allreduce_s": allreduce[2:], "params": params})
    )


def split_processes(cfg, steps: int, warmup: int) -> dict[int, dict[str, Any]]:
    """Run the two processes; each one's rows, allreduce times and parameter count."""
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as out:
        mp.spawn(
            _split_worker,
            args=(2, cfg.model_dump_json(), steps, warmup, free_port(), out),
            nprocs=2,
            join=True,
        )
        return {rank: json.loads(Path(out, f"rank{rank}.json").read_text()) for rank in range(2)}


def summarize_split(ranks: dict[int, dict], global_batch: int) -> dict[str, Any]:
    """Median phase times per mode and rank, images/s, and the factors of the DDP speed-up:
    batch effect x machine ceiling x sync cost x 2."""
    modes: dict[str, dict[str, float]] = {}
    for rank, data in sorted(ranks.items()):
        for mode in SPLIT_MODES:
            rows = [r for r in data["rows"] if r["mode"] == mode]
            if rows:
                key = mode if mode in (SOLO_FULL, SOLO_HALF) else f"{mode} (rank {rank})"
                modes[key] = {p: statistics.median(r[p] for r in rows) for p in PHASES}
                modes[key]["images_per_s"] = rows[0]["images"] / modes[key]["step"]
    full, half = modes[SOLO_FULL]["images_per_s"], modes[SOLO_HALF]["images_per_s"]
    sync_step = max(modes[f"{DDP_SYNC} (rank {r})"]["step"] for r in ranks)
    ddp = global_batch / sync_step
    ceiling = sum(modes[f"{DDP_NO_SYNC} (rank {r})"]["images_per_s"] for r in ranks)
    exposed = statistics.mean(
        modes[f"{DDP_SYNC} (rank {r})"]["backward"] - modes[f"{DDP_NO_SYNC} (rank {r})"]["backward"]
        for r in ranks
    )
    first = ranks[min(ranks)]
    return {
        "modes": modes,
        "params": first["params"],
        "allreduce_flat_s": statistics.median(first["allreduce_s"]) if first["allreduce_s"] else None,
        "exposed_allreduce_s": exposed,
        "exposed_allreduce_fraction": exposed / sync_step,
        "speedup_ddp": ddp / full,
        "batch_effect": half / full,  # images/s at the per-worker batch vs the global batch
        "machine_ceiling": ceiling / (2 * half),  # two free-running processes vs twice one
        "sync_cost": ddp / ceiling,  # what gradient sync and lock-step leave of the ceiling
    }


def report_split(split: dict[str, Any]) -> None:
    from harness import print_table

    rows = [[mode, *(v[p] * 1e3 for p in PHASES), v["images_per_s"]] for mode, v in split["modes"].items()]
    print_table(
        "(b) step split without Ray (median ms per step, 1 thread per process)",
        ["mode", *PHASES, "images/s"],
        rows,
    )
    flat = split["allreduce_flat_s"]
    print_table(
        "(b) what the step split predicts",
        ["measure", "value"],
        [
            ["gradient size (MB)", split["params"] * 4 / 1e6],
            ["one allreduce of all gradients (ms)", flat * 1e3 if flat else "n/a"],
            ["exposed allreduce + wait per synced step (ms)", split["exposed_allreduce_s"] * 1e3],
            ["  as a fraction of the step", split["exposed_allreduce_fraction"]],
            ["batch effect (half batch / global batch, images/s)", split["batch_effect"]],
            ["machine ceiling (2 free processes / 2x one)", split["machine_ceiling"]],
            ["sync cost (DDP / free processes)", split["sync_cost"]],
            ["speedup DDP 2 procs vs 1 (product of the above x2)", split["speedup_ddp"]],
        ],
    )
