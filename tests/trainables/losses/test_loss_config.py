"""Loss configs: discriminated union, validation messages, output channels."""

from __future__ import annotations

import pytest

from trainables.config import Frozen, validate_config
from trainables.data.labels import INTERNAL_BINARY, INTERNAL_BRATS
from trainables.errors import InputError
from trainables.losses import (
    BCEConfig,
    DiceCEConfig,
    LossConfig,
    PenalizedDiceConfig,
    RegionDiceConfig,
    SoftmaxDiceConfig,
    output_channels,
)


class _Holder(Frozen):
    loss: LossConfig


def _parse(data: dict) -> object:
    return validate_config(_Holder, {"loss": data}, "trial.yaml").loss


def test_kind_selects_the_variant_with_paper_defaults() -> None:
    dice_ce = _parse({"kind": "dice_ce", "squared_denominator": True})
    assert isinstance(dice_ce, DiceCEConfig)
    assert (dice_ce.ce_weight, dice_ce.dice_weight, dice_ce.smooth) == (1.0, 1.0, 1e-5)
    assert dice_ce.batch_dice is True  # nnU-Net 3-D
    assert isinstance(_parse({"kind": "penalized_dice", "penalty": 5}), PenalizedDiceConfig)
    assert _parse({"kind": "bce"}).pos_weight is None


@pytest.mark.parametrize(
    ("cfg", "output", "brats", "binary"),
    [
        (RegionDiceConfig(), "regions", 3, 1),
        (SoftmaxDiceConfig(), "classes", 4, 2),
        (DiceCEConfig(), "classes", 4, 2),
        (PenalizedDiceConfig(), "regions", 3, 1),
        (BCEConfig(), "regions", 3, 1),
    ],
    ids=lambda v: getattr(v, "kind", str(v)),
)
def test_output_and_channels(cfg, output: str, brats: int, binary: int) -> None:
    assert cfg.output == output
    assert output_channels(cfg, INTERNAL_BRATS) == brats
    assert output_channels(cfg, INTERNAL_BINARY) == binary


def test_penalty_below_one_is_refused() -> None:
    with pytest.raises(InputError) as err:
        _parse({"kind": "penalized_dice", "penalty": 0.5})
    assert "trial.yaml" in str(err.value)
    assert "loss.penalty: Input should be greater than or equal to 1 (got 0.5)" in str(err.value)


def test_unknown_kind_and_key_are_named() -> None:
    with pytest.raises(InputError, match=r"loss\.kind: 'dice_cee' is not one of .*'dice_ce'"):
        _parse({"kind": "dice_cee"})
    with pytest.raises(InputError, match=r"loss\.squared: unknown key .*squared_denominator"):
        _parse({"kind": "dice_ce", "squared": True})


def test_bad_weights_are_refused() -> None:
    with pytest.raises(InputError, match=r"loss\.ce_weight: Input should be greater than or equal"):
        _parse({"kind": "dice_ce", "ce_weight": -1})
    with pytest.raises(InputError, match="ce_weight and dice_weight are both 0"):
        _parse({"kind": "dice_ce", "ce_weight": 0, "dice_weight": 0})
    with pytest.raises(InputError, match=r"loss\.pos_weight: Input should be greater than 0"):
        _parse({"kind": "bce", "pos_weight": 0})


def test_output_is_not_a_settable_field() -> None:
    with pytest.raises(InputError, match=r"loss\.output: unknown key"):
        _parse({"kind": "region_dice", "output": "classes"})
