"""Eager-training kernels of ResNet-ours: FReLU's maximum and ECA + spatial attention.

The model is memory-bound on CPU: its depthwise convolutions, FReLUs and attention are cheap
arithmetic on full-size activations, and every new full-size tensor costs a fresh allocation
(for the largest maps, page faults from the OS). These autograd functions compute exactly the
same forward values as the plain modules, and the same gradients up to floating-point
summation order, while allocating fewer full-size tensors. They are used only in eager mode
with autograd on (not for double backward), under autocast too (bf16 or fp16, as the modules
would run: see :func:`channel_spatial_attention`); tests compare them against the plain
modules. :func:`eager_kernels` switches them off to measure or check against plain autograd.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

__all__ = ["channel_spatial_attention", "eager_kernels", "funnel_maximum"]


_EAGER_KERNELS = True


@contextlib.contextmanager
def eager_kernels(enabled: bool) -> Iterator[None]:
    """Switch the eager-training kernels on or off (to compare against plain autograd)."""
    global _EAGER_KERNELS
    previous, _EAGER_KERNELS = _EAGER_KERNELS, enabled
    try:
        yield
    finally:
        _EAGER_KERNELS = previous


def _use_eager_kernels(x: torch.Tensor) -> bool:
    return (
        _EAGER_KERNELS
        and torch.is_grad_enabled()
        and not torch.jit.is_tracing()
        and not torch.compiler.is_compiling()
        and not torch.compiler.is_exporting()
        and x.device.type in ("cpu", "cuda")
    )


def _one_compute_dtype(x: torch.Tensor, *weights: torch.Tensor) -> bool:
    """Whether the modules' convolutions would compute `x` in its own dtype, as the fused
    function does (else they would mix dtypes and it steps aside): under autocast, `x` must
    already have the autocast dtype (as after a convolution); without, the weights' dtype."""
    device = x.device.type
    if torch.is_autocast_enabled(device):
        return x.dtype == torch.get_autocast_dtype(device)
    return all(w.dtype == x.dtype for w in weights)


def funnel_maximum(x: torch.Tensor, funnel: torch.Tensor) -> torch.Tensor:
    """``torch.maximum(x, funnel)``: FReLU's last step; `funnel` may be overwritten with it.

    In eager training it runs as :class:`_FunnelMax` (writes the maximum into `funnel`, which
    no one else holds, and has a cheaper backward); elsewhere it is the plain op.
    """
    if _use_eager_kernels(x) and x.dtype == funnel.dtype and x.shape == funnel.shape:
        return _FunnelMax.apply(x, funnel)
    return torch.maximum(x, funnel)


class _FunnelMax(torch.autograd.Function):
    """``torch.maximum(x, funnel)`` written into `funnel`, with a three-pass backward.

    Autograd's generic backward of ``maximum`` takes ten passes over the tensor to split the
    gradient in half at exact ties. This one routes it by the 0/1 mask ``x >= max(x, funnel)``
    (true exactly where ``x >= funnel``), rebuilt in the backward from tensors that are saved
    anyway (`x` by the depthwise convolution, the output by the next layer), so the forward
    stores nothing new. At exact ties (a measure-zero set of inputs) the whole gradient goes to
    `x`, TensorFlow's convention for ``tf.maximum`` (the paper's framework). The mask is a float
    tensor: boolean ``where``/``masked_fill`` run about five times slower on the CPU. `funnel`
    is the output of FReLU's batch norm, which saves its input, not its output, so overwriting
    it is safe.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, funnel: torch.Tensor) -> torch.Tensor:
        out = torch.maximum(x, funnel, out=funnel)
        ctx.mark_dirty(funnel)
        ctx.save_for_backward(x, out)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, out = ctx.saved_tensors
        grad_x = torch.ge(x, out, out=torch.empty_like(grad)).mul_(grad)
        return grad_x, grad - grad_x


def _pixel_rows(t: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, H*W, C) view, one row per pixel, for either memory format."""
    return t.flatten(2).transpose(1, 2)


def _batched_mv(mat: torch.Tensor, vec: torch.Tensor) -> torch.Tensor:
    """``mat[i] @ vec[i]`` for each i: (B, M, N) x (B, N) -> (B, M).

    On the CPU a loop of ``torch.mv`` (BLAS gemv, either operand order) is several times
    faster than ``torch.bmm`` with a one-column right operand, which BLAS treats as a GEMM; on
    a GPU one batched kernel beats a launch per sample.
    """
    if mat.device.type != "cpu":
        return torch.bmm(mat, vec.unsqueeze(-1)).squeeze(-1)
    out = vec.new_empty(mat.shape[0], mat.shape[1])
    for i in range(mat.shape[0]):
        torch.mv(mat[i], vec[i], out=out[i])
    return out


