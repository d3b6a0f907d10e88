"""Overlap metrics: hand-computed values, BraTS empty-mask conventions, direct counting."""

from __future__ import annotations

import math

import numpy as np
import pytest

from trainables.errors import InputError
from trainables.metrics import (
    confusion,
    dice,
    relative_volume_difference,
    sensitivity,
    specificity,
)


def _cube(shape: tuple[int, ...], start: tuple[int, ...], size: int) -> np.ndarray:
    """Bool mask with a cube of ``size`` voxels per side whose low corner is ``start``."""
    mask = np.zeros(shape, dtype=bool)
    mask[tuple(slice(s, s + size) for s in start)] = True
    return mask


def _hand_pair() -> tuple[np.ndarray, np.ndarray]:
    """4x4 masks with TP 3, FP 2, FN 1, TN 10."""
    ref = np.zeros((4, 4), dtype=bool)
    ref[0, :] = True  # 4 reference voxels
    pred = np.zeros((4, 4), dtype=bool)
    pred[0, :3] = True  # 3 of them found
    pred[2, 1:3] = True  # 2 false positives
    return pred, ref


def test_dice_of_cubes_offset_by_two_voxels_is_one_half() -> None:
    # 4^3 cubes shifted by 2 along x share 2*4*4 = 32 voxels: 2*32 / (64 + 64) = 0.5.
    ref = _cube((10, 10, 10), (2, 2, 2), 4)
    pred = _cube((10, 10, 10), (4, 2, 2), 4)
    assert dice(pred, ref) == pytest.approx(0.5, abs=1e-12)
    assert dice(ref, ref) == 1.0


def test_confusion_sensitivity_specificity_hand_values() -> None:
    pred, ref = _hand_pair()
    assert tuple(confusion(pred, ref)) == (3, 2, 1, 10)
    assert sensitivity(pred, ref) == pytest.approx(3 / 4)
    assert specificity(pred, ref) == pytest.approx(10 / 12)
    assert dice(pred, ref) == pytest.approx(2 * 3 / (5 + 4))


def test_relative_volume_difference_sign_convention() -> None:
    ref = _cube((6, 6, 6), (0, 0, 0), 2)  # 8 voxels
    bigger = _cube((6, 6, 6), (0, 0, 0), 3)  # 27 voxels
    smaller = np.zeros_like(ref)
    smaller[0, 0, :2] = True  # 2 voxels
    assert relative_volume_difference(bigger, ref) == pytest.approx(19 / 8)
    assert relative_volume_difference(bigger, ref, signed=True) == pytest.approx(19 / 8)
    assert relative_volume_difference(smaller, ref) == pytest.approx(6 / 8)
    assert relative_volume_difference(smaller, ref, signed=True) == pytest.approx(-6 / 8)
    empty = np.zeros_like(ref)
    assert relative_volume_difference(empty, ref) == 1.0
    assert relative_volume_difference(empty, ref, signed=True) == -1.0


def test_relative_volume_difference_of_empty_reference() -> None:
    empty = np.zeros((3, 3, 3), dtype=bool)
    some = _cube((3, 3, 3), (0, 0, 0), 1)
    assert relative_volume_difference(empty, empty) == 0.0
    assert math.isnan(relative_volume_difference(some, empty))


def test_brats_empty_mask_conventions() -> None:
    empty = np.zeros((5, 5, 5), dtype=bool)
    some = _cube((5, 5, 5), (1, 1, 1), 2)
    assert dice(empty, empty) == 1.0
    assert sensitivity(empty, empty) == 1.0
    assert specificity(empty, empty) == 1.0
    assert dice(some, empty) == 0.0
    assert dice(empty, some) == 0.0
    assert sensitivity(empty, some) == 0.0
    # Nothing in the reference can be missed; the false positives lower specificity instead.
    assert sensitivity(some, empty) == 1.0
    assert specificity(some, empty) == pytest.approx(1 - 8 / 125)


def test_specificity_of_reference_without_background() -> None:
    full = np.ones((3, 3), dtype=bool)
    assert specificity(full, full) == 1.0
    assert specificity(np.zeros_like(full), full) == 1.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_overlap_metrics_match_direct_counting(seed: int) -> None:
    rng = np.random.default_rng(seed)
    pred = rng.random((20, 20, 16)) < 0.3
    ref = rng.random((20, 20, 16)) < 0.4
    pairs = list(zip(pred.ravel().tolist(), ref.ravel().tolist(), strict=True))
    tp = sum(1 for p, r in pairs if p and r)
    fp = sum(1 for p, r in pairs if p and not r)
    fn = sum(1 for p, r in pairs if r and not p)
    tn = len(pairs) - tp - fp - fn
    assert dice(pred, ref) == pytest.approx(2 * tp / (2 * tp + fp + fn), abs=1e-12)
    assert sensitivity(pred, ref) == pytest.approx(tp / (tp + fn), abs=1e-12)
    assert specificity(pred, ref) == pytest.approx(tn / (tn + fp), abs=1e-12)
    expected_rvd = abs((tp + fp) - (tp + fn)) / (tp + fn)
    assert relative_volume_difference(pred, ref) == pytest.approx(expected_rvd, abs=1e-12)


def test_shape_mismatch_names_both_shapes() -> None:
    with pytest.raises(InputError, match=r"pred shape \(3, 4\) differs from ref shape \(3, 5\)"):
        dice(np.zeros((3, 4), dtype=bool), np.zeros((3, 5), dtype=bool))


def test_non_bool_mask_is_rejected() -> None:
    labels = np.array([[0, 1], [2, 3]], dtype=np.uint8)
    with pytest.raises(InputError, match=r"pred must be a bool mask, got dtype uint8"):
        sensitivity(labels, labels > 0)
    with pytest.raises(InputError, match=r"ref must be a bool mask, got dtype uint8"):
        specificity(labels > 0, labels)
