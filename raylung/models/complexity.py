"""Model size and cost: parameter counts and GFLOPs at the paper's input (3x240x320).

FLOPs are counted by :class:`torch.utils.flop_counter.FlopCounterMode`, which counts a
multiply-add as two FLOPs (GFLOPs = 2 x GMACs) and only counts matrix products and
convolutions (depthwise included); element-wise work (BN, FReLU's max, the attention scaling)
is not counted.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["PAPER_INPUT_SHAPE", "count_parameters", "gflops"]

PAPER_INPUT_SHAPE = (1, 3, 240, 320)  # one RGB image of 320x240 (W x H), Table 2


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (BN running statistics are buffers, not counted)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def gflops(model: nn.Module, input_shape: Sequence[int] = PAPER_INPUT_SHAPE) -> float:
    """GFLOPs (2 x multiply-adds) of one eval-mode forward pass at `input_shape`.

    Works on a model on the ``meta`` device too, which costs no compute and no memory.
    """
    param = next(model.parameters())
    x = torch.zeros(tuple(input_shape), device=param.device, dtype=param.dtype)
    # Imported here: it brings Triton's runtime (0.25 CPU-s), which every process that only
    # builds a model (a Tune trial, a Train worker) would pay at start-up.
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    return counter.get_total_flops() / 1e9
