"""One configuration's plan: memory budget, batch rules and bad input."""

from __future__ import annotations

import math

import pytest

from trainables.planning.configuration import (
    MIN_BATCH,
    REFERENCE_ACTIVATIONS,
    plan_configuration,
)


def test_the_plan_fits_the_memory_reference_at_batch_2() -> None:
    plan = plan_configuration((1.0, 1.0, 1.0), (300.0, 300.0, 300.0), 300.0**3 * 100, 4)
    assert plan.activations <= REFERENCE_ACTIVATIONS[3]
    assert plan.patch_size == (128, 128, 128)  # nnU-Net's familiar BraTS-sized patch
    assert plan.batch_size == 2 and plan.max_features == 320


def test_more_gpu_memory_buys_a_larger_patch() -> None:
    args = ((1.0, 1.0, 1.0), (300.0, 300.0, 300.0), 300.0**3 * 100, 4)
    small, large = plan_configuration(*args, 8.0), plan_configuration(*args, 24.0)
    assert math.prod(large.patch_size) > 2 * math.prod(small.patch_size)
    assert large.activations <= REFERENCE_ACTIVATIONS[3] * 3


def test_left_over_memory_goes_to_the_batch_but_at_most_5_percent_of_the_data() -> None:
    # a 64^3 image fits whole with memory to spare: the batch grows with the dataset's size
    many = plan_configuration((1.0, 1.0, 1.0), (64.0, 64.0, 64.0), 64.0**3 * 1000, 2)
    few = plan_configuration((1.0, 1.0, 1.0), (64.0, 64.0, 64.0), 64.0**3 * 60, 2)
    assert many.patch_size == few.patch_size == (64, 64, 64)
    assert many.batch_size > 10
    assert few.batch_size == 3  # round(60 images x 5%)
    tiny = plan_configuration((1.0, 1.0, 1.0), (64.0, 64.0, 64.0), 64.0**3 * 4, 2)
    assert tiny.batch_size == MIN_BATCH


def test_the_axis_largest_against_the_median_shrinks_first() -> None:
    # a long Z: the 256-voxel start is clipped to X and Y (200, padded to 224), which then cover
    # more of their median than Z's 256 of 800 and give way until the patch fits
    plan = plan_configuration((1.0, 1.0, 1.0), (200.0, 200.0, 800.0), 200 * 200 * 800.0 * 50, 2)
    assert plan.patch_size == (96, 96, 256)
    assert plan.activations <= REFERENCE_ACTIVATIONS[3]
    # Z alone keeps pooling once X and Y reach the bottleneck edge
    assert plan.strides[-1] == (1, 1, 2)


def test_slices_plan_with_512_features_and_a_batch_of_a_dozen() -> None:
    plan = plan_configuration((1.0, 1.0), (512.0, 512.0), 512.0**2 * 200 * 100, 2)
    assert plan.max_features == 512
    assert len(plan.patch_size) == 2 and plan.batch_size >= 12


@pytest.mark.parametrize(
    ("spacing", "median", "message"),
    [
        ((1.0,), (10.0,), "plan 2 or 3 axes with one median extent each"),
        ((1.0, 1.0, 1.0), (10.0, 10.0), "plan 2 or 3 axes with one median extent each"),
        ((1.0, 0.0, 1.0), (10.0, 10.0, 10.0), "spacing and median shape must be positive"),
    ],
)
def test_bad_input_is_refused_with_what_is_wrong(spacing, median, message) -> None:
    with pytest.raises(ValueError, match=message):
        plan_configuration(spacing, median, 1e6, 2)
