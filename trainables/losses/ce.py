"""Cross-entropy based losses: Dice + CE (nnU-Net, FM-Net), region BCE (paper 004) and Dice +
BCE on regions (nnU-Net v2's region-based BraTS loss)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from trainables.data.labels import LabelScheme
from trainables.losses.common import (
    Float32Loss,
    classes_phrase,
    one_hot,
    region_masks,
    regions_phrase,
    soft_dice,
)


class DiceCELoss(Float32Loss):
    """``dice_weight * (1 - mean foreground Dice) + ce_weight * CE`` on a softmax over classes.

    nnU-Net (paper 002) uses plain Dice denominators, batch Dice in 3-D and weights 1/1; FM-Net
    (paper 001) sums Dice with squared denominators (their Eq. 1) and CE (Eq. 2, averaged over
    voxels here so the two terms have comparable scale at any patch size).

    Args:
        scheme: internal label scheme; one logit channel per class.
        squared_denominator: ``Σ p² + Σ y²`` in the Dice denominator.
        ce_weight: weight of the cross-entropy term.
        dice_weight: weight of the Dice term.
        smooth: Dice smoothing term.
        batch_dice: one Dice per class over the whole batch instead of per sample.
    """

    def __init__(
        self,
        scheme: LabelScheme,
        squared_denominator: bool,
        ce_weight: float,
        dice_weight: float,
        smooth: float,
        batch_dice: bool,
    ) -> None:
        super().__init__(scheme.num_classes, classes_phrase(scheme))
        self.num_classes = scheme.num_classes
        self.squared = squared_denominator
        self.ce_weight = ce_weight
        self.dice_weight = dice_weight
        self.smooth = smooth
        self.batch_dice = batch_dice

    def compute(self, logits: Tensor, target: Tensor) -> Tensor:
        ce = F.cross_entropy(logits, target.long())
        probs = torch.softmax(logits, dim=1)[:, 1:]  # foreground classes, as nnU-Net
        truth = one_hot(target, self.num_classes)[:, 1:]
        dice = soft_dice(probs, truth, self.smooth, self.batch_dice, squared=self.squared)
        return self.dice_weight * (1.0 - dice.mean()) + self.ce_weight * ce


class RegionBCELoss(Float32Loss):
    """Binary cross-entropy of sigmoid region outputs, mean over batch, regions and voxels.

    Args:
        scheme: internal label scheme; one logit channel per region.
        pos_weight: multiplies the positive term (None: 1), as in ``BCEWithLogitsLoss``.
    """

    def __init__(self, scheme: LabelScheme, pos_weight: float | None) -> None:
        super().__init__(len(scheme.regions), regions_phrase(scheme))
        self.scheme = scheme
        self.pos_weight = pos_weight

    def compute(self, logits: Tensor, target: Tensor) -> Tensor:
        truth = region_masks(target, self.scheme)
        pos_weight = None
        if self.pos_weight is not None:  # a 0-d fill on the device: no host-to-device copy
            pos_weight = logits.new_full((), self.pos_weight)
        return F.binary_cross_entropy_with_logits(logits, truth, pos_weight=pos_weight)


class DiceBCELoss(Float32Loss):
    """nnU-Net v2's ``DC_and_BCE_loss``: ``bce_weight * BCE + dice_weight * (1 - mean Dice)``.

    Both terms score sigmoid region outputs against the same region masks: BCE is the mean over
    batch, regions and voxels; the Dice is the soft Dice of every region (``do_bg=True``: no
    channel is background), pooled over the batch when ``batch_dice``, as nnU-Net's
    ``MemoryEfficientSoftDiceLoss`` (``(2 Σ p y + smooth) / (Σ p + Σ y + smooth)``).

    Args:
        scheme: internal label scheme; one logit channel per region in ``scheme.regions`` order.
        bce_weight: weight of the BCE term.
        dice_weight: weight of the Dice term.
        smooth: Dice smoothing term.
        batch_dice: one Dice per region over the whole batch instead of per sample.
    """

    def __init__(
        self,
        scheme: LabelScheme,
        bce_weight: float,
        dice_weight: float,
        smooth: float,
        batch_dice: bool,
    ) -> None:
        super().__init__(len(scheme.regions), regions_phrase(scheme))
        self.scheme = scheme
        self.bce_weight = bce_weight
        self.dice_weight = dice_weight
        self.smooth = smooth
        self.batch_dice = batch_dice

    def compute(self, logits: Tensor, target: Tensor) -> Tensor:
        truth = region_masks(target, self.scheme)  # built once, shared by both terms
        bce = F.binary_cross_entropy_with_logits(logits, truth)
        dice = soft_dice(torch.sigmoid(logits), truth, self.smooth, self.batch_dice)
        return self.dice_weight * (1.0 - dice.mean()) + self.bce_weight * bce
