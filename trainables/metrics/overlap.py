"""Overlap metrics of bool masks: Dice, sensitivity, specificity, relative volume difference.

Every function takes two bool masks of the same shape (2-D or 3-D, any shape) and returns a
Python float. Conventions for empty masks follow BraTS: when both the prediction and the
reference are empty the segmentation is perfect (Dice 1, sensitivity 1); when exactly one is
empty Dice is 0.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from trainables.errors import InputError


class Confusion(NamedTuple):
    """Voxel counts of a binary prediction against a binary reference.

    The metric methods hold the formulas and the empty-mask conventions, so callers that need
    several metrics of one pair count the (possibly 240x240x155) masks once.
    """

    tp: int
    fp: int
    fn: int
    tn: int

    def dice(self) -> float:
        """``2TP / (2TP + FP + FN)``; 1.0 when both masks are empty (BraTS convention)."""
        denominator = 2 * self.tp + self.fp + self.fn
        return 1.0 if denominator == 0 else 2.0 * self.tp / denominator

    def sensitivity(self) -> float:
        """``TP / (TP + FN)``; 1.0 for an empty reference (no reference voxel can be missed)."""
        positives = self.tp + self.fn
        return 1.0 if positives == 0 else self.tp / positives

    def specificity(self) -> float:
        """``TN / (TN + FP)``; 1.0 when the reference has no background voxel."""
        negatives = self.tn + self.fp
        return 1.0 if negatives == 0 else self.tn / negatives

    def relative_volume_difference(self, signed: bool = False) -> float:
        """``|V_pred - V_ref| / V_ref`` (or signed); see :func:`relative_volume_difference`."""
        v_pred, v_ref = self.tp + self.fp, self.tp + self.fn
        if v_ref == 0:
            return 0.0 if v_pred == 0 else math.nan
        difference = (v_pred - v_ref) / v_ref
        return difference if signed else abs(difference)


def check_pair(pred: np.ndarray, ref: np.ndarray) -> None:
    """Check that ``pred`` and ``ref`` are bool masks of the same shape.

    Bool is required (not merely 0/1 integers) so that an internal label map passed by mistake
    fails loudly instead of silently being evaluated as "any tumour".

    Raises:
        InputError: on a shape mismatch (the message gives both shapes) or a non-bool dtype.
    """
    if pred.shape != ref.shape:
        raise InputError(f"pred shape {pred.shape} differs from ref shape {ref.shape}")
    for name, mask in (("pred", pred), ("ref", ref)):
        if mask.dtype != np.bool_:
            raise InputError(
                f"{name} must be a bool mask, got dtype {mask.dtype} "
                "(build region masks with trainables.data.labels.regions_from_labels)"
            )


def confusion(pred: np.ndarray, ref: np.ndarray) -> Confusion:
    """Confusion counts of two bool masks of the same shape (voxels, not mm³)."""
    check_pair(pred, ref)
    tp = int(np.count_nonzero(pred & ref))
    n_pred = int(np.count_nonzero(pred))
    n_ref = int(np.count_nonzero(ref))
    fp, fn = n_pred - tp, n_ref - tp
    return Confusion(tp=tp, fp=fp, fn=fn, tn=pred.size - tp - fp - fn)


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice coefficient ``2|P∩R| / (|P| + |R|)`` of two bool masks, in [0, 1].

    Both masks empty -> 1.0 (BraTS convention); exactly one empty -> 0.0 (falls out of the formula).
    """
    return confusion(pred, ref).dice()


def sensitivity(pred: np.ndarray, ref: np.ndarray) -> float:
    """Sensitivity (recall, true-positive rate) ``TP / (TP + FN)`` of two bool masks, in [0, 1].

    An empty reference gives 1.0 whether or not the prediction is empty: there is no reference
    voxel to miss, so nothing was under-segmented. Over-segmentation of an empty reference is
    what Dice (0), HD95 (worst case) and specificity report instead.
    """
    return confusion(pred, ref).sensitivity()


def specificity(pred: np.ndarray, ref: np.ndarray) -> float:
    """Specificity (true-negative rate) ``TN / (TN + FP)`` of two bool masks, in [0, 1].

    A reference that covers every voxel has no negatives to mislabel and gives 1.0.
    """
    return confusion(pred, ref).specificity()


def relative_volume_difference(pred: np.ndarray, ref: np.ndarray, signed: bool = False) -> float:
    """Relative volume difference of two bool masks (dimensionless; 0 is perfect).

    Sign convention: by default the unsigned ``|V_pred - V_ref| / V_ref``, so that averaging over
    cases cannot let over- and under-segmented cases cancel. With ``signed=True`` it is
    ``(V_pred - V_ref) / V_ref``: positive for over-segmentation, negative for under-segmentation
    (-1 for an empty prediction). Voxel spacing cancels in the ratio, so it takes none.

    Empty reference: both empty -> 0.0; a non-empty prediction of an empty reference is undefined
    (division by zero) and gives NaN, which :func:`trainables.metrics.mean_metrics` skips.
    """
    return confusion(pred, ref).relative_volume_difference(signed)
