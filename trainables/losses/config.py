"""Loss configs: one frozen model per loss, selected by ``kind``.

Every config says which output parameterisation the model must produce through its ``output``
property:

* ``"regions"``: one sigmoid channel per evaluated region (BraTS WT, TC, ET; ``fg`` for the binary
  scheme). Regions overlap (WT ⊇ TC ⊇ ET), so each channel is an independent probability.
* ``"classes"``: one softmax channel per internal class including background (4 for BraTS, 2 for
  binary); the channels are mutually exclusive.

Which paper each kind comes from:

========================  =========================================================  =========
kind                      definition                                                 paper
========================  =========================================================  =========
``region_dice``           1 - mean soft Dice of WT/TC/ET on sigmoid outputs          000
``softmax_dice``          the same Dice objective on a 4-class softmax               000
``dice_ce``               soft Dice (plain or squared denominators) + cross-entropy  001, 002
``penalized_dice``        Dice with a false-positive penalty weight (Eq. 2)          003
``bce``                   binary cross-entropy on sigmoid region outputs             004
``dice_bce``              BCE + soft Dice on sigmoid regions (nnU-Net v2 BraTS)      002
========================  =========================================================  =========
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from trainables.config import Frozen
from trainables.data.labels import LabelScheme

Output = Literal["regions", "classes"]


class RegionDiceConfig(Frozen):
    """BTRSeg (paper 000): ``loss = 1 - (Dice_WT + Dice_TC + Dice_ET) / 3`` on sigmoid outputs.

    Attributes:
        smooth: added to the Dice numerator and denominator so empty regions stay finite.
        batch_dice: sum intersections over the whole batch before dividing (one Dice per
            region) instead of one Dice per sample and region.
    """

    kind: Literal["region_dice"] = "region_dice"
    smooth: float = Field(default=1e-5, ge=0.0)
    batch_dice: bool = False

    @property
    def output(self) -> Output:
        return "regions"


class SoftmaxDiceConfig(Frozen):
    """BTRSeg's "softmax 4-class" arm (paper 000): Dice on a softmax over the internal classes.

    Attributes:
        dice_over: ``"regions"`` (default) scores the same objective as ``region_dice``, 1 - mean
            Dice of WT/TC/ET, with each region's probability taken as the sum of the softmax
            probabilities of its classes (valid because classes are mutually exclusive), so the
            sigmoid-vs-softmax ablation changes only the output parameterisation. ``"classes"``
            scores 1 - mean Dice over the foreground classes (background excluded, as in
            nnU-Net).
        smooth: see :class:`RegionDiceConfig`.
        batch_dice: see :class:`RegionDiceConfig`.
    """

    kind: Literal["softmax_dice"] = "softmax_dice"
    dice_over: Literal["regions", "classes"] = "regions"
    smooth: float = Field(default=1e-5, ge=0.0)
    batch_dice: bool = False

    @property
    def output(self) -> Output:
        return "classes"


class DiceCEConfig(Frozen):
    """nnU-Net (paper 002) and FM-Net (paper 001): ``dice_weight * Dice + ce_weight * CE``.

    The Dice term is ``1 - mean`` soft Dice over the foreground classes of a softmax (nnU-Net
    excludes background); the CE term is the mean voxel-wise cross-entropy over all classes.

    Attributes:
        squared_denominator: FM-Net's Eq. (1): ``2 Σ p y / (Σ p² + Σ y²)`` instead of
            ``2 Σ p y / (Σ p + Σ y)``.
        ce_weight: weight of the cross-entropy term (>= 0).
        dice_weight: weight of the Dice term (>= 0).
        smooth: see :class:`RegionDiceConfig`.
        batch_dice: one Dice per class over the whole batch (default True). nnU-Net v2's plans
            choose it for 2d, and for 3d_fullres only when the images are large enough for a
            3d_lowres; ``ablate data plan`` sets it as nnU-Net would for the dataset.
    """

    kind: Literal["dice_ce"] = "dice_ce"
    squared_denominator: bool = False
    ce_weight: float = Field(default=1.0, ge=0.0)
    dice_weight: float = Field(default=1.0, ge=0.0)
    smooth: float = Field(default=1e-5, ge=0.0)
    batch_dice: bool = True

    @property
    def output(self) -> Output:
        return "classes"

    @model_validator(mode="after")
    def _some_weight(self) -> DiceCEConfig:
        if self.ce_weight == 0 and self.dice_weight == 0:
            raise ValueError("ce_weight and dice_weight are both 0: the loss would be constant")
        return self


class PenalizedDiceConfig(Frozen):
    """Paper 003's Dice loss with a false-positive penalty weight (their Eq. 2), sigmoid regions.

    See :class:`trainables.losses.dice.PenalizedDiceLoss` for the formula. The paper's network
    has a single output channel scored with a sigmoid, hence ``output = "regions"``.

    Attributes:
        penalty: false-positive weight ``p >= 1``; 1 is plain Dice (the paper tries 1, 2, 3, 5, 8).
        smooth: see :class:`RegionDiceConfig` (the paper uses 1e-30).
        batch_dice: default True: the paper sums ``label.sum()`` and ``pred.sum()`` over the
            whole batch tensor.
    """

    kind: Literal["penalized_dice"] = "penalized_dice"
    penalty: float = Field(default=1.0, ge=1.0)
    smooth: float = Field(default=1e-5, ge=0.0)
    batch_dice: bool = True

    @property
    def output(self) -> Output:
        return "regions"


class BCEConfig(Frozen):
    """Binary cross-entropy on sigmoid region outputs (paper 004), mean over voxels and regions.

    Attributes:
        pos_weight: weight of the positive term, ``> 0`` (None: 1), as in
            :class:`torch.nn.BCEWithLogitsLoss`; > 1 counters a rare foreground.
    """

    kind: Literal["bce"] = "bce"
    pos_weight: float | None = Field(default=None, gt=0.0)

    @property
    def output(self) -> Output:
        return "regions"


class DiceBCEConfig(Frozen):
    """nnU-Net v2's region-based loss (its BraTS setting): ``DC_and_BCE_loss``.

    ``bce_weight * BCE + dice_weight * (1 - mean_r Dice_r)`` on sigmoid region outputs: the BCE
    is the mean over batch, regions and voxels (``BCEWithLogitsLoss``), the Dice is nnU-Net's
    ``MemoryEfficientSoftDiceLoss`` with ``do_bg=True`` (every region channel is foreground) and
    ``smooth=1e-5`` in numerator and denominator. nnU-Net returns ``-Dice`` instead of
    ``1 - Dice``; the constant offset changes neither the gradients nor the ranking of runs.
    Source: ``nnunetv2/training/loss/compound_losses.py`` (``DC_and_BCE_loss``),
    ``nnunetv2/training/loss/dice.py`` (``MemoryEfficientSoftDiceLoss``) and
    ``nnUNetTrainer._build_loss``.

    Attributes:
        bce_weight: weight of the BCE term (>= 0; nnU-Net: 1).
        dice_weight: weight of the Dice term (>= 0; nnU-Net: 1).
        smooth: see :class:`RegionDiceConfig`.
        batch_dice: one Dice per region over the whole batch (default True). nnU-Net v2's plans
            choose it for 2d, and for 3d_fullres only when the images are large enough for a
            3d_lowres; ``ablate data plan`` sets it as nnU-Net would for the dataset.
    """

    kind: Literal["dice_bce"] = "dice_bce"
    bce_weight: float = Field(default=1.0, ge=0.0)
    dice_weight: float = Field(default=1.0, ge=0.0)
    smooth: float = Field(default=1e-5, ge=0.0)
    batch_dice: bool = True

    @property
    def output(self) -> Output:
        return "regions"

    @model_validator(mode="after")
    def _some_weight(self) -> DiceBCEConfig:
        if self.bce_weight == 0 and self.dice_weight == 0:
            raise ValueError("bce_weight and dice_weight are both 0: the loss would be constant")
        return self


LossConfig = Annotated[
    RegionDiceConfig
    | SoftmaxDiceConfig
    | DiceCEConfig
    | PenalizedDiceConfig
    | BCEConfig
    | DiceBCEConfig,
    Field(discriminator="kind"),
]


def output_channels(cfg: LossConfig, scheme: LabelScheme) -> int:
    """Output channels the model needs for this loss: one per region or one per class.

    Args:
        cfg: a loss config.
        scheme: the (internal) label scheme of the dataset.

    Returns:
        ``len(scheme.region_names)`` for region outputs, ``scheme.num_classes`` for class outputs.
    """
    return len(scheme.region_names) if cfg.output == "regions" else scheme.num_classes
