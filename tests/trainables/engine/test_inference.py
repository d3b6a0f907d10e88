"""Sliding-window inference: coverage, weighting, padding and the 2-D slice path."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from trainables.engine.inference import gaussian_importance, sliding_window_logits, window_starts


def test_window_starts_cover_the_axis_with_the_requested_overlap() -> None:
    starts = window_starts(20, 8, 0.5)
    assert starts[0] == 0 and starts[-1] == 20 - 8
    assert all(b - a <= 4 for a, b in itertools.pairwise(starts))
    assert window_starts(9, 16, 0.5) == [0]  # smaller than the patch: one padded window


def test_gaussian_importance_peaks_in_the_centre_and_has_no_zeros() -> None:
    weight = gaussian_importance((9, 9, 9), torch.device("cpu"))
    assert weight.shape == (9, 9, 9)
    assert weight[4, 4, 4] == weight.max() == 1.0
    assert weight.min() > 0


@pytest.mark.parametrize("gaussian", [True, False])
def test_pointwise_model_is_reproduced_exactly(gaussian: bool) -> None:
    """A 1x1x1 conv has no context, so every window weighting must give the direct output."""
    torch.manual_seed(0)
    net = nn.Conv3d(2, 3, 1).eval()
    image = torch.randn(2, 20, 17, 9)
    out = sliding_window_logits(net, image, (8, 8, 16), overlap=0.5, gaussian=gaussian)
    with torch.no_grad():
        expected = net(image[None])[0]
    assert out.shape == (3, 20, 17, 9)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_two_d_model_predicts_every_slice_of_a_volume() -> None:
    torch.manual_seed(0)
    net = nn.Conv2d(2, 4, 1).eval()
    volume = torch.randn(2, 12, 10, 5)
    out = sliding_window_logits(net, volume, (8, 8), overlap=0.5)
    with torch.no_grad():
        expected = net(volume.permute(3, 0, 1, 2)).permute(1, 2, 3, 0)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_a_patch_that_does_not_fit_the_image_is_rejected() -> None:
    with pytest.raises(
        ValueError, match=r"patch \[8\] does not fit an image of shape \[2, 4, 4, 4\]"
    ):
        sliding_window_logits(nn.Identity(), torch.zeros(2, 4, 4, 4), (8,))
