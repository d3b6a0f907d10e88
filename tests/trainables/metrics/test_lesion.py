"""Lesion-wise Dice and HD95 (BraTS 2023 rules) on hand-built volumes with worked-out answers.

Default rule (glioma): reference dilated 3 times with the 18-neighbourhood, lesions of at most
50 mm³ ignored, a missed lesion or a false-positive component scores Dice 0 / HD95 374 mm.
"""

from __future__ import annotations

import numpy as np
import pytest

from trainables.data.labels import INTERNAL_BINARY, INTERNAL_BRATS
from trainables.errors import InputError
from trainables.metrics import LesionRule, hd95, lesion_metrics, lesion_scores

SHAPE = (40, 20, 20)
ISO = (1.0, 1.0, 1.0)


def cube(mask: np.ndarray, corner: tuple[int, int, int], side: int) -> np.ndarray:
    """Set a ``side``-voxel cube with its lowest corner at ``corner``; returns ``mask``."""
    x, y, z = corner
    mask[x : x + side, y : y + side, z : z + side] = True
    return mask


def empty() -> np.ndarray:
    return np.zeros(SHAPE, dtype=bool)


def two_lesions() -> np.ndarray:
    """Two 4x4x4 = 64-voxel lesions (> 50 mm³), x 2..5 and x 20..23: far beyond 3+3 voxels."""
    return cube(cube(empty(), (2, 2, 2), 4), (20, 2, 2), 4)


def test_one_lesion_found_one_missed():
    ref = two_lesions()
    pred = cube(empty(), (2, 2, 2), 4)  # the first lesion exactly
    scores = lesion_scores(pred, ref, ISO)
    assert scores.dice == (1.0, 0.0) and scores.hd95 == (0.0, 374.0)
    assert scores.false_positives == 0 and scores.ignored == 0
    assert scores.lesion_dice == 0.5  # (1 + 0) / 2
    assert scores.lesion_hd95 == 187.0  # (0 + 374) / 2


def test_false_positive_component_is_an_extra_zero_entry():
    ref = two_lesions()
    pred = cube(cube(empty(), (2, 2, 2), 4), (32, 10, 10), 2)  # + 8 voxels far from both
    scores = lesion_scores(pred, ref, ISO)
    assert scores.false_positives == 1
    assert scores.lesion_dice == pytest.approx(1 / 3)  # (1 + 0 + 0) / (2 lesions + 1 FP)
    assert scores.lesion_hd95 == pytest.approx(748 / 3)  # (0 + 374 + 374) / 3
    # Components are 26-connected: two voxels touching at a corner are one false positive.
    pred[32:34, 10:12, 10:12] = False
    pred[32, 10, 10] = pred[33, 11, 11] = True
    assert lesion_scores(pred, ref, ISO).false_positives == 1


def pred_with(ref: np.ndarray, voxel: tuple[int, int, int]) -> np.ndarray:
    """``ref`` plus one predicted voxel."""
    pred = ref.copy()
    pred[voxel] = True
    return pred


def test_matching_reach_is_three_steps_of_the_18_neighbourhood():
    # A step of the 18-neighbourhood moves at most 1 voxel per axis and 2 in L1, so 3 steps
    # reach offset (3, 3, 0) from the lesion but not (3, 3, 3) (L1 = 9 > 6) nor (4, 0, 0).
    ref = cube(empty(), (10, 5, 5), 4)  # voxels 10..13, 5..8, 5..8
    for offset, matched in (((3, 3, 0), True), ((3, 3, 3), False), ((4, 0, 0), False)):
        voxel = (13 + offset[0], 8 + offset[1], 8 + offset[2])  # off the far corner
        scores = lesion_scores(pred_with(ref, voxel), ref, ISO)
        assert scores.false_positives == (0 if matched else 1), offset
    # Matched, the stray voxel joins the lesion's prediction: Dice 2*64 / (65 + 64).
    assert lesion_scores(pred_with(ref, (16, 11, 8)), ref, ISO).dice == (pytest.approx(128 / 129),)


def test_two_predicted_fragments_in_one_lesion_are_scored_together():
    # Reference: a 10x6x1 slab (60 voxels > 50); 1 voxel thick, so every voxel is surface.
    ref = empty()
    ref[2:12, 2:8, 5] = True
    pred = ref.copy()
    pred[6, :, :] = False  # cut column x = 6: fragments x 2..5 (24 voxels) and x 7..11 (30)
    scores = lesion_scores(pred, ref, ISO)
    assert scores.false_positives == 0 and len(scores.dice) == 1
    assert scores.dice[0] == pytest.approx(108 / 114)  # 2*54 / (54 + 60)
    # Distances: 54 pred voxels -> 0, 54 ref voxels -> 0, the 6 cut ref voxels -> 1 mm.
    # 114 sorted values, 95th percentile at index 0.95 * 113 = 107.35: 0 + 0.35 * (1 - 0).
    assert scores.hd95[0] == pytest.approx(0.35)
    assert scores.hd95[0] == pytest.approx(hd95(pred, ref, ISO))


