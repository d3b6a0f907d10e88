"""``dice_bce`` (nnU-Net v2's region-based BraTS loss) by hand; nnU-Net's deep-supervision weights.

Shared target (internal codes) ``[[0, 1], [2, 3]]`` has, per region:
WT = [0, 1, 1, 1] (3 voxels), TC = [0, 1, 0, 1] (2 voxels), ET = [0, 0, 0, 1] (1 voxel).
The Dice smoothing of 1e-5 moves values by < 1e-5.
"""

from __future__ import annotations

import math

import pytest
import torch

from trainables.config import Frozen, validate_config
from trainables.data.labels import INTERNAL_BINARY, INTERNAL_BRATS
from trainables.errors import InputError
from trainables.losses import (
    DiceBCEConfig,
    DiceBCELoss,
    LossConfig,
    build_loss,
    deep_supervision_weights,
    output_channels,
)
from trainables.models import PlainUNetConfig, build_model

TARGET = torch.tensor([[[0, 1], [2, 3]]])  # (B=1, 2, 2)
BIG = 20.0  # sigmoid(20) = 1 - 2e-9: a "certain" logit
DICE_AT_HALF = 1 - (0.6 + 0.5 + 1 / 3) / 3  # see test_dice_bce_at_probability_half


class _Holder(Frozen):
    loss: LossConfig


def _parse(data: dict) -> object:
    return validate_config(_Holder, {"loss": data}, "trial.yaml").loss


def test_config_defaults_follow_nnunet_and_select_region_outputs() -> None:
    cfg = _parse({"kind": "dice_bce"})
    assert isinstance(cfg, DiceBCEConfig)
    assert (cfg.bce_weight, cfg.dice_weight, cfg.smooth, cfg.batch_dice) == (1.0, 1.0, 1e-5, True)
    assert cfg.output == "regions"
    assert output_channels(cfg, INTERNAL_BRATS) == 3  # WT, TC, ET
    assert output_channels(cfg, INTERNAL_BINARY) == 1
    assert isinstance(build_loss(cfg, INTERNAL_BRATS).base, DiceBCELoss)


def test_bad_weights_are_refused_with_the_field_named() -> None:
    with pytest.raises(InputError, match="bce_weight and dice_weight are both 0"):
        _parse({"kind": "dice_bce", "bce_weight": 0, "dice_weight": 0})
    with pytest.raises(InputError, match=r"loss\.bce_weight: Input should be greater than or"):
        _parse({"kind": "dice_bce", "bce_weight": -1})


def test_dice_bce_at_probability_half() -> None:
    # logits 0 -> p = 0.5 everywhere: BCE = ln 2 per voxel and region whatever the truth.
    # Dice (sum p = 2 per region): WT 2*1.5/(2+3) = 0.6, TC 2*1/(2+2) = 0.5, ET 2*0.5/(2+1) = 1/3.
    loss = build_loss(DiceBCEConfig(), INTERNAL_BRATS)(torch.zeros(1, 3, 2, 2), TARGET)
    assert loss.item() == pytest.approx(math.log(2) + DICE_AT_HALF, abs=1e-5)


def test_dice_bce_weights_scale_each_term() -> None:
    cfg = DiceBCEConfig(bce_weight=0.5, dice_weight=2.0)
    loss = build_loss(cfg, INTERNAL_BRATS)(torch.zeros(1, 3, 2, 2), TARGET)
    assert loss.item() == pytest.approx(0.5 * math.log(2) + 2 * DICE_AT_HALF, abs=1e-5)
    bce_only = build_loss(DiceBCEConfig(dice_weight=0.0), INTERNAL_BRATS)
    assert bce_only(torch.zeros(1, 3, 2, 2), TARGET).item() == pytest.approx(math.log(2))


