"""One configurable U-Net: encoder + decoder built from a single stage description.

Like nnU-Net's ``PlainConvUNet`` (dynamic-network-architectures), the network is derived from a
list of features per resolution stage. Every seed paper's variant is this class with different
:class:`UNetSpec` choices: block type (plain / residual), down-sampling (max-pool / strided conv),
up-sampling (transposed conv / nearest + 1x1 conv), attention gates on the skips, extra blocks at
the bottleneck and deep-supervision heads.

Shapes: input ``(B, in_channels, *S)`` with every axis of ``S`` divisible by the product of
its strides (``2 ** (len(filters) - 1)`` with the default stride 2); output logits
``(B, out_channels, *S)``, or in training mode with deep supervision a list
``[(B, out, *S), (B, out, *S/2), ...]``, highest resolution first. Per-stage strides and kernel
sizes per axis (nnU-Net plans' ``pool_op_kernel_sizes`` and ``conv_kernel_sizes``) give the
anisotropic networks nnU-Net plans for thick-slice data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from trainables.errors import InputError
from trainables.models.attention import AttentionGate
from trainables.models.blocks import (
    BlockKind,
    ConvOps,
    Size,
    conv_nd,
    make_block,
    max_pool_nd,
    transposed_conv_nd,
)
from trainables.models.config_base import stride_product

DownKind = Literal["maxpool", "strided"]
UpKind = Literal["transpose", "nearest"]


@dataclass(frozen=True)
class UNetSpec:
    """Everything that defines a U-Net; configs translate into this (see ``build.py``).

    Attributes:
        ops: dimensionality, norm and nonlinearity used by every layer.
        filters: feature maps per resolution stage, highest resolution first; the last entry is
            the bottleneck stage, so there are ``len(filters) - 1`` down-sampling steps.
        block: ``"plain"`` (``convs_per_block`` ConvNormAct) or ``"residual"``.
        down: ``"maxpool"`` (2x max-pool before the block) or ``"strided"`` (first conv stride 2).
        up: ``"transpose"`` (2x transposed conv) or ``"nearest"`` (nearest up-sampling, 1x1 conv).
        attention: additive attention gates on the skips, gated by the coarser level.
        bottleneck_depth: extra blocks at the lowest resolution (FM-Net's bottleneck layers).
        deep_supervision_heads: ``None`` for one output; ``n`` for deep supervision with ``n``
            heads below the full-resolution one (training mode then returns ``1 + n`` logits).
        strides: per stage, the down-sampling factor per axis (stage 0's is all 1); None: 2 on
            every axis after the first stage.
        kernel_sizes: per stage, the convolution kernel per axis (the decoder block of a
            level uses that level's); None: 3 everywhere.
    """

    ops: ConvOps
    filters: tuple[int, ...]
    block: BlockKind = "plain"
    convs_per_block: int = 2
    down: DownKind = "maxpool"
    up: UpKind = "transpose"
    attention: bool = False
    bottleneck_depth: int = 0
    deep_supervision_heads: int | None = None
    strides: tuple[tuple[int, ...], ...] | None = None
    kernel_sizes: tuple[tuple[int, ...], ...] | None = None

    @property
    def divisor(self) -> tuple[int, ...]:
        """What each spatial axis of the input must be divisible by (product of its strides)."""
        if self.strides is None:
            return (2 ** (len(self.filters) - 1),) * self.ops.spatial_dims
        return stride_product(self.strides)

    def stride(self, level: int) -> Size:
        """Down-sampling from ``level - 1`` to ``level`` (level 0: none)."""
        if self.strides is not None:
            return self.strides[level]
        return 2 if level > 0 else 1

    def kernel(self, level: int) -> Size:
        return 3 if self.kernel_sizes is None else self.kernel_sizes[level]

    def block_for(self, cin: int, cout: int, level: int, stride: Size = 1) -> nn.Module:
        """The block of ``level`` (its kernel size), down-sampling by ``stride`` first."""
        kernel = self.kernel(level)
        return make_block(self.block, self.ops, cin, cout, stride, self.convs_per_block, kernel)


class Encoder(nn.Module):
    """Stages at decreasing resolution: ``(B, C, *S)`` -> ``[(B, f0, *S), (B, f1, *S/2), ...]``."""

    def __init__(self, spec: UNetSpec, in_channels: int) -> None:
        super().__init__()
        stages = []
        cin = in_channels
        for level, cout in enumerate(spec.filters):
            stages.append(_encoder_stage(spec, cin, cout, level))
            cin = cout
        self.stages = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        skips = []
        for stage in self.stages:
            x = stage(x)
            skips.append(x)
        return skips


def _encoder_stage(spec: UNetSpec, cin: int, cout: int, level: int) -> nn.Module:
    stride = spec.stride(level)
    if level > 0 and spec.down == "maxpool":
        pool = max_pool_nd(spec.ops.spatial_dims, stride)
        return nn.Sequential(pool, spec.block_for(cin, cout, level))
    return spec.block_for(cin, cout, level, stride)


class DecoderStage(nn.Module):
    """Up-sample the coarser features, (gate and) concatenate the skip, merge with one block.

    ``below`` ``(B, c_below, *S/stride)`` and ``skip`` ``(B, c_skip, *S)`` -> ``(B, c_skip, *S)``,
    ``stride`` the encoder's from ``level`` to ``level + 1``.
    """

    def __init__(self, spec: UNetSpec, c_below: int, c_skip: int, level: int) -> None:
        super().__init__()
        dims, scale = spec.ops.spatial_dims, spec.stride(level + 1)
        if spec.up == "transpose":
            self.up: nn.Module = transposed_conv_nd(dims, c_below, c_skip, scale)
        else:  # a 1x1 conv commutes with nearest up-sampling: run it on the coarse grid
            factor = tuple(float(s) for s in scale) if isinstance(scale, tuple) else scale
            self.up = nn.Sequential(
                conv_nd(dims, c_below, c_skip, 1), nn.Upsample(scale_factor=factor, mode="nearest")
            )
        self.gate = AttentionGate(spec.ops, c_skip, c_below) if spec.attention else None
        self.block = spec.block_for(2 * c_skip, c_skip, level)

    def forward(self, below: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        if self.gate is not None:
            skip = self.gate(skip, below)
        return self.block(torch.cat((self.up(below), skip), dim=1))


class UNet(nn.Module):
    """The U-Net family (see module docstring for the input/output contract).

    Submodules: ``encoder``, ``bottleneck`` (extra blocks, possibly empty), ``decoder`` (stages
    from the lowest resolution up) and ``heads`` (1x1 convs; ``heads[0]`` is the full-resolution
    output, ``heads[k]`` the deep-supervision head at ``S / 2**k``).
    """

    def __init__(self, spec: UNetSpec, in_channels: int, out_channels: int) -> None:
        super().__init__()
        if len(spec.filters) < 2:
            raise ValueError(f"a U-Net needs at least 2 stages, got filters {spec.filters}")
        self.spec = spec
        f = spec.filters
        self.encoder = Encoder(spec, in_channels)
        self.bottleneck = nn.Sequential(
            *(spec.block_for(f[-1], f[-1], len(f) - 1) for _ in range(spec.bottleneck_depth))
        )
        self.decoder = nn.ModuleList(
            DecoderStage(spec, f[level + 1], f[level], level)
            for level in reversed(range(len(f) - 1))
        )
        n_heads = 1 + (spec.deep_supervision_heads or 0)
        self.heads = nn.ModuleList(
            conv_nd(spec.ops.spatial_dims, f[k], out_channels, 1) for k in range(n_heads)
        )

    @property
    def returns_list(self) -> bool:
        """True when ``forward`` returns the deep-supervision list (training mode, DS on)."""
        return self.training and self.spec.deep_supervision_heads is not None

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        """``(B, in, *S)`` -> logits ``(B, out, *S)`` or, with DS in training, a list of them."""
        check_input_shape(x, self.spec.ops.spatial_dims, self.spec.divisor)
        skips = self.encoder(x)
        below = self.bottleneck(skips[-1])
        n_out = len(self.heads) if self.returns_list else 1
        outputs: list[torch.Tensor] = []
        for stage, level in zip(self.decoder, reversed(range(len(skips) - 1)), strict=True):
            below = stage(below, skips[level])
            if level < n_out:
                outputs.append(self.heads[level](below))
        outputs.reverse()  # highest resolution first
        return outputs if self.returns_list else outputs[0]


def check_input_shape(x: torch.Tensor, spatial_dims: int, divisor: int | tuple[int, ...]) -> None:
    """Raise :class:`InputError` unless ``x`` is ``(B, C, *S)``, each axis of ``S`` divisible
    by ``divisor`` (one value, or one per axis)."""
    if x.ndim != spatial_dims + 2:
        raise InputError(
            f"expected a (B, C, {spatial_dims} spatial axes) tensor, got shape {tuple(x.shape)}",
            where="model input",
        )
    spatial = tuple(x.shape[2:])
    divisors = divisor if isinstance(divisor, tuple) else (divisor,) * len(spatial)
    if any(s % d for s, d in zip(spatial, divisors, strict=True)):
        shown = divisors[0] if len(set(divisors)) == 1 else list(divisors)
        raise InputError(
            f"spatial shape {spatial} must be divisible by {shown} on every axis "
            "(the product of the down-sampling strides); choose a patch size that is",
            where="model input",
        )
