"""Dimension-agnostic building blocks shared by every U-Net variant (2-D and 3-D, one code path).

Every factory takes ``spatial_dims`` (2 or 3) and returns the matching ``torch.nn`` layer, so a
network is described once and built for slices or volumes. Tensors are ``(B, C, *S)`` with ``S``
of length ``spatial_dims``. Nothing here depends on a dtype, so all blocks run under
``torch.autocast`` and with ``channels_last``/``channels_last_3d`` memory formats.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from trainables.models.fused_norm import FusedInstanceNormAct

NormKind = Literal["batch", "group", "instance", "none"]
BlockKind = Literal["plain", "residual"]
# A kernel size or stride: one value for every axis, or one per axis (nnU-Net's plans give
# per-axis lists, e.g. (1, 3, 3) kernels and (1, 2, 2) strides for thick slices).
Size = int | tuple[int, ...]

_CONV = {2: nn.Conv2d, 3: nn.Conv3d}
_CONV_T = {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
_POOL = {2: nn.MaxPool2d, 3: nn.MaxPool3d}
_BATCH = {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
_INSTANCE = {2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}


def _check_dims(spatial_dims: int) -> int:
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    return spatial_dims


def is_unit(size: Size) -> bool:
    """Whether a stride (or scale) leaves every axis as it is."""
    return all(s == 1 for s in size) if isinstance(size, tuple) else size == 1


def _same_padding(kernel_size: Size) -> Size:
    """ "Same" padding of odd kernels per axis (0 for an even one)."""
    if isinstance(kernel_size, tuple):
        return tuple(k // 2 if k % 2 == 1 else 0 for k in kernel_size)
    return kernel_size // 2 if kernel_size % 2 == 1 else 0


def conv_nd(
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    kernel_size: Size = 3,
    stride: Size = 1,
    bias: bool = True,
) -> nn.Module:
    """``Conv{2,3}d`` with "same" padding for odd kernels (a stride-2 conv halves each axis);
    ``kernel_size`` and ``stride`` one value or one per axis."""
    conv = _CONV[_check_dims(spatial_dims)]
    padding = _same_padding(kernel_size)
    return conv(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=bias)


def transposed_conv_nd(
    spatial_dims: int, in_channels: int, out_channels: int, scale: Size = 2
) -> nn.Module:
    """``ConvTranspose{2,3}d`` with kernel = stride = ``scale``: each axis grows by its scale."""
    conv_t = _CONV_T[_check_dims(spatial_dims)]
    return conv_t(in_channels, out_channels, kernel_size=scale, stride=scale, bias=True)


def max_pool_nd(spatial_dims: int, scale: Size = 2) -> nn.Module:
    """``MaxPool{2,3}d`` with kernel = stride = ``scale``: each axis shrinks by its scale."""
    return _POOL[_check_dims(spatial_dims)](kernel_size=scale, stride=scale)


def norm_nd(kind: NormKind, spatial_dims: int, channels: int, groups: int = 8) -> nn.Module:
    """Normalisation layer over ``channels`` feature maps.

    Instance norm is affine without running statistics, as in nnU-Net (eval behaves as train).
    ``"none"`` gives an identity (the classic U-Net without normalisation).
    """
    dims = _check_dims(spatial_dims)
    if kind == "batch":
        return _BATCH[dims](channels)
    if kind == "instance":
        return _INSTANCE[dims](channels, affine=True)
    if kind == "group":
        if channels % groups:
            raise ValueError(
                f"group norm: {channels} channels are not divisible by {groups} groups"
            )
        return nn.GroupNorm(groups, channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm kind {kind!r}")


def activation(negative_slope: float) -> nn.Module:
    """LeakyReLU with ``negative_slope``, or ReLU when the slope is 0 (classic U-Net)."""
    if negative_slope == 0:
        return nn.ReLU(inplace=True)
    return nn.LeakyReLU(negative_slope, inplace=True)


@dataclass(frozen=True)
class ConvOps:
    """The layer choices one network uses everywhere: dimensionality, norm and nonlinearity.

    ``fused_norm_act`` (opt-in, off by default): conv -> instance norm -> (Leaky)ReLU blocks use
    one :class:`FusedInstanceNormAct` (Triton kernels on CUDA, the same ops on CPU) in place of
    the norm and activation layers; parameters and state-dict keys are unchanged.
    """

    spatial_dims: int
    norm: NormKind = "instance"
    negative_slope: float = 0.01
    groups: int = 8
    fused_norm_act: bool = False

    def conv(self, cin: int, cout: int, kernel_size: Size = 3, stride: Size = 1) -> nn.Module:
        """A convolution feeding a norm layer: no bias unless there is no norm (it would cancel)."""
        bias = self.norm == "none"
        return conv_nd(self.spatial_dims, cin, cout, kernel_size, stride, bias=bias)

    def norm_layer(self, channels: int) -> nn.Module:
        return norm_nd(self.norm, self.spatial_dims, channels, self.groups)

    def act(self) -> nn.Module:
        return activation(self.negative_slope)

    def norm_act(self, channels: int) -> list[nn.Module]:
        """The norm and activation after a conv: two layers, or one fused layer when opted in.

        The fused layer takes the norm's place (same index in a Sequential, so the same
        ``weight``/``bias`` keys); the activation has no parameters.
        """
        if self.fused_norm_act and self.norm == "instance" and self.negative_slope >= 0:
            return [FusedInstanceNormAct(channels, self.negative_slope, self.spatial_dims)]
        return [self.norm_layer(channels), self.act()]


class ConvNormAct(nn.Sequential):
    """conv (``kernel`` per axis, 3 by default, same padding, optional stride) -> norm ->
    (Leaky)ReLU.

    ``(B, cin, *S)`` -> ``(B, cout, *S / stride)``.
    """

    def __init__(
        self, ops: ConvOps, cin: int, cout: int, stride: Size = 1, kernel: Size = 3
    ) -> None:
        super().__init__(ops.conv(cin, cout, kernel, stride), *ops.norm_act(cout))


class StackedConvs(nn.Sequential):
    """``n`` ConvNormAct layers; only the first may be strided (nnU-Net's down-sampling).

    ``(B, cin, *S)`` -> ``(B, cout, *S / stride)``.
    """

    def __init__(
        self, ops: ConvOps, cin: int, cout: int, n: int = 2, stride: Size = 1, kernel: Size = 3
    ) -> None:
        layers = [ConvNormAct(ops, cin, cout, stride, kernel)]
        layers += [ConvNormAct(ops, cout, cout, 1, kernel) for _ in range(1, n)]
        super().__init__(*layers)


class ResidualBlock(nn.Module):
    """Two 3x3 convs with an identity (or 1x1 projection) shortcut, activation after the sum.

    ``(B, cin, *S)`` -> ``(B, cout, *S / stride)``. BTRSeg adds a 1x1-conv shortcut to a
    conv-norm-act double conv; this is the He et al. form of the same idea, the projection
    normalised so both branches enter the sum on the same scale.
    """

    def __init__(
        self, ops: ConvOps, cin: int, cout: int, stride: Size = 1, kernel: Size = 3
    ) -> None:
        super().__init__()
        self.conv1 = ConvNormAct(ops, cin, cout, stride, kernel)
        self.conv2 = nn.Sequential(ops.conv(cout, cout, kernel), ops.norm_layer(cout))
        self.shortcut: nn.Module = nn.Identity()
        if cin != cout or not is_unit(stride):
            self.shortcut = nn.Sequential(ops.conv(cin, cout, 1, stride), ops.norm_layer(cout))
        self.act = ops.act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv2(self.conv1(x)) + self.shortcut(x))


def make_block(
    kind: BlockKind,
    ops: ConvOps,
    cin: int,
    cout: int,
    stride: Size = 1,
    n_convs: int = 2,
    kernel: Size = 3,
) -> nn.Module:
    """One U-Net block: ``n_convs`` plain ConvNormAct layers, or a two-conv residual block."""
    if kind == "residual":
        return ResidualBlock(ops, cin, cout, stride, kernel)
    if kind == "plain":
        return StackedConvs(ops, cin, cout, n_convs, stride, kernel)
    raise ValueError(f"unknown block kind {kind!r} (plain, residual)")


def init_weights(module: nn.Module, negative_slope: float) -> None:
    """nnU-Net's He init: kaiming-normal conv weights (``a`` = the LeakyReLU slope), zero bias.

    Apply with ``model.apply(lambda m: init_weights(m, slope))``; norm layers keep their
    default (weight 1, bias 0).
    """
    convs = (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)
    if isinstance(module, convs):
        nn.init.kaiming_normal_(module.weight, a=negative_slope)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
