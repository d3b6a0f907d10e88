"""Model outputs on a resampled grid, brought back to the case's own grid before decoding.

A case prepared with ``data.preprocess.resample`` is predicted on the target-spacing grid; its
probabilities (softmax or sigmoid, averaged over mirrored copies or ensemble members where
those apply) are then resampled to the cropped source grid and only then decoded into labels
(:func:`source_labels`): linear interpolation, with the coarse axis of an anisotropic grid by
nearest neighbour (:func:`trainables.data.resample.coarse_axis`), voxel centres onto voxel
centres (``align_corners=False``), as the forward resampling maps them. nnU-Net v1 resampled
softmax probabilities the same way; v2 resamples logits (and averages logits over mirrors and
folds). Probabilities are used here because they are what the mirrored and ensemble paths
average, so one model, its mirrored copies and an ensemble of it are brought back alike.
Validation of whole volumes, the test pass and ``ablate predict`` all call it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from trainables.data.labels import LabelScheme
from trainables.data.resample import Spacing, coarse_axis, nearest_indices
from trainables.losses import (
    LossConfig,
    logits_to_labels,
    logits_to_probabilities,
    probabilities_to_labels,
)

ToSource = Callable[[Tensor], Tensor]  # (K, *S') scores on the resampled grid -> (K, *S)


def resize_scores(scores: Tensor, shape: Sequence[int], axis: int | None) -> Tensor:
    """(K, X', Y', Z') float logits or probabilities -> (K, *shape).

    Args:
        scores: the model's outputs on the resampled grid.
        shape: the (X, Y, Z) to bring them to.
        axis: spatial axis (0-2) resized by nearest neighbour, the others linearly; None:
            trilinear on all three.
    """
    shape = tuple(int(n) for n in shape)
    if tuple(scores.shape[1:]) == shape:
        return scores
    if axis is None:
        return F.interpolate(scores[None].float(), size=shape, mode="trilinear")[0]
    # the other two axes bilinearly, one slice of `axis` at a time (slices as the batch)
    moved = scores.float().movedim(axis + 1, 0)  # (S_axis, K, a, b)
    plane = tuple(shape[a] for a in range(3) if a != axis)
    if tuple(moved.shape[2:]) != plane:
        moved = F.interpolate(moved, size=plane, mode="bilinear")
    picks = torch.from_numpy(nearest_indices(moved.shape[0], shape[axis])).to(scores.device)
    return moved.index_select(0, picks).movedim(0, axis + 1)


def to_source_grid(
    shape: Sequence[int], grid_spacing: Spacing, source_spacing: Spacing | None
) -> ToSource | None:
    """The function taking scores from the resampled grid (``grid_spacing``) to the source
    crop (``shape`` at ``source_spacing``), or None when the case was not resampled
    (``source_spacing`` None, as a case on its own grid holds it, or the same spacing)."""
    if source_spacing is None or tuple(grid_spacing) == tuple(source_spacing):
        return None
    axis = coarse_axis(grid_spacing, source_spacing)
    return lambda scores: resize_scores(scores, shape, axis)


def source_labels(
    scores: Tensor,
    loss: LossConfig,
    scheme: LabelScheme,
    to_source: ToSource | None,
    probabilities: bool = False,
) -> Tensor:
    """(*S) int64 internal labels of one case's (K, *S') logits, or ``probabilities``: decoded
    directly when the case was not resampled (``to_source`` None, ``S == S'``), else turned
    into probabilities, brought back to the source grid and decoded there."""
    if to_source is None:
        decode = probabilities_to_labels if probabilities else logits_to_labels
        return decode(scores[None], loss, scheme)[0]
    probs = scores if probabilities else logits_to_probabilities(scores[None], loss)[0]
    return probabilities_to_labels(to_source(probs)[None], loss, scheme)[0]
