"""Dice-based losses: region Dice (sigmoid), softmax Dice, penalised Dice (paper 003).

All return ``1 - mean Dice`` so a perfect prediction scores ≈ 0.
"""

from __future__ import annotations

import torch
from torch import Tensor

from trainables.data.labels import LabelScheme
from trainables.losses.common import (
    Float32Loss,
    classes_phrase,
    one_hot,
    region_masks,
    regions_phrase,
    soft_dice,
    spatial_dims,
)


class RegionDiceLoss(Float32Loss):
    """BTRSeg (paper 000): ``1 - mean_r Dice(sigmoid(logits_r), region_r)``.

    Args:
        scheme: internal label scheme; one logit channel per region in ``scheme.regions`` order.
        smooth: Dice smoothing term.
        batch_dice: one Dice per region over the whole batch instead of per sample.
    """

    def __init__(self, scheme: LabelScheme, smooth: float, batch_dice: bool) -> None:
        super().__init__(len(scheme.regions), regions_phrase(scheme))
        self.scheme = scheme
        self.smooth = smooth
        self.batch_dice = batch_dice

    def compute(self, logits: Tensor, target: Tensor) -> Tensor:
        truth = region_masks(target, self.scheme)
        dice = soft_dice(torch.sigmoid(logits), truth, self.smooth, self.batch_dice)
        return 1.0 - dice.mean()


class SoftmaxDiceLoss(Float32Loss):
    """Dice on a softmax over the internal classes (BTRSeg's 4-class arm, paper 000).

    ``dice_over="regions"``: region probabilities are sums of class probabilities
    (``P(WT) = p1 + p2 + p3``, ``P(TC) = p1 + p3``, ``P(ET) = p3``) and the loss is
    ``1 - mean`` region Dice, the same objective as :class:`RegionDiceLoss`.
    ``dice_over="classes"``: ``1 - mean`` Dice over the foreground classes 1..K-1.

    Args:
        scheme: internal label scheme; one logit channel per class.
        dice_over: ``"regions"`` or ``"classes"``.
        smooth: Dice smoothing term.
        batch_dice: one Dice per channel over the whole batch instead of per sample.
    """

    def __init__(self, scheme: LabelScheme, dice_over: str, smooth: float, batch_dice: bool):
        super().__init__(scheme.num_classes, classes_phrase(scheme))
        self.scheme = scheme
        self.dice_over = dice_over
        self.smooth = smooth
        self.batch_dice = batch_dice

    def compute(self, logits: Tensor, target: Tensor) -> Tensor:
        probs = torch.softmax(logits, dim=1)
        if self.dice_over == "regions":
            probs = class_to_region_probabilities(probs, self.scheme)
            truth = region_masks(target, self.scheme)
        else:  # foreground classes only: background Dice is ≈ 1 and would dilute the loss
            probs = probs[:, 1:]
            truth = one_hot(target, self.scheme.num_classes)[:, 1:]
        return 1.0 - soft_dice(probs, truth, self.smooth, self.batch_dice).mean()


def class_to_region_probabilities(probs: Tensor, scheme: LabelScheme) -> Tensor:
    """``(B, K, *S)`` softmax class probabilities -> ``(B, R, *S)`` region probabilities.

    A region's probability is the sum over its (mutually exclusive) classes. Basic indexing
    only: ``probs[:, list(codes)]`` would copy an index tensor from the host every step (a sync,
    and illegal inside a CUDA-graph capture).
    """
    regions = [sum(probs[:, c] for c in codes) for codes in scheme.regions.values()]
    return torch.stack(regions, dim=1)


class PenalizedDiceLoss(Float32Loss):
    """Paper 003's Dice loss with a false-positive penalty ``p >= 1``, on sigmoid regions.

    The paper's Eq. (2) scores ``D_p = (2 p |P∩G| + ε) / (|G| + p |P| + ε)`` where ``|P|`` is
    ``pred.sum()`` and ``|G|`` is ``label.sum()``. With ``|P| = TP + FP`` and ``|G| = TP + FN``
    its denominator is ``(1 + p) TP + p FP + FN``: false positives weigh ``p`` times as much as
    false negatives. Taken literally, a perfect prediction scores ``2p / (1 + p)`` (4/3 for
    p = 2), so ``1 - D_p`` would go negative and *fall* as p grows. We therefore rescale Eq. (2)
    by the constant ``(1 + p) / 2p``, which keeps the paper's gradient direction and FP:FN
    weighting and makes a perfect prediction score exactly 1::

        D_p = ((1 + p) |P∩G| + smooth) / (|G| + p |P| + smooth)
            = TP / (TP + p/(1+p) FP + 1/(1+p) FN)        (a Tversky index)
        loss = 1 - mean over regions of D_p

    ``p = 1`` is plain Dice (Eq. 1); with false positives only, the loss grows with ``p``;
    with false negatives only, it shrinks (they are weighted ``1/(1+p)``).

    Args:
        scheme: internal label scheme; one logit channel per region.
        penalty: ``p >= 1``.
        smooth: smoothing term (the paper's ε = 1e-30).
        batch_dice: sum over the batch (the paper's ``label.sum()`` covers the whole batch).
    """

    def __init__(self, scheme: LabelScheme, penalty: float, smooth: float, batch_dice: bool):
        super().__init__(len(scheme.regions), regions_phrase(scheme))
        self.scheme = scheme
        self.penalty = penalty
        self.smooth = smooth
        self.batch_dice = batch_dice

    def compute(self, logits: Tensor, target: Tensor) -> Tensor:
        probs = torch.sigmoid(logits)
        truth = region_masks(target, self.scheme)
        dims = spatial_dims(probs, self.batch_dice)
        p = self.penalty
        intersection = (probs * truth).sum(dims)
        denominator = truth.sum(dims) + p * probs.sum(dims)
        score = ((1.0 + p) * intersection + self.smooth) / (denominator + self.smooth)
        return 1.0 - score.mean()
