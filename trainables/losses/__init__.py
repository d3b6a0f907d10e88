"""Segmentation losses, the deep-supervision wrapper and output decoding.

Usage::

    loss_fn = build_loss(cfg.loss, scheme)          # nn.Module
    loss = loss_fn(model(images), labels)           # logits tensor or deep-supervision list
    labels = logits_to_labels(logits, cfg.loss, scheme)

Every loss takes ``(B, C, *S)`` logits (``S`` 2-D or 3-D; ``C = output_channels(cfg, scheme)``)
and ``(B, *S)`` int64 internal label codes, and computes in float32 even under autocast.
"""

from __future__ import annotations

from torch import nn

from trainables.data.labels import LabelScheme
from trainables.losses.ce import DiceBCELoss, DiceCELoss, RegionBCELoss
from trainables.losses.config import (
    BCEConfig,
    DiceBCEConfig,
    DiceCEConfig,
    LossConfig,
    PenalizedDiceConfig,
    RegionDiceConfig,
    SoftmaxDiceConfig,
    output_channels,
)
from trainables.losses.decode import (
    logits_to_labels,
    logits_to_probabilities,
    probabilities_to_labels,
)
from trainables.losses.deep_supervision import DeepSupervisionLoss, deep_supervision_weights
from trainables.losses.dice import PenalizedDiceLoss, RegionDiceLoss, SoftmaxDiceLoss

__all__ = [
    "BCEConfig",
    "DeepSupervisionLoss",
    "DiceBCEConfig",
    "DiceBCELoss",
    "DiceCEConfig",
    "DiceCELoss",
    "LossConfig",
    "PenalizedDiceConfig",
    "PenalizedDiceLoss",
    "RegionBCELoss",
    "RegionDiceConfig",
    "RegionDiceLoss",
    "SoftmaxDiceConfig",
    "SoftmaxDiceLoss",
    "build_loss",
    "deep_supervision_weights",
    "logits_to_labels",
    "logits_to_probabilities",
    "output_channels",
    "probabilities_to_labels",
]


def build_loss(cfg: LossConfig, scheme: LabelScheme) -> nn.Module:
    """The loss module for ``cfg``, wrapped in :class:`DeepSupervisionLoss`.

    Args:
        cfg: a loss config.
        scheme: the internal label scheme (regions and number of classes).

    Returns:
        a module whose ``forward(logits, target)`` takes ``(B, C, *S)`` logits or a list of them
        (highest resolution first) and ``(B, *S)`` int64 codes and returns a float32 scalar.
    """
    return DeepSupervisionLoss(_base_loss(cfg, scheme))


def _base_loss(cfg: LossConfig, scheme: LabelScheme) -> nn.Module:
    match cfg:
        case RegionDiceConfig():
            return RegionDiceLoss(scheme, cfg.smooth, cfg.batch_dice)
        case SoftmaxDiceConfig():
            return SoftmaxDiceLoss(scheme, cfg.dice_over, cfg.smooth, cfg.batch_dice)
        case DiceCEConfig():
            return DiceCELoss(
                scheme,
                squared_denominator=cfg.squared_denominator,
                ce_weight=cfg.ce_weight,
                dice_weight=cfg.dice_weight,
                smooth=cfg.smooth,
                batch_dice=cfg.batch_dice,
            )
        case PenalizedDiceConfig():
            return PenalizedDiceLoss(scheme, cfg.penalty, cfg.smooth, cfg.batch_dice)
        case BCEConfig():
            return RegionBCELoss(scheme, cfg.pos_weight)
        case DiceBCEConfig():
            return DiceBCELoss(
                scheme,
                bce_weight=cfg.bce_weight,
                dice_weight=cfg.dice_weight,
                smooth=cfg.smooth,
                batch_dice=cfg.batch_dice,
            )
    raise TypeError(f"not a loss config: {cfg!r}")
