"""A dataset's plan: target spacing, nnU-Net's axis order and the 3d_lowres verdict."""

from __future__ import annotations

import pytest

from trainables.planning.dataset import plan_dataset, planning_order


@pytest.mark.parametrize(
    ("target", "order"),
    [
        ((1.0, 1.0, 1.0), (2, 1, 0)),  # nnU-Net's (Z, Y, X), nothing moves
        ((0.7, 0.7, 5.0), (2, 1, 0)),  # Z is coarsest and already first
        ((4.0, 0.9, 0.9), (0, 2, 1)),  # X moves to the front, Z and Y keep their order
        ((0.9, 3.0, 0.9), (1, 2, 0)),
    ],
)
def test_planning_order_is_nnunets_transpose(target, order) -> None:
    assert planning_order(target) == order


def test_the_plan_follows_the_coarse_axis_wherever_it_is() -> None:
    """The same images with the thick axis as X or as Z plan the same network, axes swapped."""
    n = 6
    coarse_z = plan_dataset([(0.9, 0.9, 4.0)] * n, [(160, 160, 30)] * n, [(160, 160, 30)] * n, 2)
    coarse_x = plan_dataset([(4.0, 0.9, 0.9)] * n, [(30, 160, 160)] * n, [(30, 160, 160)] * n, 2)
    assert coarse_x.fullres.patch_size == coarse_z.fullres.patch_size[::-1]
    assert coarse_x.fullres.strides == tuple(s[::-1] for s in coarse_z.fullres.strides)
    assert coarse_z.fullres.kernel_sizes[0] == (3, 3, 1)
    assert coarse_x.fullres.kernel_sizes[0] == (1, 3, 3)
    assert coarse_x.target_spacing == (4.0, 0.9, 0.9)


def test_the_median_shape_is_taken_after_the_crop_and_resampling() -> None:
    # header 200^3 at 0.5 mm, cropped to 100^3 voxels, resampled to the median 1 mm: 50 voxels
    spacings = [(0.5, 0.5, 0.5), (1.0, 1.0, 1.0), (1.0, 1.0, 1.0)]
    plan = plan_dataset(spacings, [(200,) * 3] * 3, [(100,) * 3, (50,) * 3, (50,) * 3], 2)
    assert plan.target_spacing == (1.0, 1.0, 1.0)
    assert plan.median_shape == (50.0, 50.0, 50.0)


def test_large_images_get_a_lowres_and_with_it_batch_dice() -> None:
    big = plan_dataset([(0.6, 0.6, 0.8)] * 5, [(360, 360, 300)] * 5, [(350, 350, 290)] * 5, 2)
    assert big.lowres is not None and big.fullres_batch_dice
    assert all(b > a for a, b in zip(big.fullres.spacing, big.lowres.spacing, strict=True))
    small = plan_dataset([(1.0, 1.0, 1.0)] * 5, [(140, 170, 140)] * 5, [(140, 170, 140)] * 5, 4)
    assert small.lowres is None and not small.fullres_batch_dice


def test_slices_plan_the_xy_plane() -> None:
    plan = plan_dataset([(0.7, 0.7, 3.0)] * 4, [(256, 200, 40)] * 4, [(256, 200, 40)] * 4, 2)
    assert plan.slices.spacing == (0.7, 0.7)
    assert plan.slices.median_shape == (256.0, 200.0)


def test_no_case_is_refused() -> None:
    with pytest.raises(ValueError, match="planning needs at least one labelled case"):
        plan_dataset([], [], [], 2)


def test_single_slices_get_no_3d_configuration() -> None:
    """nnU-Net plans only 2d for images one voxel thick (its planner's median-shape check)."""
    plan = plan_dataset([(0.5, 0.5, 1.0)] * 5, [(512, 400, 1)] * 5, [(512, 400, 1)] * 5, 3)
    assert plan.fullres is None and plan.lowres is None
    assert plan.slices.patch_size == (512, 448)  # 400 padded to a multiple of 2**6


def test_the_transpose_is_decided_on_the_unrounded_spacing() -> None:
    """Float32 header noise (1.0000001 mm) makes X nnU-Net's coarsest axis and moves it first;
    nnU-Net 2.8.1 plans (160, 112, 128) in (X, Y, Z) for these cases (found by fuzzing the
    planner against nnU-Net's own code), while the reported spacing is rounded as prepare's."""
    plan = plan_dataset(
        [(1.0000001, 1.0, 1.0)] * 5, [(400, 300, 400)] * 5, [(400, 300, 400)] * 5, 3
    )
    assert plan.fullres is not None and plan.fullres.patch_size == (160, 112, 128)
    assert plan.target_spacing == (1.0, 1.0, 1.0)
