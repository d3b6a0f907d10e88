"""Dimension-agnostic blocks and the attention gate, in 2-D and 3-D."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from trainables.models.attention import AttentionGate
from trainables.models.blocks import (
    ConvNormAct,
    ConvOps,
    ResidualBlock,
    StackedConvs,
    conv_nd,
    init_weights,
    make_block,
    max_pool_nd,
    norm_nd,
    transposed_conv_nd,
)


def _x(dims: int, channels: int = 4, size: int = 8, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, channels, *([size] * dims))


@pytest.mark.parametrize("dims", [2, 3])
def test_factories_pick_the_layer_for_the_dimensionality(dims: int) -> None:
    assert isinstance(conv_nd(dims, 2, 4), nn.Conv2d if dims == 2 else nn.Conv3d)
    assert isinstance(norm_nd("batch", dims, 4), nn.BatchNorm2d if dims == 2 else nn.BatchNorm3d)
    instance = norm_nd("instance", dims, 4)
    assert isinstance(instance, nn.InstanceNorm2d if dims == 2 else nn.InstanceNorm3d)
    assert instance.affine and not instance.track_running_stats
    assert isinstance(norm_nd("group", dims, 8, groups=4), nn.GroupNorm)
    assert isinstance(norm_nd("none", dims, 4), nn.Identity)
    x = _x(dims)
    assert conv_nd(dims, 4, 6)(x).shape == (2, 6, *([8] * dims))
    assert conv_nd(dims, 4, 6, stride=2)(x).shape == (2, 6, *([4] * dims))
    assert transposed_conv_nd(dims, 4, 3)(x).shape == (2, 3, *([16] * dims))
    assert max_pool_nd(dims)(x).shape == (2, 4, *([4] * dims))


def test_bad_norm_arguments_raise() -> None:
    with pytest.raises(ValueError, match="12 channels are not divisible by 8 groups"):
        norm_nd("group", 3, 12, groups=8)
    with pytest.raises(ValueError, match="spatial_dims must be 2 or 3, got 1"):
        conv_nd(1, 2, 2)


def test_conv_before_norm_has_no_bias_unless_there_is_no_norm() -> None:
    assert ConvOps(3, "instance").conv(2, 4).bias is None  # the norm would cancel it
    assert ConvOps(3, "none").conv(2, 4).bias is not None


@pytest.mark.parametrize("dims", [2, 3])
def test_conv_blocks_shapes(dims: int) -> None:
    ops = ConvOps(dims, "batch", 0.01)
    x = _x(dims)
    assert ConvNormAct(ops, 4, 6)(x).shape == (2, 6, *([8] * dims))
    stacked = StackedConvs(ops, 4, 6, n=3, stride=2)
    assert len(stacked) == 3
    assert stacked(x).shape == (2, 6, *([4] * dims))


@pytest.mark.parametrize("dims", [2, 3])
def test_residual_block_adds_the_shortcut(dims: int) -> None:
    ops = ConvOps(dims, "group", 0.0, groups=2)
    same = ResidualBlock(ops, 4, 4)
    assert isinstance(same.shortcut, nn.Identity)
    nn.init.zeros_(same.conv2[1].weight)  # silence the conv branch: only the shortcut is left
    x = _x(dims)
    assert torch.allclose(same(x), torch.relu(x))
    projected = ResidualBlock(ops, 4, 6, stride=2)
    assert not isinstance(projected.shortcut, nn.Identity)
    assert projected(x).shape == (2, 6, *([4] * dims))


def test_init_weights_is_kaiming_normal_with_the_leaky_slope() -> None:
    torch.manual_seed(0)
    conv = nn.Conv3d(32, 64, 3)
    init_weights(conv, negative_slope=0.02)
    fan_in = 32 * 27
    expected = math.sqrt(2.0 / (1 + 0.02**2)) / math.sqrt(fan_in)
    assert conv.weight.std().item() == pytest.approx(expected, rel=0.05)
    assert torch.count_nonzero(conv.bias) == 0


@pytest.mark.parametrize("dims", [2, 3])
def test_attention_gate_shapes_and_coefficients(dims: int) -> None:
    torch.manual_seed(0)
    gate = AttentionGate(ConvOps(dims, "instance", 0.02), skip_channels=4, gate_channels=8)
    skip, g = _x(dims, 4, 8), _x(dims, 8, 4)
    alpha = gate.coefficients(skip, g)
    assert alpha.shape == (2, 1, *([8] * dims))
    assert alpha.min().item() >= 0 and alpha.max().item() <= 1
    assert gate(skip, g).shape == skip.shape


def test_attention_gate_is_driven_by_the_gating_signal() -> None:
    torch.manual_seed(0)
    gate = AttentionGate(ConvOps(3, "instance", 0.02), skip_channels=4, gate_channels=8)
    skip = _x(3, 4, 8)
    first = gate.coefficients(skip, _x(3, 8, 4))
    second = gate.coefficients(skip, _x(3, 8, 4))
    assert not torch.allclose(first, second)


def test_blocks_run_under_autocast() -> None:
    ops = ConvOps(3, "instance", 0.02)
    block, gate = ResidualBlock(ops, 4, 4), AttentionGate(ops, 4, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = gate(block(_x(3)), _x(3, 8, 4))
    assert out.dtype == torch.bfloat16
    assert torch.isfinite(out.float()).all()


def test_an_unknown_block_kind_raises() -> None:
    with pytest.raises(ValueError, match=r"unknown block kind 'dense' \(plain, residual\)"):
        make_block("dense", ConvOps(3, "instance", 0.01), 2, 4)  # type: ignore[arg-type]
