"""Model outputs on a resampled grid, brought back to the case's own grid before decoding.

A case prepared with ``data.preprocess.resample`` is predicted on the target-spacing grid; its
logits (or averaged probabilities) are then resampled to the cropped source grid and only then
decoded into labels, as nnU-Net's ``convert_predicted_logits_to_segmentation_with_correct_shape``
does: linear interpolation, with the coarse axis of an anisotropic grid by nearest neighbour
(:func:`trainables.data.resample.coarse_axis`). Voxel centres map onto voxel centres
(``align_corners=False``), as the forward resampling does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from trainables.data.resample import Spacing, coarse_axis, nearest_indices

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
    shape: Sequence[int], grid_spacing: Spacing, source_spacing: Spacing
) -> ToSource | None:
    """The function taking scores from the resampled grid (``grid_spacing``) to the source
    crop (``shape`` at ``source_spacing``), or None when the case was not resampled."""
    if tuple(grid_spacing) == tuple(source_spacing):
        return None
    axis = coarse_axis(grid_spacing, source_spacing)
    return lambda scores: resize_scores(scores, shape, axis)
