"""nnU-Net's plan of one configuration (3d_fullres, 3d_lowres or 2d): patch, network, batch.

nnU-Net v2's ``ExperimentPlanner.get_plans_for_configuration``:

1. Start from a patch with the aspect ratio of the spacing (as many mm along every axis) and
   the volume of 256^3 voxels (2048^2 for slices), clipped to the median image shape.
2. Pad it to what the topology (:func:`~trainables.planning.topology.topology`) divides.
3. While the memory proxy at batch 2 exceeds the reference (560 M activations in 3-D, 85 M in
   2-D, for 8 GB, scaled by the GPU-memory target), shrink the axis that is largest relative to
   the median shape by one step of what it must divide by, and replan the topology.
4. Spend left-over memory on a larger batch (reference batch 2 in 3-D, 12 in 2-D), but never
   more than 5% of the dataset's voxels per step, and never fewer than 2 patches.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from trainables.planning.topology import Topology, feature_map_voxels, stage_features, topology

BASE_FEATURES = 32
MAX_FEATURES = {3: 320, 2: 512}
# activations at the reference batch that fit 8 GB (nnU-Net's UNet_reference_val_3d / _2d)
REFERENCE_ACTIVATIONS = {3: 560_000_000, 2: 85_000_000}
REFERENCE_GPU_GB = 8.0
REFERENCE_BATCH = {3: 2, 2: 12}
MIN_BATCH = 2
MAX_DATASET_FRACTION = 0.05  # of the dataset's voxels seen in one step: an overfitting guard
INITIAL_EDGE = {3: 256, 2: 2048}


@dataclass(frozen=True)
class ConfigurationPlan:
    """One configuration's plan, in the axis order it was planned in.

    Attributes:
        spacing: mm per voxel the configuration trains at.
        median_shape: the dataset's median image shape at that spacing (voxels, may be x.5).
        patch_size: training patch in voxels.
        strides: per stage, the down-sampling factor per axis (nnU-Net's
            ``pool_op_kernel_sizes``).
        kernel_sizes: per stage, the convolution kernel per axis (``conv_kernel_sizes``).
        batch_size: patches per step.
        max_features: cap on any stage's features (320 in 3-D, 512 in 2-D).
        activations: the memory proxy of one patch (``compute_conv_feature_map_size``).
    """

    spacing: tuple[float, ...]
    median_shape: tuple[float, ...]
    patch_size: tuple[int, ...]
    strides: tuple[tuple[int, ...], ...]
    kernel_sizes: tuple[tuple[int, ...], ...]
    batch_size: int
    max_features: int
    activations: int

    @property
    def num_stages(self) -> int:
        return len(self.strides)

    @property
    def patch_fraction(self) -> float:
        """Share of the median image one patch covers (nnU-Net wants a 3d_lowres below 0.25)."""
        return math.prod(self.patch_size) / math.prod(self.median_shape)


def plan_configuration(
    spacing: Sequence[float],
    median_shape: Sequence[float],
    dataset_voxels: float,
    num_classes: int,
    gpu_memory_gb: float = REFERENCE_GPU_GB,
) -> ConfigurationPlan:
    """Plan patch, topology and batch for one configuration (steps 1-4 of the module doc).

    Args:
        spacing: mm per voxel, 2 or 3 axes.
        median_shape: the median image shape at ``spacing``, same axes.
        dataset_voxels: median image voxels x training cases (the 5% batch cap's whole).
        num_classes: segmentation outputs, background included (nnU-Net counts its labels).
        gpu_memory_gb: GPU memory to plan for; 8 is nnU-Net's default.
    """
    dims = len(spacing)
    if dims not in (2, 3) or len(median_shape) != dims:
        raise ValueError(f"plan 2 or 3 axes with one median extent each, got {spacing}")
    if min(spacing) <= 0 or min(median_shape) <= 0:
        raise ValueError(f"spacing and median shape must be positive: {spacing}, {median_shape}")
    cap = MAX_FEATURES[dims]
    reference = REFERENCE_ACTIVATIONS[dims] * gpu_memory_gb / REFERENCE_GPU_GB
    per_patch = _activation_counter(num_classes, cap)
    topo = topology(spacing, _initial_patch(spacing, median_shape))
    # the reference holds REFERENCE_BATCH patches; the plan needs room for at least 2
    while per_patch(topo) / REFERENCE_BATCH[dims] * 2 > reference:
        topo = topology(spacing, _shrunk(topo, spacing, median_shape))
    activations = per_patch(topo)
    batch = round(reference / activations * REFERENCE_BATCH[dims])
    dataset_cap = round(dataset_voxels * MAX_DATASET_FRACTION / math.prod(topo.patch_size))
    return ConfigurationPlan(
        spacing=tuple(float(s) for s in spacing),
        median_shape=tuple(float(n) for n in median_shape),
        patch_size=topo.patch_size,
        strides=topo.strides,
        kernel_sizes=topo.kernel_sizes,
        batch_size=max(min(batch, dataset_cap), MIN_BATCH),
        max_features=cap,
        activations=activations,
    )


def _initial_patch(spacing: Sequence[float], median_shape: Sequence[float]) -> list[float]:
    """Equal mm along every axis, INITIAL_EDGE^dims voxels in all, clipped to the median."""
    dims = len(spacing)
    inverse = [1.0 / s for s in spacing]
    scale = (INITIAL_EDGE[dims] ** dims / math.prod(inverse)) ** (1 / dims)
    return [min(round(i * scale), n) for i, n in zip(inverse, median_shape, strict=True)]


def _shrunk(topo: Topology, spacing: Sequence[float], median_shape: Sequence[float]) -> list[int]:
    """One step smaller along the axis largest relative to the median shape (the last on ties).

    The step is what the axis must divide by *after* the cut: subtracting the current divisor
    could skip a valid size (256 -> 192 would skip 224 = 7 x 32).
    """
    ratios = [p / n for p, n in zip(topo.patch_size, median_shape, strict=True)]
    axis = max(range(len(ratios)), key=lambda a: (ratios[a], a))
    patch = list(topo.patch_size)
    trial = list(patch)
    trial[axis] -= topo.divisor[axis]
    patch[axis] -= topology(spacing, trial).divisor[axis]
    return patch


def _activation_counter(num_classes: int, cap: int) -> Callable[[Topology], int]:
    """``topology -> activations``, memoised per (patch, strides) as nnU-Net's planner does."""
    seen: dict[tuple, int] = {}

    def count(topo: Topology) -> int:
        key = (topo.patch_size, topo.strides)
        if key not in seen:
            features = stage_features(topo.num_stages, BASE_FEATURES, cap)
            seen[key] = feature_map_voxels(topo.patch_size, topo.strides, features, num_classes)
        return seen[key]

    return count
