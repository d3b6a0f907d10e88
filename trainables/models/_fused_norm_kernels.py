"""Triton kernels for the fused instance norm + LeakyReLU (imported lazily: triton is optional).

The functions below are plain Python until :func:`kernels` wraps them with ``triton.jit`` on
first use. On CPU tensors they run in triton's interpreter (numpy), which needs
``TRITON_INTERPRET=1`` in the environment before triton is first imported: tests run it in a
subprocess (``tests/trainables/models/fused_norm_cases.py``).

Layout: a ``(B, C, *S)`` tensor is viewed as ``(B, C, N)`` with ``N = prod(S)`` and element
``(b, c, s)`` at ``b * stride_b + c * stride_c + s * stride_s``: ``(C*N, N, 1)`` for contiguous
(NC[D]HW) tensors, ``(N*C, 1, C)`` for channels_last(_3d) (N[D]HWC). Every kernel works on one
``[BLOCK_S, BLOCK_C]`` tile (spatial positions x channels) of one batch element, so the same code
reads either layout without a transpose: in channels-last the channel axis of the tile is the
contiguous one, in NCDHW the spatial axis is.

Statistics are float32 and split over tiles (an instance of 128^3 voxels is 512 tiles of 4096):

1. ``_stats_partial``: per tile and channel, the tile's mean and sum of squared deviations (M2),
   computed around the tile mean from registers (no E[x^2] - E[x]^2 cancellation);
2. ``_stats_combine``: per (b, c), Chan's parallel combination of the tiles' (count, mean, M2)
   into the mean and ``rstd = 1 / sqrt(var + eps)`` (biased variance, as instance norm);
3. ``_norm_act_fwd``: ``y = (x - mean) * rstd * gamma + beta``, ``out = leaky_relu(y)``.

Backward recomputes ``x_hat`` and the sign of ``y`` from x and the saved mean/rstd:

4. ``_norm_act_bwd_partial``: per tile and channel, ``sum(g)`` and ``sum(g * x_hat)`` with
   ``g = dy * leaky'(y)`` (the gradient reaching the affine output); torch sums the tiles;
5. ``_norm_act_bwd_dx``: ``dx = rstd * gamma * (g - sum(g) / N - x_hat * sum(g * x_hat) / N)``.

Two-stage partial sums (no atomics) keep the result deterministic run to run.
"""

from __future__ import annotations

import functools
from typing import Any

import triton
import triton.language as tl


