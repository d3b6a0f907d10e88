"""Instance norm fused with LeakyReLU: one Triton kernel pair instead of norm -> act (issue 13).

nnU-Net's conv -> instance norm -> LeakyReLU spends much of its step outside the convolutions:
cuDNN's instance norm, NCDHW <-> NDHWC transposes around it, and the separate elementwise
activation. :func:`fused_instance_norm_act` computes

    ``out = leaky_relu((x - mean) / sqrt(var + eps) * weight + bias, negative_slope)``

per ``(b, c)`` instance of a ``(B, C, *S)`` tensor (2-D or 3-D ``S``), with float32 statistics
for float32/float16/bfloat16 input, reading and writing either contiguous (NC[D]HW) or
channels_last(_3d) tensors in place (no transposes), forward and backward. The kernels are in
``_fused_norm_kernels`` (their docstring describes the tiling). Semantics are those of
``F.instance_norm`` (affine, no running statistics, biased variance) then ``F.leaky_relu``:
:func:`reference_instance_norm_act` is that pair, and the tests compare the two.

:class:`FusedInstanceNormAct` is the drop-in ``nn.Module`` for an ``nn.InstanceNormNd(affine=True)``
+ ``nn.LeakyReLU`` pair: same parameters (``weight``, ``bias``), so state dicts load either way.
It runs the Triton kernels on CUDA tensors and the reference elsewhere, so a model built with the
switch on still trains on a CPU. Triton is optional (``pip install triton``; CUDA builds of torch
ship it); CPU tests run the kernels through triton's interpreter (``backend="triton"``).
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Backend = Literal["auto", "triton", "torch"]

EPS = 1e-5  # nn.InstanceNormNd's default, nnU-Net's setting
TILE = 4096  # elements (spatial x channel) per program; a 128^3 instance is 512 tiles
MAX_BLOCK_C = 64  # channels per tile in channels-last (the contiguous axis there)
MAX_BLOCK_K = 1024  # tile partials combined per loop step


def reference_instance_norm_act(
    x: Tensor, weight: Tensor, bias: Tensor, negative_slope: float = 0.01, eps: float = EPS
) -> Tensor:
    """The unfused pair, ``F.instance_norm`` (affine, no running stats) then ``F.leaky_relu``."""
    return F.leaky_relu(F.instance_norm(x, weight=weight, bias=bias, eps=eps), negative_slope)


@functools.cache
def triton_available() -> bool:
    """Whether triton can be imported (it ships with CUDA builds of torch on Linux)."""
    if importlib.util.find_spec("triton") is None:
        return False
    try:
        import triton  # noqa: F401
    except Exception:  # a broken install counts as absent: the reference path still works
        return False
    return True


# ------------------------------------------------------------------------------ layout
def _memory_format(t: Tensor) -> torch.memory_format | None:
    """``contiguous_format`` or ``channels_last(_3d)`` when ``t`` is dense in it, else None."""
    if t.is_contiguous():
        return torch.contiguous_format
    cl = torch.channels_last if t.dim() == 4 else torch.channels_last_3d
    if t.dim() in (4, 5) and t.is_contiguous(memory_format=cl):
        return cl
    return None


def _strides(t: Tensor, fmt: torch.memory_format) -> tuple[int, int, int]:
    """``(stride_b, stride_c, stride_s)`` of ``t`` viewed as ``(B, C, N)`` in ``fmt``.

    Derived from the format, not ``t.stride()``: a size-1 dimension may carry any stride.
    """
    c, n = t.shape[1], t[0, 0].numel()
    if fmt == torch.contiguous_format:
        return c * n, n, 1
    return n * c, 1, c


def _blocks(c: int, n: int, channels_last: bool, tile: int) -> tuple[int, int]:
    """``(BLOCK_S, BLOCK_C)``, powers of two with ``BLOCK_S * BLOCK_C <= tile``.

    Channels-last puts up to ``MAX_BLOCK_C`` channels in a tile (their axis is contiguous);
    NCDHW puts one channel in a tile unless the instances are small (deep stages: 4^3 voxels x
    320 channels), where several channels share one.
    """
    pc, pn = _next_pow2(c), _next_pow2(n)
    block_c = min(pc, MAX_BLOCK_C, tile) if channels_last else min(pc, max(1, tile // pn))
    block_s = max(1, min(pn, tile // block_c))
    return block_s, block_c


def _next_pow2(v: int) -> int:
    return 1 << max(0, (v - 1).bit_length())


def _num_warps(block_s: int, block_c: int) -> int:
    return 8 if block_s * block_c >= 4096 else 4


@dataclass(frozen=True)
class LaunchPlan:
    """How the kernels tile one ``(B, C, N)`` tensor: the same plan for forward and backward.

    ``grid`` is ``(tiles, channel blocks, B)`` for the tile kernels; the combine kernel runs one
    program per ``(b, c)`` and folds the ``n_tiles`` partials ``block_k`` at a time, in
    ``k_blocks`` loop steps (a compile-time count: 1 unless an instance has more than
    ``MAX_BLOCK_K`` tiles; 16 for channels-last 32 x 128^3, whose tiles hold 128 voxels).
    """

    block_s: int
    block_c: int
    num_warps: int
    n_tiles: int
    grid: tuple[int, int, int]
    block_k: int
    k_blocks: int


def launch_plan(b: int, c: int, n: int, channels_last: bool, tile: int = TILE) -> LaunchPlan:
    """The tiling of a ``(b, c, n)`` view (``n`` voxels per instance) in either layout."""
    block_s, block_c = _blocks(c, n, channels_last, tile)
    n_tiles = -(-n // block_s)
    block_k = min(_next_pow2(n_tiles), MAX_BLOCK_K)
    return LaunchPlan(
        block_s=block_s,
        block_c=block_c,
        num_warps=_num_warps(block_s, block_c),
        n_tiles=n_tiles,
        grid=(n_tiles, -(-c // block_c), b),
        block_k=block_k,
        k_blocks=-(-n_tiles // block_k),
    )


def _dense(t: Tensor, like: torch.memory_format) -> tuple[Tensor, torch.memory_format]:
    fmt = _memory_format(t)
    if fmt is None:  # neither layout: one copy into the format of ``like``
        t, fmt = t.contiguous(memory_format=like), like
    return t, fmt


# ------------------------------------------------------------------------------ autograd
class _FusedInstanceNormAct(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        x: Tensor,
        weight: Tensor,
        bias: Tensor,
        negative_slope: float,
        eps: float,
        interpret: bool,
        tile: int,
    ) -> Tensor:
        from trainables.models._fused_norm_kernels import interpreter_active, kernels

        if interpret and not interpreter_active():
            raise RuntimeError(
                "Triton kernels on CPU tensors need triton's interpreter: set TRITON_INTERPRET=1 "
                "in the environment before triton is first imported"
            )
        k = kernels()
        x, fmt = _dense(x, torch.contiguous_format)
        b, c = x.shape[:2]
        n = x[0, 0].numel()
        p = launch_plan(b, c, n, fmt != torch.contiguous_format, tile)
        tiles = {"BLOCK_S": p.block_s, "BLOCK_C": p.block_c, "num_warps": p.num_warps}
        sb, sc, ss = _strides(x, fmt)
        f32 = {"dtype": torch.float32, "device": x.device}
        part_mean = torch.empty(b * c, p.n_tiles, **f32)
        part_m2 = torch.empty(b * c, p.n_tiles, **f32)
        k["stats_partial"][p.grid](x, part_mean, part_m2, c, n, p.n_tiles, sb, sc, ss, **tiles)
        mean = torch.empty(b * c, **f32)
        rstd = torch.empty(b * c, **f32)
        k["stats_combine"][(b * c,)](
            part_mean, part_m2, mean, rstd, n, p.n_tiles, eps,
            TILE_S=p.block_s, BLOCK_K=p.block_k, K_BLOCKS=p.k_blocks, num_warps=4,
        )  # fmt: skip
        out = torch.empty_like(x, memory_format=fmt)
        k["fwd"][p.grid](
            x, out, mean, rstd, weight, bias, c, n, sb, sc, ss, negative_slope, **tiles
        )  # fmt: skip
        ctx.save_for_backward(x, weight, bias, mean, rstd)
        ctx.config = (fmt, negative_slope, tile)
        return out

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, dy: Tensor):  # type: ignore[override]
        from trainables.models._fused_norm_kernels import kernels

        x, weight, bias, mean, rstd = ctx.saved_tensors
        fmt, negative_slope, tile = ctx.config
        k = kernels()
        dy, dy_fmt = _dense(dy, fmt)
        b, c = x.shape[:2]
        n = x[0, 0].numel()
        p = launch_plan(b, c, n, fmt != torch.contiguous_format, tile)
        tiles = {"BLOCK_S": p.block_s, "BLOCK_C": p.block_c, "num_warps": p.num_warps}
        strides = (*_strides(x, fmt), *_strides(dy, dy_fmt))
        part = torch.empty(2, b * c, p.n_tiles, dtype=torch.float32, device=x.device)
        k["bwd_partial"][p.grid](
            x, dy, mean, rstd, weight, bias, part[0], part[1], c, n, p.n_tiles,
            *strides, negative_slope, **tiles,
        )  # fmt: skip
        sums = part.sum(dim=2)  # (2, B*C): sum(g), sum(g * x_hat) per instance
        dx = None
        if ctx.needs_input_grad[0]:
            dx = torch.empty_like(x, memory_format=fmt)
            k["bwd_dx"][p.grid](
                x, dy, dx, mean, rstd, weight, bias, sums[0], sums[1], c, n,
                *strides, negative_slope, **tiles,
            )  # fmt: skip
        per_channel = sums.view(2, b, c).sum(dim=1)
        dweight = per_channel[1].to(weight.dtype) if ctx.needs_input_grad[1] else None
        dbias = per_channel[0].to(bias.dtype) if ctx.needs_input_grad[2] else None
        return dx, dweight, dbias, None, None, None, None


def fused_instance_norm_act(
    x: Tensor,
    weight: Tensor,
    bias: Tensor,
    negative_slope: float = 0.01,
    eps: float = EPS,
    *,
    interpret: bool | None = None,
    tile: int = TILE,
) -> Tensor:
    """Instance norm + LeakyReLU through the Triton kernels (differentiable in x, weight, bias).

    ``x`` is ``(B, C, *S)`` with 1 to 3 spatial dims; the output has x's dtype and memory format.
    ``interpret`` runs triton's CPU interpreter (default: when ``x`` is on the CPU; slow, for
    tests). ``tile`` bounds the elements per program (tests shrink it to get many tiles).
    """
    if not triton_available():
        raise RuntimeError("fused_instance_norm_act needs triton (pip install triton)")
    if x.dim() < 3:
        raise ValueError(f"expected (B, C, *S) with spatial dims, got shape {tuple(x.shape)}")
    c = x.shape[1]
    if weight.shape != (c,) or bias.shape != (c,):
        raise ValueError(f"weight and bias must have shape ({c},)")
    if x[0, 0].numel() < 2:
        raise ValueError("instance norm needs more than one spatial element per instance")
    if x[0].numel() >= 2**31:
        raise ValueError("per-sample offsets must fit in int32 (C * prod(S) < 2^31)")
    if interpret is None:
        interpret = x.device.type == "cpu"
    return _FusedInstanceNormAct.apply(x, weight, bias, negative_slope, eps, interpret, tile)


# ------------------------------------------------------------------------------ module
class FusedInstanceNormAct(nn.Module):
    """``nn.InstanceNormNd(channels, affine=True)`` followed by ``nn.LeakyReLU(negative_slope)``.

    Same parameters (``weight`` ones, ``bias`` zeros) and state-dict keys as the instance-norm
    layer of the unfused pair. ``backend``: ``"auto"`` runs the Triton kernels on CUDA tensors
    when triton is installed and :func:`reference_instance_norm_act` otherwise; ``"triton"``
    always runs the kernels (CPU tensors through triton's interpreter: tests only); ``"torch"``
    always runs the reference.
    """

    def __init__(
        self,
        channels: int,
        negative_slope: float = 0.01,
        spatial_dims: int = 3,
        eps: float = EPS,
        backend: Backend = "auto",
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        if backend not in ("auto", "triton", "torch"):
            raise ValueError(f"unknown backend {backend!r}")
        self.channels = channels
        self.negative_slope = float(negative_slope)
        self.spatial_dims = spatial_dims
        self.eps = eps
        self.backend = backend
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def uses_triton(self, x: Tensor) -> bool:
        if self.backend == "auto":
            return x.is_cuda and triton_available()
        return self.backend == "triton"

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != self.spatial_dims + 2:
            raise ValueError(
                f"expected a {self.spatial_dims + 2}-D input (B, C, *S), got {x.dim()}-D"
            )
        if self.uses_triton(x):
            return fused_instance_norm_act(x, self.weight, self.bias, self.negative_slope, self.eps)
        return reference_instance_norm_act(x, self.weight, self.bias, self.negative_slope, self.eps)

    def extra_repr(self) -> str:
        return (
            f"{self.channels}, negative_slope={self.negative_slope}, "
            f"spatial_dims={self.spatial_dims}, eps={self.eps}, backend={self.backend!r}"
        )
