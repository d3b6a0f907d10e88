"""Segmentation metrics with BraTS conventions (numpy/scipy, evaluation and validation time).

Binary-mask metrics take bool masks ``(X, Y, Z)`` (or 2-D) and a spacing in mm per axis;
:func:`case_metrics` takes internal label maps and returns ``<metric>_<region>`` keys.
Empty masks follow BraTS: both empty -> Dice 1, HD95 0, surface Dice 1, sensitivity 1; exactly
one empty -> Dice 0, surface Dice 0, HD95 = the volume diagonal in mm.
"""

from trainables.metrics.brats import METRIC_NAMES, case_metrics, mean_metrics, region_metrics
from trainables.metrics.lesion import (
    CHALLENGE_RULES,
    GLIOMA_2023,
    LesionRule,
    LesionScores,
    lesion_metrics,
    lesion_scores,
)
from trainables.metrics.overlap import (
    Confusion,
    confusion,
    dice,
    relative_volume_difference,
    sensitivity,
    specificity,
)
from trainables.metrics.surface import (
    hd95,
    surface_dice,
    surface_distances,
    surface_scores,
    worst_case_distance,
)

__all__ = [
    "CHALLENGE_RULES",
    "GLIOMA_2023",
    "METRIC_NAMES",
    "Confusion",
    "LesionRule",
    "LesionScores",
    "case_metrics",
    "confusion",
    "dice",
    "hd95",
    "lesion_metrics",
    "lesion_scores",
    "mean_metrics",
    "region_metrics",
    "relative_volume_difference",
    "sensitivity",
    "specificity",
    "surface_dice",
    "surface_distances",
    "surface_scores",
    "worst_case_distance",
]
