"""Per-case BraTS region metrics from internal label maps, and their mean over cases.

Keys are ``<metric>_<region>`` for every region of the label scheme (``wt``, ``tc``, ``et`` for
BraTS, ``fg`` for binary) plus ``dice_mean``; the engine prefixes them with ``val/`` when logging
(``val/dice_wt``, ``val/hd95_wt``, ...).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from trainables.data.labels import INTERNAL_BRATS, LabelScheme, regions_from_labels
from trainables.errors import InputError
from trainables.metrics.names import REGION_METRICS
from trainables.metrics.overlap import confusion
from trainables.metrics.surface import check_spacing, surface_scores

METRIC_NAMES: tuple[str, ...] = REGION_METRICS  # defined in trainables.metrics.names


def region_metrics(
    pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float], tolerance_mm: float = 1.0
) -> dict[str, float]:
    """All metrics of one region, keyed by :data:`METRIC_NAMES`.

    Args:
        pred: (*S) bool mask of the predicted region.
        ref: (*S) bool mask of the reference region.
        spacing: voxel size in mm per axis of S.
        tolerance_mm: surface Dice tolerance in mm.

    Returns:
        ``dice``, ``hd95`` (mm), ``nsd`` (surface Dice), ``rvd`` (unsigned, NaN for a non-empty
        prediction of an empty reference), ``sensitivity``, ``specificity``.
    """
    counts = confusion(pred, ref)  # one pass over the masks for all overlap metrics
    hd95_mm, nsd = surface_scores(pred, ref, spacing, tolerance_mm)
    return {
        "dice": counts.dice(),
        "hd95": hd95_mm,
        "nsd": nsd,
        "rvd": counts.relative_volume_difference(),
        "sensitivity": counts.sensitivity(),
        "specificity": counts.specificity(),
    }


def case_metrics(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing: tuple[float, float, float],
    scheme: LabelScheme = INTERNAL_BRATS,
    tolerance_mm: float = 1.0,
) -> dict[str, float]:
    """BraTS metrics of one case for every region of ``scheme``.

    Args:
        pred: (X, Y, Z) integer label map in internal codes (2-D (X, Y) also works).
        ref: (X, Y, Z) integer label map in internal codes, same shape.
        spacing: voxel size in mm per axis.
        scheme: internal label scheme whose regions are evaluated.
        tolerance_mm: surface Dice tolerance in mm.

    Returns:
        ``{metric}_{region}`` for every metric in :data:`METRIC_NAMES` and region of ``scheme``,
        plus ``dice_mean``, the mean of the region Dices.

    Raises:
        InputError (a ValueError): if the shapes differ (the message gives both) or the spacing
            does not match the number of axes.
    """
    if pred.shape != ref.shape:
        raise InputError(f"pred shape {pred.shape} differs from ref shape {ref.shape}")
    check_spacing(spacing, pred.ndim)
    pred_regions = regions_from_labels(pred, scheme)
    ref_regions = regions_from_labels(ref, scheme)
    out: dict[str, float] = {}
    for index, region in enumerate(scheme.region_names):
        scores = region_metrics(pred_regions[index], ref_regions[index], spacing, tolerance_mm)
        out.update({f"{name}_{region}": value for name, value in scores.items()})
    out["dice_mean"] = float(np.mean([out[f"dice_{r}"] for r in scheme.region_names]))
    return out


def mean_metrics(per_case: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Mean over cases of every metric key, skipping NaN values.

    NaN marks an undefined value (e.g. the RVD of a non-empty prediction of an empty reference),
    so it is left out of that key's mean rather than turning it into NaN; a key whose values are
    all NaN stays NaN. A key missing from some cases is averaged over the cases that have it.

    Args:
        per_case: one mapping per case, as returned by :func:`case_metrics`.

    Returns:
        key -> mean, keys in first-seen order; empty for no cases.
    """
    values: dict[str, list[float]] = {}
    for case in per_case:
        for key, value in case.items():
            values.setdefault(key, []).append(float(value))
    return {key: _nan_mean(vals) for key, vals in values.items()}


def _nan_mean(values: list[float]) -> float:
    """Mean of the non-NaN values; NaN when there are none (without numpy's warning)."""
    kept = [v for v in values if not math.isnan(v)]
    return math.fsum(kept) / len(kept) if kept else math.nan
