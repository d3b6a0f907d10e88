"""Every loss kind against a value computed by hand on a 2x2 image.

Shared target (internal codes) ``[[0, 1], [2, 3]]`` has, per region:
WT = [0, 1, 1, 1] (3 voxels), TC = [0, 1, 0, 1] (2 voxels), ET = [0, 0, 0, 1] (1 voxel);
per class: one voxel each of 0, 1, 2, 3. The Dice smoothing of 1e-5 moves values by < 1e-5.
"""

from __future__ import annotations

import math

import pytest
import torch

from trainables.data.labels import INTERNAL_BINARY, INTERNAL_BRATS
from trainables.losses import (
    BCEConfig,
    DiceCEConfig,
    PenalizedDiceConfig,
    RegionDiceConfig,
    SoftmaxDiceConfig,
    build_loss,
    output_channels,
)

TARGET = torch.tensor([[[0, 1], [2, 3]]])  # (B=1, 2, 2)
BIG = 20.0  # sigmoid(20) = 1 - 2e-9: a "certain" logit


def _regions_logits(target: torch.Tensor) -> torch.Tensor:
    """+BIG inside each BraTS region, -BIG outside: (1, 3, 2, 2)."""
    wt = target > 0
    tc = (target == 1) | (target == 3)
    et = target == 3
    return torch.stack([wt, tc, et], dim=1).float() * 2 * BIG - BIG


def _classes_logits(target: torch.Tensor, num_classes: int = 4) -> torch.Tensor:
    """+BIG on the true class, -BIG elsewhere: (1, K, 2, 2)."""
    onehot = torch.stack([target == c for c in range(num_classes)], dim=1).float()
    return onehot * 2 * BIG - BIG


def test_region_dice_at_probability_half() -> None:
    # logits 0 -> p = 0.5 everywhere (4 voxels, sum p = 2).
    # WT: 2*(0.5*3) / (2 + 3) = 0.6; TC: 2*(0.5*2) / (2 + 2) = 0.5; ET: 2*0.5 / (2 + 1) = 1/3.
    # loss = 1 - (0.6 + 0.5 + 1/3) / 3 = 0.5222...
    loss = build_loss(RegionDiceConfig(), INTERNAL_BRATS)(torch.zeros(1, 3, 2, 2), TARGET)
    assert loss.item() == pytest.approx(1 - (0.6 + 0.5 + 1 / 3) / 3, abs=1e-5)


def test_region_dice_batch_dice_pools_the_batch() -> None:
    # Sample 0 is perfect on WT; sample 1 predicts WT on 2 voxels where the truth has 1 (1x2).
    # fg scheme: per-sample Dice = [1, 2*1/(2+1)] -> loss 1 - (1 + 2/3)/2 = 1/6;
    # batch Dice = 2*(1+1) / ((1+2) + (1+1)) = 0.8 -> loss 0.2.
    target = torch.tensor([[[1, 0]], [[1, 0]]])  # (2, 1, 2)
    logits = torch.tensor([[[[BIG, -BIG]]], [[[BIG, BIG]]]])  # (2, 1, 1, 2)
    per_sample = build_loss(RegionDiceConfig(), INTERNAL_BINARY)(logits, target)
    pooled = build_loss(RegionDiceConfig(batch_dice=True), INTERNAL_BINARY)(logits, target)
    assert per_sample.item() == pytest.approx(1 / 6, abs=1e-5)
    assert pooled.item() == pytest.approx(0.2, abs=1e-5)


def test_softmax_dice_over_regions_and_classes() -> None:
    # logits 0 -> each of 4 classes p = 0.25; region probabilities WT 0.75, TC 0.5, ET 0.25.
    # regions: WT 2*2.25/(3+3) = 0.75, TC 2*1/(2+2) = 0.5, ET 2*0.25/(1+1) = 0.25 -> loss 0.5.
    # classes 1..3: each 2*0.25/(1+1) = 0.25 -> loss 0.75.
    logits = torch.zeros(1, 4, 2, 2)
    regions = build_loss(SoftmaxDiceConfig(dice_over="regions"), INTERNAL_BRATS)(logits, TARGET)
    classes = build_loss(SoftmaxDiceConfig(dice_over="classes"), INTERNAL_BRATS)(logits, TARGET)
    assert regions.item() == pytest.approx(0.5, abs=1e-5)
    assert classes.item() == pytest.approx(0.75, abs=1e-5)


def test_dice_ce_plain_squared_and_weighted() -> None:
    # CE with uniform softmax over 4 classes = ln 4. Foreground Dice (classes 1..3): plain
    # 2*0.25/(1+1) = 0.25; squared 2*0.25/(4*0.25**2 + 1) = 0.4.
    logits = torch.zeros(1, 4, 2, 2)
    plain = build_loss(DiceCEConfig(), INTERNAL_BRATS)(logits, TARGET)
    squared = build_loss(DiceCEConfig(squared_denominator=True), INTERNAL_BRATS)(logits, TARGET)
    weighted_cfg = DiceCEConfig(ce_weight=0.5, dice_weight=2.0)
    weighted = build_loss(weighted_cfg, INTERNAL_BRATS)(logits, TARGET)
    assert plain.item() == pytest.approx(math.log(4) + 0.75, abs=1e-5)
    assert squared.item() == pytest.approx(math.log(4) + 0.6, abs=1e-5)
    assert weighted.item() == pytest.approx(0.5 * math.log(4) + 2 * 0.75, abs=1e-5)


