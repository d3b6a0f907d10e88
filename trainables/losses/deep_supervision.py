"""The one place that turns a deep-supervision list of logits into a single loss.

nnU-Net (paper 002) weights output ``i`` (0 = highest resolution) by ``1 / 2**i`` and normalises
the weights to sum to 1; each lower-resolution output is scored against the label map
downsampled by nearest neighbour to that output's spatial size (read from the logits, so the
wrapper needs no knowledge of the network's strides). FM-Net (paper 001) upsamples its auxiliary
outputs to full resolution inside the model; those then simply meet the full-resolution target.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def deep_supervision_weights(n: int) -> list[float]:
    """``n`` weights ``1/2**i`` normalised to sum 1: ``n=3 -> [4/7, 2/7, 1/7]``."""
    raw = [0.5**i for i in range(n)]
    total = sum(raw)
    return [w / total for w in raw]


def downsample_labels(target: Tensor, size: tuple[int, ...]) -> Tensor:
    """Nearest-neighbour resampling of a label map (labels must never be interpolated).

    Args:
        target: ``(B, *S)`` integer codes.
        size: the output spatial size ``S'`` (same number of axes as ``S``).

    Returns:
        ``(B, *S')`` with the dtype of ``target``; ``target`` itself when ``S' == S``.
    """
    if tuple(target.shape[1:]) == tuple(size):
        return target
    # interpolate works on float (B, C, *S); codes 0..3 are exact in float32.
    resized = F.interpolate(target[:, None].float(), size=size, mode="nearest")
    return resized[:, 0].to(target.dtype)


class DeepSupervisionLoss(nn.Module):
    """Weighted sum of ``base`` over deep-supervision outputs; a single tensor passes through.

    Args:
        base: a loss taking ``(B, C, *S)`` logits and ``(B, *S)`` int64 targets.
    """

    def __init__(self, base: nn.Module) -> None:
        super().__init__()
        self.base = base

    def forward(self, logits: Tensor | list[Tensor] | tuple[Tensor, ...], target: Tensor) -> Tensor:
        """Scalar loss.

        Args:
            logits: ``(B, C, *S)`` or a list of them, highest resolution first.
            target: ``(B, *S)`` int64 internal codes at the highest resolution.
        """
        if isinstance(logits, Tensor):
            return self.base(logits, target)
        if len(logits) == 0:
            raise ValueError("DeepSupervisionLoss got an empty list of logits")
        weights = deep_supervision_weights(len(logits))
        terms = [
            weight * self.base(output, downsample_labels(target, tuple(output.shape[2:])))
            for weight, output in zip(weights, logits, strict=True)
        ]
        return torch.stack(terms).sum()
