"""nnU-Net's network topology rule and its memory proxy, for the plain conv U-Net.

Both work in whatever axis order they are given; :mod:`trainables.planning.dataset` hands them
nnU-Net's own order so that its tie-breaks (first axis wins) fall the same way.

:func:`topology` is nnU-Net v2's ``get_pool_and_conv_props``: down-sample (stride 2) every axis
whose spacing is within a factor 2 of the finest one and that is still at least twice the
minimum bottleneck edge (4 voxels) long; a coarse axis joins once the others have caught up
with it. Kernels are 1 along an axis until its spacing comes within a factor 2 of the finest,
then 3; the bottleneck is 3 on every axis. The patch is padded up to a multiple of each axis's
stride product.

:func:`feature_map_voxels` is ``PlainConvUNet.compute_conv_feature_map_size`` (without deep
supervision, as nnU-Net's planner builds it): the number of activations the convolutions,
transposed convolutions and the output head write for one patch, nnU-Net's stand-in for GPU
memory.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

MIN_EDGE = 4  # nnU-Net's UNet_featuremap_min_edge_length: bottleneck edge in voxels
CONVS_PER_STAGE = 2  # conv-norm-nonlin blocks per encoder and decoder stage


@dataclass(frozen=True)
class Topology:
    """A plain U-Net's shape for one patch.

    Attributes:
        strides: per stage, the down-sampling factor per axis (the first stage all 1).
        kernel_sizes: per stage, the convolution kernel per axis.
        patch_size: the patch padded to a multiple of :attr:`divisor` (voxels per axis).
        divisor: per axis, the product of its strides.
    """

    strides: tuple[tuple[int, ...], ...]
    kernel_sizes: tuple[tuple[int, ...], ...]
    patch_size: tuple[int, ...]
    divisor: tuple[int, ...]

    @property
    def num_stages(self) -> int:
        return len(self.strides)


def topology(spacing: Sequence[float], patch_size: Sequence[float]) -> Topology:
    """nnU-Net's ``get_pool_and_conv_props`` (no cap on the number of poolings).

    Args:
        spacing: mm per voxel along each axis (2 or 3 axes).
        patch_size: the wanted patch in voxels (may be fractional: a median shape).
    """
    dims = len(spacing)
    current_spacing = [float(s) for s in spacing]
    current_size = [float(n) for n in patch_size]
    strides: list[tuple[int, ...]] = [(1,) * dims]
    kernels: list[tuple[int, ...]] = []
    pools = [0] * dims
    kernel = [1] * dims
    while True:
        axes = _poolable_axes(current_spacing, current_size)
        if not axes:
            break
        finest = min(current_spacing)
        # an axis gets 3-wide kernels once its spacing is within 2x of the finest, and keeps them
        kernel = [
            3 if k == 3 or s / finest < 2 else 1
            for k, s in zip(kernel, current_spacing, strict=True)
        ]
        for axis in axes:
            pools[axis] += 1
            current_spacing[axis] *= 2
            current_size[axis] = math.ceil(current_size[axis] / 2)
        strides.append(tuple(2 if a in axes else 1 for a in range(dims)))
        kernels.append(tuple(kernel))
    kernels.append((3,) * dims)  # the bottleneck always sees a 3-wide neighbourhood
    divisor = tuple(2**p for p in pools)
    return Topology(tuple(strides), tuple(kernels), _pad(patch_size, divisor), divisor)


def _poolable_axes(spacing: list[float], size: list[float]) -> list[int]:
    """Axes the next stage halves: long enough, and within 2x of the finest such axis."""
    long_enough = [a for a in range(len(size)) if size[a] >= 2 * MIN_EDGE]
    if not long_enough:
        return []
    finest = min(spacing[a] for a in long_enough)
    axes = [a for a in long_enough if spacing[a] / finest < 2]
    # a lone axis is halved only while it keeps 1.5x the minimum edge: no 4-voxel slivers
    if len(axes) == 1 and size[axes[0]] < 3 * MIN_EDGE:
        return []
    return axes


def _pad(shape: Sequence[float], divisor: Sequence[int]) -> tuple[int, ...]:
    """nnU-Net's ``pad_shape``: round each axis up to a multiple of its divisor."""
    padded = []
    for n, d in zip(shape, divisor, strict=True):
        up = n + d - n % d
        padded.append(int(up - d if n % d == 0 else up))
    return tuple(padded)


def stage_features(num_stages: int, base: int, cap: int) -> tuple[int, ...]:
    """Features per stage, ``base * 2**i`` capped at ``cap``: nnU-Net's rule, and the one
    ``plain_unet``'s config builds its network with (``PlainUNetConfig.filters``)."""
    return tuple(min(cap, base * 2**i) for i in range(num_stages))


def feature_map_voxels(
    patch_size: Sequence[int],
    strides: Sequence[Sequence[int]],
    features: Sequence[int],
    num_classes: int,
) -> int:
    """Activations one patch makes in a plain U-Net: nnU-Net's memory proxy.

    Args:
        patch_size: voxels per axis.
        strides: per stage, the stride per axis (first stage included).
        features: per stage, the output features.
        num_classes: output channels of the (single, full-resolution) segmentation head.

    Returns:
        Sum over every convolution of features x output voxels, plus each decoder level's
        transposed convolution and the head (``PlainConvUNet.compute_conv_feature_map_size``).
    """
    sizes = []
    size = [int(n) for n in patch_size]
    for stage_strides in strides:
        size = [n // s for n, s in zip(size, stage_strides, strict=True)]
        sizes.append(math.prod(size))
    encoder = sum(CONVS_PER_STAGE * f * n for f, n in zip(features, sizes, strict=True))
    # decoder level i works at stage i's resolution with its features: the convolutions plus the
    # transposed convolution that brought it there
    decoder = sum((CONVS_PER_STAGE + 1) * features[i] * sizes[i] for i in range(len(sizes) - 1))
    return encoder + decoder + num_classes * sizes[0]