def test_penalized_dice_values_by_hand() -> None:
    # fg target [1, 0, 0, 0], prediction ≈ [1, 1, 0, 0]: TP = 1, |G| = 1, |P| = 2 (one FP).
    # score (1+p)*1 / (1 + 2p): p=1 -> 2/3, p=2 -> 3/5, p=5 -> 6/11, p=8 -> 9/17.
    target = torch.tensor([[[1, 0], [0, 0]]])
    logits = torch.tensor([[[[BIG, BIG], [-BIG, -BIG]]]])
    for penalty, score in [(1, 2 / 3), (2, 3 / 5), (5, 6 / 11), (8, 9 / 17)]:
        loss = build_loss(PenalizedDiceConfig(penalty=penalty), INTERNAL_BINARY)(logits, target)
        assert loss.item() == pytest.approx(1 - score, abs=1e-5), penalty


def test_penalized_dice_penalty_one_is_plain_dice() -> None:
    logits = torch.linspace(-3, 3, 3 * 2 * 3 * 2).reshape(2, 3, 3, 2)
    target = torch.tensor([[[0, 1], [2, 3], [3, 3]], [[0, 0], [1, 2], [2, 0]]])
    penalized = PenalizedDiceConfig(penalty=1.0, batch_dice=False)
    a = build_loss(penalized, INTERNAL_BRATS)(logits, target)
    b = build_loss(RegionDiceConfig(batch_dice=False), INTERNAL_BRATS)(logits, target)
    assert a.item() == pytest.approx(b.item(), abs=1e-6)


def test_penalty_raises_loss_with_false_positives_only_and_lowers_it_with_misses_only() -> None:
    fp_target = torch.tensor([[[1, 0], [0, 0]]])  # prediction ⊇ truth: only false positives
    fn_target = torch.tensor([[[1, 1], [1, 0]]])  # prediction ⊆ truth: only false negatives
    logits = torch.tensor([[[[BIG, BIG], [-BIG, -BIG]]]])

    def losses(target: torch.Tensor) -> list[float]:
        return [
            build_loss(PenalizedDiceConfig(penalty=p), INTERNAL_BINARY)(logits, target).item()
            for p in (1, 2, 3, 5, 8)
        ]

    fp, fn = losses(fp_target), losses(fn_target)
    assert fp == sorted(fp) and fp[0] < fp[-1]
    assert fn == sorted(fn, reverse=True) and fn[0] > fn[-1]  # misses weigh 1/(1+p)


def test_bce_values_by_hand() -> None:
    # logits 0 -> BCE ln 2 per voxel whatever the truth; pos_weight 3 on fg target
    # [1, 0, 0, 0]: (3 ln2 + 3 * ln2) / 4 = 1.5 ln 2.
    target = torch.tensor([[[1, 0], [0, 0]]])
    logits = torch.zeros(1, 1, 2, 2)
    assert build_loss(BCEConfig(), INTERNAL_BINARY)(logits, target).item() == pytest.approx(
        math.log(2), abs=1e-6
    )
    weighted = build_loss(BCEConfig(pos_weight=3.0), INTERNAL_BINARY)(logits, target)
    assert weighted.item() == pytest.approx(1.5 * math.log(2), abs=1e-6)


def test_bce_on_brats_regions() -> None:
    # logit ln 3 -> p = 0.75: positives cost -ln 0.75, negatives -ln 0.25; the three regions
    # hold 3 + 2 + 1 = 6 positives and 6 negatives -> mean (ln(4/3) + ln 4) / 2.
    logits = torch.full((1, 3, 2, 2), math.log(3))
    loss = build_loss(BCEConfig(), INTERNAL_BRATS)(logits, TARGET)
    assert loss.item() == pytest.approx((math.log(4 / 3) + math.log(4)) / 2, abs=1e-6)


@pytest.mark.parametrize(
    "cfg",
    [
        RegionDiceConfig(),
        RegionDiceConfig(batch_dice=True),
        SoftmaxDiceConfig(),
        SoftmaxDiceConfig(dice_over="classes"),
        DiceCEConfig(),
        DiceCEConfig(squared_denominator=True),
        PenalizedDiceConfig(penalty=5),
    ],
    ids=lambda c: c.kind,
)
def test_perfect_prediction_scores_zero(cfg) -> None:
    logits = _regions_logits(TARGET) if cfg.output == "regions" else _classes_logits(TARGET)
    assert logits.shape[1] == output_channels(cfg, INTERNAL_BRATS)
    loss = build_loss(cfg, INTERNAL_BRATS)(logits, TARGET)
    assert loss.item() == pytest.approx(0.0, abs=1e-5)


def test_wrong_channel_count_and_target_shape_are_named() -> None:
    loss = build_loss(RegionDiceConfig(), INTERNAL_BRATS)
    with pytest.raises(ValueError, match=r"expects \(B, 3, \*S\).*one per region wt, tc, et"):
        loss(torch.zeros(1, 4, 2, 2), TARGET)
    with pytest.raises(ValueError, match=r"target shape \(1, 2, 3\) does not match"):
        loss(torch.zeros(1, 3, 2, 2), torch.zeros(1, 2, 3, dtype=torch.int64))
