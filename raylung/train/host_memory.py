"""Keep freed memory in the process: glibc malloc settings for CPU training and inference.

Why: glibc gives a freed block back to the kernel when it is large (a block of 32 MB or more
always, smaller ones once its adaptive threshold says so) and trims the top of its heap when
much is free there. A CPU training step frees and reallocates the same activations every
step, dozens of them 10-80 MB at the paper's input, so the kernel zero-fills and faults them
in again, 4 KB at a time: about 600,000 page faults per ResNet-ours(50) step at batch 8,
3x240x320. With glibc's mmap and trim thresholds at 1 GiB, freed blocks stay in the heap and
the next step reuses them: page faults per step fall to a handful, and on two cores the step
runs 1.4-1.8x faster for ResNet-ours(50) and ResNet-50 at the paper's input, 1.1-1.2x at
96x128 (``benchmarks/host_memory.py``, docs/performance.md).

The cost: a process keeps its peak heap instead of returning it to the kernel, so its resident
memory stays at its peak (ResNet-ours(50) at the paper's input: about 540 MB, 14 %, more).
Blocks of 1 GiB or more are still returned. raylung applies it where it owns the process:
every Ray Train worker before it builds its model (:func:`raylung.train.loop.train_loop_per_worker`)
and the ``raylung`` command (its in-process inference). ``RAYLUNG_KEEP_FREED_MEMORY=0`` turns it
off; elsewhere than glibc (macOS, musl) it does nothing.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform

__all__ = ["KEEP_FREED_MEMORY_ENV", "THRESHOLD_BYTES", "keep_freed_memory"]

log = logging.getLogger(__name__)

KEEP_FREED_MEMORY_ENV = "RAYLUNG_KEEP_FREED_MEMORY"
THRESHOLD_BYTES = 1 << 30  # mallopt takes an int: at most 2 GiB - 1
_M_TRIM_THRESHOLD = -1  # <malloc.h>
_M_MMAP_THRESHOLD = -3


def keep_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds to :data:`THRESHOLD_BYTES` for this process.

    True when set; False when turned off (:data:`KEEP_FREED_MEMORY_ENV` = ``0``) or not glibc.
    Takes effect for allocations from now on, so call it before the large ones.
    """
    if os.environ.get(KEEP_FREED_MEMORY_ENV, "1") == "0":
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    done = all(mallopt(option, THRESHOLD_BYTES) == 1 for option in (_M_MMAP_THRESHOLD, _M_TRIM_THRESHOLD))
    if not done:
        log.debug("glibc refused mallopt: freed memory goes back to the kernel as before")
    return done
