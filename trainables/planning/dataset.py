"""nnU-Net's experiment plan of a whole dataset (``ExperimentPlanner.plan_experiment``).

From every labelled case's spacing and its shape after the crop to non-zero voxels:

- the target spacing, by the rule ``data.preprocess.resample`` uses when it computes one
  (:func:`~trainables.data.resample.exact_target_spacing`, on the header shapes as prepare
  has them), so the plan is for the grid training will see;
- the median shape after resampling to it;
- the 3d_fullres and 2d configurations (:func:`~trainables.planning.configuration.
  plan_configuration`);
- whether nnU-Net would add a 3d_lowres configuration: when a full-resolution patch covers less
  than a quarter of the median image, its spacing is coarsened by 3% steps until a patch
  does; the lowres plan is kept when it at least halves the image. nnU-Net v2 trains 3d_fullres
  with batch Dice exactly when that plan exists (large images), and with per-sample Dice
  otherwise.

Axis order. ablate's arrays are (X, Y, Z); nnU-Net's are (Z, Y, X), then transposed to put the
coarsest axis first (``transpose_forward``). Planning runs in that order, because nnU-Net's
tie-breaks depend on it, and the result comes back in (X, Y, Z). The 2d configuration plans
the (X, Y) plane ablate's slice models see; nnU-Net slices along its coarsest axis, which is the
same plane whenever Z is the coarsest (or no axis is).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from trainables.data.resample import exact_target_spacing, resampled_shape, rounded_spacing
from trainables.planning.configuration import ConfigurationPlan, plan_configuration

LOWRES_PATCH_FRACTION = 0.25  # below this share of the median image, nnU-Net adds 3d_lowres
LOWRES_SPACING_STEP = 1.03
LOWRES_MIN_REDUCTION = 2.0  # the lowres image must be at least this many times smaller


@dataclass(frozen=True)
class DatasetPlan:
    """A dataset's plan, in ablate's (X, Y, Z) order.

    Attributes:
        num_cases: labelled cases planned from.
        target_spacing: mm per voxel every case is resampled to (rounded to 1 nm, as prepare
            has it).
        median_shape: median shape after cropping and resampling, voxels.
        fullres: the 3d_fullres configuration; None for single-slice images (a median of one
            voxel along the coarsest axis), for which nnU-Net plans no 3-D configuration.
        slices: the 2d configuration, on the (X, Y) plane.
        lowres: nnU-Net's 3d_lowres configuration when it would make one, else None.
        gpu_memory_gb: the GPU memory planned for.
    """

    num_cases: int
    target_spacing: tuple[float, float, float]
    median_shape: tuple[float, float, float]
    fullres: ConfigurationPlan | None
    slices: ConfigurationPlan
    lowres: ConfigurationPlan | None
    gpu_memory_gb: float

    @property
    def fullres_batch_dice(self) -> bool:
        """nnU-Net v2's ``batch_dice`` for 3d_fullres: true exactly when 3d_lowres exists."""
        return self.lowres is not None


def plan_dataset(
    spacings: Sequence[Sequence[float]],
    header_shapes: Sequence[Sequence[int]],
    crop_shapes: Sequence[Sequence[int]],
    num_classes: int,
    gpu_memory_gb: float = 8.0,
) -> DatasetPlan:
    """Plan a dataset from its labelled cases (module doc).

    Args:
        spacings: (X, Y, Z) mm of each case.
        header_shapes: (X, Y, Z) voxels of each case as stored (the target-spacing rule's input).
        crop_shapes: (X, Y, Z) voxels of each case after the crop to non-zero voxels.
        num_classes: label classes, background included.
        gpu_memory_gb: GPU memory to plan for (nnU-Net's default 8).
    """
    if not spacings:
        raise ValueError("planning needs at least one labelled case")
    # nnU-Net plans with the unrounded spacing: its float32 noise breaks ties between axes
    exact = exact_target_spacing(spacings, header_shapes)
    resampled = [resampled_shape(n, s, exact) for n, s in zip(crop_shapes, spacings, strict=True)]
    median = tuple(float(v) for v in np.median(np.asarray(resampled, dtype=np.float64), axis=0))
    order = planning_order(exact)
    spacing_p, median_p = to_planning_order(order, exact), to_planning_order(order, median)
    dataset_voxels = math.prod(median_p) * len(spacings)
    fullres: ConfigurationPlan | None = None
    lowres: ConfigurationPlan | None = None
    if median_p[0] != 1:  # single slices: nnU-Net makes no 3-D configuration
        fullres = plan_configuration(
            spacing_p, median_p, dataset_voxels, num_classes, gpu_memory_gb
        )
        lowres = _lowres(fullres, len(spacings), num_classes, gpu_memory_gb)
    # the (X, Y) plane in nnU-Net's order, (Y, X)
    slices = plan_configuration(
        (exact[1], exact[0]), (median[1], median[0]), dataset_voxels, num_classes, gpu_memory_gb
    )
    return DatasetPlan(
        num_cases=len(spacings),
        target_spacing=rounded_spacing(exact),
        median_shape=median,  # type: ignore[arg-type]
        fullres=None if fullres is None else _from_plan(order, fullres),
        slices=_from_plan((1, 0), slices),
        lowres=None if lowres is None else _from_plan(order, lowres),
        gpu_memory_gb=gpu_memory_gb,
    )