class _ChannelSpatialAttention(torch.autograd.Function):
    """ECA then spatial attention: ``out = x1 * s`` with ``x1 = x * a``, as one function.

    ``a = sigmoid(conv1d(mean_hw(x)))`` (B, C) and ``s = sigmoid(w . x1 + b)`` (B, 1, H, W).
    The forward is the modules' own arithmetic, writing ``x1`` and then ``out`` into one new
    tensor. The backward allocates one full-size tensor (instead of about seven): the
    reductions over pixels and channels are batched matrix-vector products on the saved input,
    and the gradient of `x` is built in place::

        P = g * x;  ds = P a (over C);  dlogit = ds * s * (1 - s)
        da = P^T s + w * (x^T dlogit) (over pixels);  dw = sum_b a * (x^T dlogit);  db = sum dlogit
        dx = (g * s + dlogit w^T) * a + dmean / (H W)

    Under autocast the forward's module calls cast as the modules would, and `x` already has
    the autocast dtype. The backward runs with autocast off, wherever ``backward()`` is called:
    its full-size tensors in `x`'s dtype, its small per-sample vectors (and ECA's small graph)
    in float32 at least; each gradient comes back in its input's own dtype.
    """

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        eca_weight: torch.Tensor,
        sa_weight: torch.Tensor,
        sa_bias: torch.Tensor | None,
        channel: nn.Module,
        spatial: nn.Module,
    ) -> torch.Tensor:
        b, c = x.shape[:2]
        mean = x.mean((2, 3))
        a = channel.gate(channel.conv(mean.view(b, 1, c))).view(b, c)
        out = x * a.view(b, c, 1, 1)
        s = spatial.gate(spatial.conv(out))
        out.mul_(s)
        ctx.eca_padding = channel.conv.padding
        ctx.bias_dtype = sa_bias.dtype if sa_bias is not None else None
        ctx.save_for_backward(x, mean, a, s, eca_weight, sa_weight)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x = ctx.saved_tensors[0]
        with torch.autocast(x.device.type, enabled=False):
            return _ChannelSpatialAttention._backward(ctx, grad.to(x.dtype))

    @staticmethod
    def _backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, mean, a, s, eca_weight, sa_weight = ctx.saved_tensors
        b, c, h, w = x.shape
        s_flat = s.reshape(b, h * w)
        # Full-size tensors stay in x's dtype; the (B, C) and (B, HW) ones, cheap, are at least
        # float32 (bf16/fp16 sums would lose what autograd's own reductions keep).
        acc = torch.promote_types(x.dtype, torch.float32)

        buf = grad * x  # P; the buffer later becomes dx
        rows = _pixel_rows(buf)
        grad_logit = torch.ops.aten.sigmoid_backward(_batched_mv(rows, a).to(acc), s_flat.to(acc))  # (B, HW)
        p_t_s = _batched_mv(rows.transpose(1, 2), s_flat).to(acc)  # (B, C)
        x_t_dlogit = _batched_mv(_pixel_rows(x).transpose(1, 2), grad_logit.to(x.dtype)).to(acc)  # (B, C)
        w_row = sa_weight.to(acc).view(1, c)
        grad_sa_weight = (x_t_dlogit * a.to(acc)).sum(0).view_as(sa_weight).to(sa_weight.dtype)
        grad_sa_bias = grad_logit.sum().view(1).to(ctx.bias_dtype) if ctx.bias_dtype else None
        grad_a = p_t_s + w_row * x_t_dlogit

        # ECA's small graph (mean -> conv1d -> sigmoid), differentiated by autograd.
        with torch.enable_grad():
            mean_ = mean.detach().requires_grad_()
            weight_ = eca_weight.detach().requires_grad_()
            eca_in, eca_w = mean_.view(b, 1, c).to(acc), weight_.to(acc)
            a_ = torch.sigmoid(F.conv1d(eca_in, eca_w, padding=ctx.eca_padding)).view(b, c)
            grad_mean, grad_eca_weight = torch.autograd.grad(a_, (mean_, weight_), grad_a)

        torch.mul(grad, s, out=buf)  # dL/dx1, direct part
        grad_logit_map = grad_logit.to(x.dtype).view(b, 1, h, w)
        buf.addcmul_(grad_logit_map, w_row.to(x.dtype).view(1, c, 1, 1))  # + through the logit
        dmean = (grad_mean / (h * w)).to(x.dtype).view(b, c, 1, 1)
        torch.addcmul(dmean, buf, a.view(b, c, 1, 1), out=buf)
        return buf, grad_eca_weight.to(eca_weight.dtype), grad_sa_weight, grad_sa_bias, None, None


def channel_spatial_attention(x: torch.Tensor, channel: nn.Module, spatial: nn.Module) -> torch.Tensor:
    """``spatial(channel(x))``: ECA, then spatial attention, as after each bottleneck.

    In eager training this runs as one autograd function (:class:`_ChannelSpatialAttention`)
    with the same forward arithmetic and fewer full-size temporaries, also under autocast when
    `x` has the autocast dtype (as a convolution's output does); elsewhere (inference, tracing,
    ``torch.compile``, ``torch.export``, mixed dtypes) it calls the modules. Python only:
    scripted models call the modules directly.
    Either way ``spatial.gate`` is called, so forward hooks on it see the attention map.
    """
    if _use_eager_kernels(x) and _one_compute_dtype(x, spatial.conv.weight, channel.conv.weight):
        return _ChannelSpatialAttention.apply(
            x, channel.conv.weight, spatial.conv.weight, spatial.conv.bias, channel, spatial
        )
    return spatial(channel(x))