@pytest.mark.parametrize(("gap", "lesions", "expected_dice"), [(6, 1, 2 / 3), (7, 2, 0.5)])
def test_reference_fragments_merge_when_their_dilations_touch(gap, lesions, expected_dice):
    # Cubes at x 2..5 and x 6+gap..: dilated to x <= 8 and x >= 3+gap, touching for gap <= 6.
    ref = cube(cube(empty(), (2, 2, 2), 4), (6 + gap, 2, 2), 4)
    pred = cube(empty(), (2, 2, 2), 4)  # the first cube only
    scores = lesion_scores(pred, ref, ISO)
    assert len(scores.dice) == lesions
    # merged: one 128-voxel lesion, Dice 2*64 / (64 + 128); separate: (1 + 0) / 2
    assert scores.lesion_dice == pytest.approx(expected_dice)


def test_both_empty_and_one_side_empty():
    assert lesion_metrics(np.zeros(SHAPE, np.uint8), np.zeros(SHAPE, np.uint8), ISO) == {
        "lesion_dice_wt": 1.0,
        "lesion_hd95_wt": 0.0,
        "lesion_dice_tc": 1.0,
        "lesion_hd95_tc": 0.0,
        "lesion_dice_et": 1.0,
        "lesion_hd95_et": 0.0,
    }
    only_pred = lesion_scores(two_lesions(), empty(), ISO)  # two FP components
    assert (only_pred.lesion_dice, only_pred.lesion_hd95) == (0.0, 374.0)


def test_lesions_of_at_most_50_mm3_are_ignored():
    ref = cube(empty(), (2, 2, 2), 4)  # 64 voxels, predicted exactly
    ref[25:30, 5:10, 5:7] = True  # 5x5x2 = 50 voxels, missed
    pred = cube(empty(), (2, 2, 2), 4)
    scores = lesion_scores(pred, ref, ISO)
    assert (scores.ignored, scores.lesion_dice, scores.lesion_hd95) == (1, 1.0, 0.0)
    # The threshold is a volume: at 1.1 mm slices the small lesion is 55 mm³ > 50 and counts.
    thick = lesion_scores(pred, ref, (1.0, 1.0, 1.1))
    assert (thick.ignored, thick.lesion_dice, thick.lesion_hd95) == (0, 0.5, 187.0)
    # A component on an ignored lesion is matched to it, hence no false positive.
    pred[25:30, 5:10, 5:7] = True
    assert lesion_scores(pred, ref, ISO).false_positives == 0
    assert lesion_scores(pred, ref, ISO, LesionRule(3, 49.0)).dice == (1.0, 1.0)


def test_brats_regions_from_labels():
    ref = np.zeros(SHAPE, np.uint8)
    ref[2:8, 2:8, 2:8] = 2  # oedema 6x6x6, WT lesion of 216 voxels
    ref[3:7, 3:7, 3:7] = 3  # enhancing core 64 voxels: TC = ET = 64 voxels
    ref[28:34, 2:8, 2:8] = 2  # a second, identical lesion far away
    ref[29:33, 3:7, 3:7] = 3
    pred = ref.copy()
    pred[25:] = 0  # second lesion missed
    out = lesion_metrics(pred, ref, ISO, INTERNAL_BRATS)
    for region in ("wt", "tc", "et"):
        assert (out[f"lesion_dice_{region}"], out[f"lesion_hd95_{region}"]) == (0.5, 187.0)


def test_binary_scheme_has_one_region_fg():
    ref, pred = two_lesions().astype(np.uint8), cube(empty(), (2, 2, 2), 4).astype(np.uint8)
    assert lesion_metrics(pred, ref, ISO, INTERNAL_BINARY) == {
        "lesion_dice_fg": 0.5,  # (1 + 0) / 2
        "lesion_hd95_fg": 187.0,  # (0 + 374) / 2
    }


def test_bad_inputs():
    with pytest.raises(InputError, match="differs from ref shape"):
        lesion_metrics(np.zeros((4, 4, 4), np.uint8), np.zeros((4, 4, 5), np.uint8), ISO)
    with pytest.raises(InputError, match="bool mask"):
        lesion_scores(np.zeros(SHAPE, np.uint8), empty(), ISO)
    with pytest.raises(InputError, match="spacing"):
        lesion_scores(empty(), empty(), (1.0, 1.0))
    with pytest.raises(InputError, match="int >= 1"):
        LesionRule(0, 50.0)
    with pytest.raises(InputError, match=">= 0"):
        LesionRule(3, -1.0)