def planning_order(target: Sequence[float]) -> tuple[int, ...]:
    """ablate's axes in nnU-Net's planning order: reverse to (Z, Y, X), coarsest first.

    nnU-Net's ``determine_transpose``: the first axis of largest spacing (in its order) moves to
    the front, the others keep their order.
    """
    nnunet = (2, 1, 0)  # nnU-Net axis i is ablate axis 2 - i
    coarsest = int(np.argmax([target[a] for a in nnunet]))
    return (nnunet[coarsest], *(a for i, a in enumerate(nnunet) if i != coarsest))


def to_planning_order(order: Sequence[int], values: Sequence[float]) -> tuple[float, ...]:
    """ablate's (X, Y, Z) values in planning ``order`` (:func:`planning_order`)."""
    return tuple(float(values[a]) for a in order)


def from_planning_order(order: Sequence[int], values: Sequence) -> tuple:
    """Undo :func:`to_planning_order`: the value at position k belongs to ablate axis order[k]."""
    out: list = [None] * len(order)
    for k, axis in enumerate(order):
        out[axis] = values[k]
    return tuple(out)


def _from_plan(order: Sequence[int], plan: ConfigurationPlan) -> ConfigurationPlan:
    """A configuration planned in ``order`` with every per-axis value back in ablate's order."""
    return replace(
        plan,
        spacing=from_planning_order(order, plan.spacing),
        median_shape=from_planning_order(order, plan.median_shape),
        patch_size=from_planning_order(order, plan.patch_size),
        strides=tuple(from_planning_order(order, s) for s in plan.strides),
        kernel_sizes=tuple(from_planning_order(order, k) for k in plan.kernel_sizes),
    )


def _lowres(
    fullres: ConfigurationPlan, num_cases: int, num_classes: int, gpu_memory_gb: float
) -> ConfigurationPlan | None:
    """nnU-Net's 3d_lowres search (module doc), in planning order; None when it makes none."""
    full_spacing = np.asarray(fullres.spacing, dtype=np.float64)
    median = np.asarray(fullres.median_shape, dtype=np.float64)
    spacing = full_spacing.copy()
    median_voxels = float(np.prod(median))
    patch_voxels = math.prod(fullres.patch_size)
    lowres = None
    while patch_voxels / median_voxels < LOWRES_PATCH_FRACTION:
        # coarsen the finer axes first, until every axis is within 2x of the coarsest
        finer = spacing.max() / spacing > 2
        if finer.any():
            spacing[finer] *= LOWRES_SPACING_STEP
        else:
            spacing *= LOWRES_SPACING_STEP
        shape = full_spacing / spacing * median
        median_voxels = float(np.prod(shape))
        lowres = plan_configuration(
            tuple(spacing),
            tuple(round(float(n)) for n in shape),
            median_voxels * num_cases,
            num_classes,
            gpu_memory_gb,
        )
        patch_voxels = math.prod(lowres.patch_size)
    if float(np.prod(median)) / median_voxels < LOWRES_MIN_REDUCTION:
        return None
    return lowres
