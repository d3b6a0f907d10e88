"""The deep-supervision wrapper: weights 1/2**i normalised, nearest-neighbour target pyramid."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from trainables.data.labels import INTERNAL_BRATS
from trainables.losses import (
    DeepSupervisionLoss,
    RegionDiceConfig,
    RegionDiceLoss,
    build_loss,
    deep_supervision_weights,
)
from trainables.losses.deep_supervision import downsample_labels


class _LevelLoss(nn.Module):
    """Scores output ``i`` as ``i + 1`` (its first logit is the level) and records targets."""

    def __init__(self) -> None:
        super().__init__()
        self.targets: list[Tensor] = []

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        self.targets.append(target)
        return logits.flatten()[0] + 1


def test_weights_halve_per_level_and_sum_to_one() -> None:
    assert deep_supervision_weights(1) == [1.0]
    assert deep_supervision_weights(3) == pytest.approx([4 / 7, 2 / 7, 1 / 7])
    assert sum(deep_supervision_weights(5)) == pytest.approx(1.0)


def test_three_outputs_weighted_4_2_1_over_7_with_downsampled_targets() -> None:
    base = _LevelLoss()
    target = torch.randint(0, 4, (2, 8, 8, 4))
    logits = [
        torch.full((2, 3, *size), float(level))
        for level, size in enumerate([(8, 8, 4), (4, 4, 2), (2, 2, 1)])
    ]
    loss = DeepSupervisionLoss(base)(logits, target)
    # levels score 1, 2, 3: 4/7 * 1 + 2/7 * 2 + 1/7 * 3 = 11/7
    assert loss.item() == pytest.approx(11 / 7)
    assert [tuple(t.shape) for t in base.targets] == [(2, 8, 8, 4), (2, 4, 4, 2), (2, 2, 2, 1)]
    assert all(t.dtype == torch.int64 for t in base.targets)
    assert base.targets[0] is target  # full resolution is not resampled


def test_nearest_downsampling_picks_every_other_voxel() -> None:
    target = torch.arange(16).reshape(1, 4, 4)  # codes 0..15 so each voxel is identifiable
    small = downsample_labels(target, (2, 2))
    # "nearest" samples source index floor(i * 2): rows/cols 0 and 2
    assert small.tolist() == [[[0, 2], [8, 10]]]
    anisotropic = downsample_labels(torch.arange(8).reshape(1, 2, 2, 2), (1, 1, 2))
    assert anisotropic.tolist() == [[[[0, 1]]]]


def test_single_tensor_passes_straight_through() -> None:
    base = RegionDiceLoss(INTERNAL_BRATS, smooth=1e-5, batch_dice=False)
    logits = torch.randn(1, 3, 4, 4)
    target = torch.randint(0, 4, (1, 4, 4))
    assert DeepSupervisionLoss(base)(logits, target).item() == pytest.approx(
        base(logits, target).item()
    )


def test_real_loss_on_a_pyramid_matches_the_weighted_sum() -> None:
    torch.manual_seed(0)
    target = torch.randint(0, 4, (1, 4, 4))
    logits = [torch.randn(1, 3, 4, 4), torch.randn(1, 3, 2, 2)]
    base = RegionDiceLoss(INTERNAL_BRATS, smooth=1e-5, batch_dice=False)
    expected = 2 / 3 * base(logits[0], target) + 1 / 3 * base(logits[1], target[:, ::2, ::2])
    got = build_loss(RegionDiceConfig(), INTERNAL_BRATS)(logits, target)
    assert got.item() == pytest.approx(expected.item(), abs=1e-6)


def test_empty_list_is_refused() -> None:
    with pytest.raises(ValueError, match="empty list of logits"):
        DeepSupervisionLoss(_LevelLoss())([], torch.zeros(1, 2, 2, dtype=torch.int64))
