"""Backward passes of every loss in 2-D and 3-D, in float32 and under CPU bf16 autocast."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from trainables.data.labels import INTERNAL_BINARY, INTERNAL_BRATS, LabelScheme
from trainables.losses import (
    BCEConfig,
    DiceCEConfig,
    PenalizedDiceConfig,
    RegionDiceConfig,
    SoftmaxDiceConfig,
    build_loss,
    output_channels,
)

CONFIGS = [
    RegionDiceConfig(),
    SoftmaxDiceConfig(),
    SoftmaxDiceConfig(dice_over="classes"),
    DiceCEConfig(),
    DiceCEConfig(squared_denominator=True),
    PenalizedDiceConfig(penalty=5),
    BCEConfig(pos_weight=2.0),
]


def _conv_and_batch(dims: int, out_channels: int, scheme: LabelScheme):
    """A 1x1 conv head (so gradients reach real parameters), an input and a random target."""
    gen = torch.Generator().manual_seed(dims)
    conv_cls = nn.Conv2d if dims == 2 else nn.Conv3d
    conv = conv_cls(2, out_channels, kernel_size=1)
    shape = (4, 4) if dims == 2 else (4, 4, 2)
    images = torch.randn(2, 2, *shape, generator=gen)
    target = torch.randint(0, scheme.num_classes, (2, *shape), generator=gen)
    return conv, images, target


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: c.kind)
@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("scheme", [INTERNAL_BRATS, INTERNAL_BINARY], ids=lambda s: s.name)
def test_gradients_are_finite(cfg, dims: int, scheme: LabelScheme) -> None:
    conv, images, target = _conv_and_batch(dims, output_channels(cfg, scheme), scheme)
    loss = build_loss(cfg, scheme)(conv(images), target)
    loss.backward()
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert torch.isfinite(conv.weight.grad).all() and conv.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: c.kind)
def test_bf16_autocast_computes_the_loss_in_float32(cfg) -> None:
    conv, images, target = _conv_and_batch(3, output_channels(cfg, INTERNAL_BRATS), INTERNAL_BRATS)
    loss_fn = build_loss(cfg, INTERNAL_BRATS)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = conv(images)
        loss = loss_fn(logits, target)
    assert logits.dtype == torch.bfloat16  # autocast really was on for the model
    assert loss.dtype == torch.float32
    # same value as float32 on the bf16-rounded logits: the loss itself adds no bf16 rounding
    reference = loss_fn(logits.detach().float(), target)
    assert loss.item() == pytest.approx(reference.item(), abs=1e-6)
    loss.backward()
    assert torch.isfinite(conv.weight.grad).all()


def test_deep_supervision_list_backpropagates_to_every_output() -> None:
    outputs = [torch.randn(1, 3, 8, 8, 4, requires_grad=True)]
    outputs += [torch.randn(1, 3, 4, 4, 2, requires_grad=True)]
    target = torch.randint(0, 4, (1, 8, 8, 4))
    build_loss(RegionDiceConfig(), INTERNAL_BRATS)(outputs, target).backward()
    for output in outputs:
        assert output.grad is not None and torch.isfinite(output.grad).all()
        assert output.grad.abs().sum() > 0