def test_dice_bce_of_a_certain_correct_prediction_is_zero() -> None:
    wt, tc, et = TARGET > 0, (TARGET == 1) | (TARGET == 3), TARGET == 3
    logits = torch.stack([wt, tc, et], dim=1).float() * 2 * BIG - BIG  # (1, 3, 2, 2)
    loss = build_loss(DiceBCEConfig(), INTERNAL_BRATS)(logits, TARGET)
    assert loss.item() == pytest.approx(0.0, abs=1e-5)


def test_dice_bce_batch_dice_pools_the_batch() -> None:
    # fg scheme, target [1, 0] in both samples; sample 1 also predicts the second voxel (one
    # certain false positive: BCE log(1 + e^20) ≈ 20 on 1 of 4 voxels -> mean BCE 5).
    # per-sample Dice [1, 2/3] -> 1/6; batch Dice 2*2/(3+2) = 0.8 -> 0.2.
    target = torch.tensor([[[1, 0]], [[1, 0]]])  # (2, 1, 2)
    logits = torch.tensor([[[[BIG, -BIG]]], [[[BIG, BIG]]]])  # (2, 1, 1, 2)
    pooled = build_loss(DiceBCEConfig(), INTERNAL_BINARY)(logits, target)
    per_sample = build_loss(DiceBCEConfig(batch_dice=False), INTERNAL_BINARY)(logits, target)
    assert pooled.item() == pytest.approx(5.0 + 0.2, abs=1e-5)
    assert per_sample.item() == pytest.approx(5.0 + 1 / 6, abs=1e-5)


def test_dice_bce_computes_in_float32_under_autocast() -> None:
    logits = torch.zeros(1, 3, 2, 2, dtype=torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = build_loss(DiceBCEConfig(), INTERNAL_BRATS)(logits, TARGET)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(math.log(2) + DICE_AT_HALF, abs=1e-5)


def _nnunet_weights(num_stages: int) -> list[float]:
    """nnU-Net v2's weights, as ``nnUNetTrainer._build_loss`` computes them: one scale per
    decoder output (``num_stages - 1``), ``1 / 2**i``, the lowest resolution set to 0, then
    normalised; the wrapper skips zero-weight outputs, so only the non-zero ones are kept."""
    weights = [1 / 2**i for i in range(num_stages - 1)]
    weights[-1] = 0.0
    total = sum(weights)
    return [w / total for w in weights if w != 0]


def test_plain_unet_deep_supervision_weights_equal_nnunet_for_six_stages() -> None:
    # nnU-Net, 6 stages: 5 decoder outputs weighted 1, 1/2, 1/4, 1/8, 0 over 1.875.
    expected = [1 / 1.875, 0.5 / 1.875, 0.25 / 1.875, 0.125 / 1.875]
    assert _nnunet_weights(6) == pytest.approx(expected)
    cfg = PlainUNetConfig()  # the nnU-Net BraTS defaults: 6 stages, 32..320
    assert cfg.num_stages == 6 and cfg.deep_supervision_outputs == 4
    assert deep_supervision_weights(cfg.deep_supervision_outputs) == pytest.approx(expected)
    for stages in (3, 4, 5, 7):
        outputs = PlainUNetConfig(num_stages=stages).deep_supervision_outputs
        assert deep_supervision_weights(outputs) == pytest.approx(_nnunet_weights(stages))


def test_six_stage_plain_unet_returns_the_four_weighted_outputs() -> None:
    cfg = PlainUNetConfig(base_filters=2, max_filters=4)  # 6 stages, toy widths
    model = build_model(cfg, in_channels=4, out_channels=3).train()
    outputs = model(torch.randn(1, 4, 64, 32, 32))  # total stride 32: bottleneck 2x1x1
    assert [tuple(o.shape) for o in outputs] == [
        (1, 3, 64, 32, 32),
        (1, 3, 32, 16, 16),
        (1, 3, 16, 8, 8),
        (1, 3, 8, 4, 4),
    ]
    label = torch.randint(0, 4, (1, 64, 32, 32))
    loss = build_loss(DiceBCEConfig(), INTERNAL_BRATS)(outputs, label)
    loss.backward()
    assert torch.isfinite(loss) and loss.item() > 0