def _stats_partial(
    x_ptr,
    part_mean_ptr,
    part_m2_ptr,
    C,
    N,
    K,
    stride_b,
    stride_c,
    stride_s,
    BLOCK_S: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    pid_s = tl.program_id(0)
    pid_c = tl.program_id(1)
    pid_b = tl.program_id(2)
    s = pid_s * BLOCK_S + tl.arange(0, BLOCK_S)
    c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_c = c < C
    mask = (s < N)[:, None] & mask_c[None, :]
    base = x_ptr + pid_b.to(tl.int64) * stride_b
    x = tl.load(base + s[:, None] * stride_s + c[None, :] * stride_c, mask=mask, other=0.0)
    x = x.to(tl.float32)
    count = tl.minimum(N - pid_s * BLOCK_S, BLOCK_S).to(tl.float32)
    mean = tl.sum(x, axis=0) / count
    dev = tl.where(mask, x - mean[None, :], 0.0)
    m2 = tl.sum(dev * dev, axis=0)
    out = (pid_b * C + c).to(tl.int64) * K + pid_s
    tl.store(part_mean_ptr + out, mean, mask=mask_c)
    tl.store(part_m2_ptr + out, m2, mask=mask_c)


def _stats_combine(
    part_mean_ptr,
    part_m2_ptr,
    mean_ptr,
    rstd_ptr,
    N,
    K,
    eps,
    TILE_S: tl.constexpr,
    BLOCK_K: tl.constexpr,
    K_BLOCKS: tl.constexpr,
):
    # The loops count K_BLOCKS = cdiv(K, BLOCK_K) (a constexpr; 16 at most for BraTS patches)
    # rather than ``range(0, K, BLOCK_K)``: triton <= 3.6's interpreter cannot bound a loop by a
    # runtime argument under numpy 2 (``int()`` of a 1-element array). A plain ``range``, not
    # ``tl.static_range``: unrolled, the 16-step loop took 255 registers (compile_fused_norm.py).
    row = tl.program_id(0)
    base = row.to(tl.int64) * K
    total = tl.zeros([BLOCK_K], dtype=tl.float32)
    for kb in range(K_BLOCKS):
        k = kb * BLOCK_K + tl.arange(0, BLOCK_K)
        mask = k < K
        count = tl.minimum(N - k * TILE_S, TILE_S).to(tl.float32)
        m = tl.load(part_mean_ptr + base + k, mask=mask, other=0.0)
        total += tl.where(mask, count * m, 0.0)
    mean = tl.sum(total, axis=0) / N
    m2 = tl.zeros([BLOCK_K], dtype=tl.float32)
    for kb in range(K_BLOCKS):
        k = kb * BLOCK_K + tl.arange(0, BLOCK_K)
        mask = k < K
        count = tl.minimum(N - k * TILE_S, TILE_S).to(tl.float32)
        m = tl.load(part_mean_ptr + base + k, mask=mask, other=0.0)
        q = tl.load(part_m2_ptr + base + k, mask=mask, other=0.0)
        d = m - mean
        m2 += tl.where(mask, q + count * d * d, 0.0)
    var = tl.sum(m2, axis=0) / N
    tl.store(mean_ptr + row, mean)
    tl.store(rstd_ptr + row, 1.0 / tl.sqrt(var + eps))


def _norm_act_fwd(
    x_ptr,
    out_ptr,
    mean_ptr,
    rstd_ptr,
    w_ptr,
    b_ptr,
    C,
    N,
    stride_b,
    stride_c,
    stride_s,
    slope,
    BLOCK_S: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    pid_s = tl.program_id(0)
    pid_c = tl.program_id(1)
    pid_b = tl.program_id(2)
    s = pid_s * BLOCK_S + tl.arange(0, BLOCK_S)
    c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_c = c < C
    mask = (s < N)[:, None] & mask_c[None, :]
    offs = pid_b.to(tl.int64) * stride_b + s[:, None] * stride_s + c[None, :] * stride_c
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    mean = tl.load(mean_ptr + pid_b * C + c, mask=mask_c, other=0.0)
    rstd = tl.load(rstd_ptr + pid_b * C + c, mask=mask_c, other=0.0)
    w = tl.load(w_ptr + c, mask=mask_c, other=0.0).to(tl.float32)
    b = tl.load(b_ptr + c, mask=mask_c, other=0.0).to(tl.float32)
    y = (x - mean[None, :]) * (rstd * w)[None, :] + b[None, :]
    y = tl.where(y > 0, y, y * slope)
    tl.store(out_ptr + offs, y.to(out_ptr.dtype.element_ty), mask=mask)


def _norm_act_bwd_partial(
    x_ptr,
    dy_ptr,
    mean_ptr,
    rstd_ptr,
    w_ptr,
    b_ptr,
    part_g_ptr,
    part_gx_ptr,
    C,
    N,
    K,
    stride_b,
    stride_c,
    stride_s,
    dy_stride_b,
    dy_stride_c,
    dy_stride_s,
    slope,
    BLOCK_S: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    pid_s = tl.program_id(0)
    pid_c = tl.program_id(1)
    pid_b = tl.program_id(2)
    s = pid_s * BLOCK_S + tl.arange(0, BLOCK_S)
    c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_c = c < C
    mask = (s < N)[:, None] & mask_c[None, :]
    b64 = pid_b.to(tl.int64)
    x_offs = b64 * stride_b + s[:, None] * stride_s + c[None, :] * stride_c
    dy_offs = b64 * dy_stride_b + s[:, None] * dy_stride_s + c[None, :] * dy_stride_c
    x = tl.load(x_ptr + x_offs, mask=mask, other=0.0).to(tl.float32)
    dy = tl.load(dy_ptr + dy_offs, mask=mask, other=0.0).to(tl.float32)
    mean = tl.load(mean_ptr + pid_b * C + c, mask=mask_c, other=0.0)
    rstd = tl.load(rstd_ptr + pid_b * C + c, mask=mask_c, other=0.0)
    w = tl.load(w_ptr + c, mask=mask_c, other=0.0).to(tl.float32)
    b = tl.load(b_ptr + c, mask=mask_c, other=0.0).to(tl.float32)
    x_hat = (x - mean[None, :]) * rstd[None, :]
    y = x_hat * w[None, :] + b[None, :]
    g = tl.where(y > 0, dy, dy * slope)  # masked lanes: dy = 0, so g = 0
    out = (pid_b * C + c).to(tl.int64) * K + pid_s
    tl.store(part_g_ptr + out, tl.sum(g, axis=0), mask=mask_c)
    tl.store(part_gx_ptr + out, tl.sum(g * x_hat, axis=0), mask=mask_c)


def _norm_act_bwd_dx(
    x_ptr,
    dy_ptr,
    dx_ptr,
    mean_ptr,
    rstd_ptr,
    w_ptr,
    b_ptr,
    sum_g_ptr,
    sum_gx_ptr,
    C,
    N,
    stride_b,
    stride_c,
    stride_s,
    dy_stride_b,
    dy_stride_c,
    dy_stride_s,
    slope,
    BLOCK_S: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    pid_s = tl.program_id(0)
    pid_c = tl.program_id(1)
    pid_b = tl.program_id(2)
    s = pid_s * BLOCK_S + tl.arange(0, BLOCK_S)
    c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_c = c < C
    mask = (s < N)[:, None] & mask_c[None, :]
    b64 = pid_b.to(tl.int64)
    x_offs = b64 * stride_b + s[:, None] * stride_s + c[None, :] * stride_c
    dy_offs = b64 * dy_stride_b + s[:, None] * dy_stride_s + c[None, :] * dy_stride_c
    x = tl.load(x_ptr + x_offs, mask=mask, other=0.0).to(tl.float32)
    dy = tl.load(dy_ptr + dy_offs, mask=mask, other=0.0).to(tl.float32)
    row = pid_b * C + c
    mean = tl.load(mean_ptr + row, mask=mask_c, other=0.0)
    rstd = tl.load(rstd_ptr + row, mask=mask_c, other=0.0)
    w = tl.load(w_ptr + c, mask=mask_c, other=0.0).to(tl.float32)
    b = tl.load(b_ptr + c, mask=mask_c, other=0.0).to(tl.float32)
    mean_g = tl.load(sum_g_ptr + row, mask=mask_c, other=0.0) / N
    mean_gx = tl.load(sum_gx_ptr + row, mask=mask_c, other=0.0) / N
    x_hat = (x - mean[None, :]) * rstd[None, :]
    y = x_hat * w[None, :] + b[None, :]
    g = tl.where(y > 0, dy, dy * slope)
    dx = (rstd * w)[None, :] * (g - mean_g[None, :] - x_hat * mean_gx[None, :])
    tl.store(dx_ptr + x_offs, dx.to(dx_ptr.dtype.element_ty), mask=mask)


_FUNCTIONS = {
    "stats_partial": _stats_partial,
    "stats_combine": _stats_combine,
    "fwd": _norm_act_fwd,
    "bwd_partial": _norm_act_bwd_partial,
    "bwd_dx": _norm_act_bwd_dx,
}


def interpreter_active() -> bool:
    """Whether triton was imported with ``TRITON_INTERPRET=1`` (its CPU interpreter).

    The interpreter has to be chosen before triton is imported: its own ``@triton.jit`` library
    functions (``tl.sum``, ...) are wrapped at import time.
    """
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(tl.sum, InterpretedFunction)


@functools.cache
def kernels() -> dict[str, Any]:
    """The kernels, wrapped by ``triton.jit`` (interpreted ones when the interpreter is active)."""
    return {name: triton.jit(fn) for name, fn in _FUNCTIONS.items()}
