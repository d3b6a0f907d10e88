"""Model configs: defaults from the papers, derived filters, divisors and error messages."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from trainables.config import Frozen, validate_config
from trainables.errors import InputError
from trainables.models import (
    AttentionUNetConfig,
    CLSTMConfig,
    ModelConfig,
    PlainUNetConfig,
    ResidualUNetConfig,
    UNetConfig,
)


class _Trial(Frozen):
    """The shape a trial config has: the model under the ``model`` key."""

    model: ModelConfig


def _error(model: dict[str, Any]) -> str:
    with pytest.raises(InputError) as info:
        validate_config(_Trial, {"model": model}, "trial.yaml")
    return str(info.value)


def test_kind_selects_the_variant() -> None:
    trial = validate_config(_Trial, {"model": {"kind": "plain_unet", "num_stages": 5}})
    assert isinstance(trial.model, PlainUNetConfig)
    assert trial.model.num_stages == 5


def test_paper_defaults() -> None:
    fm = AttentionUNetConfig()
    assert (fm.filters, fm.deep_supervision, fm.bottleneck_depth) == ((32, 64, 128, 256, 512), 2, 2)
    assert fm.negative_slope == 0.02 and fm.attention
    assert PlainUNetConfig().filters == (32, 64, 128, 256, 320, 320)
    assert UNetConfig().filters == (64, 128, 256, 512, 1024)
    assert UNetConfig(spatial_dims=3).filters == (8, 16, 32, 64)
    assert UNetConfig(spatial_dims=3, filters=(4, 8)).filters == (4, 8)


def test_plain_unet_filters_are_capped_at_max_filters() -> None:
    cfg = PlainUNetConfig(base_filters=32, num_stages=8, max_filters=320)
    assert cfg.filters == (32, 64, 128, 256, 320, 320, 320, 320)
    assert max(PlainUNetConfig(base_filters=4, max_filters=10).filters) == 10


def test_plain_unet_deep_supervision_outputs_follow_nnunet() -> None:
    # nnU-Net weights every decoder level but the lowest: all resolutions but the two lowest.
    assert PlainUNetConfig(num_stages=6).deep_supervision_outputs == 4
    assert PlainUNetConfig(num_stages=3).deep_supervision_outputs == 1
    assert PlainUNetConfig(num_stages=6, deep_supervision=False).deep_supervision_outputs == 1


def test_clstm_inner_unet_defaults_and_overrides() -> None:
    cfg = CLSTMConfig.model_validate({"kind": "clstm", "unet": {"filters": [4, 8, 16]}})
    assert cfg.unet.spatial_dims == 2
    assert cfg.unet.upsample == "nearest"  # paper 004, even when the user gives only filters
    assert cfg.unet.filters == (4, 8, 16)
    assert CLSTMConfig().unet.norm == "batch"


def test_input_dims_and_divisor() -> None:
    assert ResidualUNetConfig(filters=(8, 16, 32, 64)).divisor() == (8, 8, 8)
    assert UNetConfig().divisor() == (16, 16)
    assert UNetConfig().input_dims == 2
    assert PlainUNetConfig().divisor() == (32, 32, 32)
    assert PlainUNetConfig(spatial_dims=2, num_stages=4).divisor() == (8, 8)
    assert AttentionUNetConfig().divisor() == (16, 16, 16)
    clstm = CLSTMConfig(unet=UNetConfig(filters=(4, 8, 16, 32)))
    assert clstm.input_dims == 3
    assert clstm.divisor() == (8, 8, 1)


def test_configs_are_frozen() -> None:
    cfg = AttentionUNetConfig()
    with pytest.raises(ValidationError):
        cfg.deep_supervision = 3  # type: ignore[misc]


_ERRORS: list[tuple[dict[str, Any], str]] = [
    (
        {"kind": "unet", "filters": [4, 0, 8]},
        "model.filters: filters must be strictly positive, got (4, 0, 8)",
    ),
    ({"kind": "residual_unet", "filters": [8]}, "filters needs at least 2 stages"),
    ({"kind": "attention_unet", "filters": [4, -8]}, "model.filters: filters must be strictly"),
    (
        {"kind": "attention_unet", "filters": [4, 8, 16], "deep_supervision": 2},
        "deep_supervision=2 needs more decoder levels: filters (4, 8, 16) give 2, so at most 1",
    ),
    (
        {"kind": "attention_unet", "deep_supervision": 4},
        "model.deep_supervision: deep_supervision must be between 0 and 3",
    ),
    (
        {"kind": "attention_unet", "bottleneck_depth": 5},
        "model.bottleneck_depth: bottleneck_depth must be between 0 and 4",
    ),
    ({"kind": "plain_unet", "num_stages": 1}, "model.num_stages: num_stages must be at least 2"),
    ({"kind": "plain_unet", "base_filters": 0}, "base_filters must be strictly positive, got 0"),
    ({"kind": "plain_unet", "max_filters": -1}, "max_filters must be strictly positive, got -1"),
    (
        {"kind": "residual_unet", "norm": "group", "filters": [8, 12]},
        "group_norm_groups=8 must divide every entry of filters (8, 12) (not [12])",
    ),
    ({"kind": "unet", "norm": "group", "group_norm_groups": 3, "filters": [6, 8]}, "not [8]"),
    (
        {"kind": "clstm", "unet": {"spatial_dims": 3}},
        "model.unet: unet.spatial_dims must be 2",
    ),
    ({"kind": "clstm", "hidden_channels": 0}, "hidden_channels must be strictly positive"),
    ({"kind": "attn_unet"}, "model.kind: 'attn_unet' is not one of"),
    (
        {"kind": "residual_unet", "norm": "grup"},
        "model.norm: 'grup' is not one of batch, group, instance (did you mean 'group'?)",
    ),
    ({"kind": "attention_unet", "deep_supervison": 1}, "model.deep_supervison: unknown key"),
]


@pytest.mark.parametrize(("model", "expected"), _ERRORS)
def test_validation_errors_name_the_field(model: dict[str, Any], expected: str) -> None:
    message = _error(model)
    assert message.startswith("trial.yaml: invalid config")
    assert expected in message


def test_group_norm_check_only_applies_to_group_norm() -> None:
    assert ResidualUNetConfig(norm="batch", filters=(6, 9)).filters == (6, 9)
