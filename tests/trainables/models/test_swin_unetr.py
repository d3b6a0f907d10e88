"""``model.kind: swin_unetr``: MONAI's SwinUNETR behind build_model, its config rules and errors."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from trainables.config import Frozen, validate_config
from trainables.config.trial import parse_trial_config
from trainables.errors import InputError
from trainables.models import (
    ModelConfig,
    SwinUNETRConfig,
    build_model,
    count_parameters,
    describe,
)

TOY = {"kind": "swin_unetr", "feature_size": 12}


class _Trial(Frozen):
    model: ModelConfig


def _model_error(model: dict[str, Any]) -> str:
    with pytest.raises(InputError) as info:
        validate_config(_Trial, {"model": model}, "trial.yaml")
    return str(info.value)


def _trial(model: dict[str, Any], patch: list[int]) -> dict[str, Any]:
    return {
        "model": model,
        "sampling": {"patch_size": patch},
        "loss": {"kind": "region_dice"},
        "optimizer": {"kind": "adamw"},
    }


def test_defaults_are_monais_brats_network_and_the_stride_is_32() -> None:
    cfg = validate_config(_Trial, {"model": {"kind": "swin_unetr"}}).model
    assert isinstance(cfg, SwinUNETRConfig)
    assert (cfg.feature_size, cfg.depths, cfg.num_heads) == (48, (2, 2, 2, 2), (3, 6, 12, 24))
    assert cfg.divisor() == (32, 32, 32) and cfg.input_dims == 3
    assert SwinUNETRConfig(spatial_dims=2).divisor() == (32, 32)
    assert cfg.stage_filters == (48, 48, 96, 192, 384, 768)  # paper 003 Table 3: 4^3 x 768
    # MONAI's BraTS SwinUNETR has 62.2 M parameters; paper 003's feature size 36 about 35 M.
    assert count_parameters(build_model(cfg, 4, 3)) == 62_191_941
    assert count_parameters(build_model(SwinUNETRConfig(feature_size=36), 4, 3)) == 35_076_477


@pytest.mark.parametrize(("dims", "size"), [(2, 64), (3, 64)])
def test_builds_and_maps_channels_to_logits_of_the_input_size(dims: int, size: int) -> None:
    model = build_model(SwinUNETRConfig(spatial_dims=dims, feature_size=12), 4, 3).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 4, *(size,) * dims))
    assert isinstance(out, torch.Tensor)  # one output: no deep supervision list
    assert out.shape == (1, 3, *(size,) * dims) and torch.isfinite(out).all()


def test_config_fields_reach_the_monai_network() -> None:
    cfg = SwinUNETRConfig(
        spatial_dims=2, feature_size=24, depths=(1, 1, 2, 1), num_heads=(2, 4, 4, 8),
        window_size=4, norm_name="batch", use_checkpoint=True, dropout_path_rate=0.1,
    )  # fmt: skip
    model = build_model(cfg, 2, 5)
    vit = model.swinViT
    assert [len(layer[0].blocks) for layer in (vit.layers1, vit.layers2, vit.layers3)] == [1, 1, 2]
    assert vit.layers1[0].blocks[0].attn.num_heads == 2 and vit.window_size == (4, 4)
    assert vit.layers1[0].blocks[0].use_checkpoint
    assert isinstance(model.encoder1.layer.norm1, torch.nn.BatchNorm2d)
    assert model.out.conv.conv.out_channels == 5
    line = describe(cfg)
    assert line.startswith("swin_unetr 2-D feature size 24, depths 1-1-2-1, heads 2-4-4-8")
    assert "gradient checkpointing" in line


def test_gradient_checkpointing_keeps_outputs_and_gradients() -> None:
    torch.manual_seed(0)
    plain = build_model(SwinUNETRConfig(spatial_dims=2, feature_size=12), 4, 3)
    ckpt = build_model(SwinUNETRConfig(spatial_dims=2, feature_size=12, use_checkpoint=True), 4, 3)
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(2, 4, 64, 64)
    grads = []
    for model in (plain, ckpt):
        out = model(x)
        out.square().mean().backward()
        grads.append((out.detach(), model.swinViT.patch_embed.proj.weight.grad.clone()))
    torch.testing.assert_close(grads[0][0], grads[1][0])
    torch.testing.assert_close(grads[0][1], grads[1][1])


_ERRORS: list[tuple[dict[str, Any], str]] = [
    (
        {**TOY, "feature_size": 40},
        "model.feature_size: feature_size must be divisible by 12 (SwinUNETR), got 40; "
        "try 36 or 48",
    ),
    ({**TOY, "feature_size": 6}, "model.feature_size: Input should be greater than or equal to 12"),
    (
        {**TOY, "num_heads": [5, 6, 12, 24]},
        "num_heads [5, 6, 12, 24] must divide the stage widths [12, 24, 48, 96] "
        "(feature_size * 2**i); not ['12/5']",
    ),
    ({**TOY, "depths": [2, 2, 2]}, "model.depths"),
    ({**TOY, "depths": [2, 0, 2, 2]}, "depths must be strictly positive, got [2, 0, 2, 2]"),
    ({**TOY, "norm_name": "group"}, "model.norm_name: 'group' is not one of instance, batch"),
    ({"kind": "swin_unter"}, "model.kind: 'swin_unter' is not one of"),
    ({"kind": "swin_unter"}, "(did you mean 'swin_unetr'?)"),
]


@pytest.mark.parametrize(("model", "expected"), _ERRORS)
def test_invalid_settings_name_the_field(model: dict[str, Any], expected: str) -> None:
    message = _model_error(model)
    assert message.startswith("trial.yaml: invalid config")
    assert expected in message


def test_deep_supervision_is_not_offered_and_the_allowed_keys_are_listed() -> None:
    message = _model_error({**TOY, "deep_supervision": 2})
    assert "model.deep_supervision: unknown key (allowed: attn_drop_rate, depths, " in message
    assert "feature_size, kind, norm_name, num_heads, spatial_dims, use_checkpoint" in message


def test_patch_must_be_divisible_by_32_at_config_time() -> None:
    with pytest.raises(InputError) as info:
        parse_trial_config(_trial(TOY, [128, 128, 112]), source="trial.yaml")
    assert (
        "sampling.patch_size: [128, 128, 112] must be divisible by [32, 32, 32] "
        "(the total stride of model 'swin_unetr')" in str(info.value)
    )
    assert parse_trial_config(_trial(TOY, [128, 128, 128])).model.kind == "swin_unetr"
    with pytest.raises(InputError, match="has 3 axes but model 'swin_unetr' takes 2-D input"):
        parse_trial_config(_trial({**TOY, "spatial_dims": 2}, [64, 64, 64]))
