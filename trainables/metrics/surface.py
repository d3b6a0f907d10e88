"""Surface-distance metrics on binary masks: HD95 and surface Dice (normalised surface distance).

Definitions (HD95 as MedPy defines it, but on full-connectivity surfaces: MedPy's default
erodes with connectivity 1, which gives a thinner shell and slightly larger distances):

- The *surface* of a mask is ``mask XOR erode(mask)`` with a full-connectivity structuring
  element (3x3x3 ones in 3-D, 3x3 in 2-D) and voxels outside the volume counted as background,
  so a mask touching the volume edge has its surface there.
- The directed surface distances P->R are, for every surface voxel of P, the Euclidean distance
  in mm (``distance_transform_edt(..., sampling=spacing)``) to the nearest surface voxel of R.
- HD95 is the 95th percentile (numpy's default linear interpolation) of the union of both
  directed sets, like ``medpy.metric.hd95`` (``medpy.metric.hd95(..., connectivity=3)`` in 3-D).
- Surface Dice at tolerance τ (Nikolov et al. 2021) is the fraction of surface voxels of both
  masks lying within τ mm of the other surface: ``(|{p: d(p,R) <= τ}| + |{r: d(r,P) <= τ}|) /
  (|∂P| + |∂R|)``. Surface voxels are counted with unit weight (not by surface-element area).

BraTS empty-mask conventions: both empty -> HD95 0 and surface Dice 1; exactly one empty -> HD95
is the worst case (the volume diagonal in mm, 373.13 for 240x240x155 at 1 mm) and surface Dice 0.

Speed: both masks are cropped to their joint bounding box plus one voxel before erosion and the
distance transforms (a tumour-sized box is a small fraction of a 240x240x155 volume). The result
is exact: every surface voxel of both masks lies in the box, and the erosion sees background
beyond the box just as it would in the full volume (erosion treats outside the array as
background, and outside the box both masks are background anyway). The one-voxel margin makes
that background explicit in the array instead of relying on the erosion's border handling.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.ndimage import binary_erosion, distance_transform_edt, generate_binary_structure

from trainables.errors import InputError
from trainables.metrics.overlap import check_pair

_CROP_MARGIN = 1  # voxels of explicit background around the joint bounding box


def check_spacing(spacing: Sequence[float], ndim: int) -> np.ndarray:
    """Validate a voxel spacing and return it as a float64 array of shape ``(ndim,)``, in mm.

    Raises:
        InputError: if the length differs from ``ndim`` or a value is not finite and positive.
    """
    values = np.asarray(spacing, dtype=np.float64).reshape(-1)
    if values.size != ndim:
        raise InputError(f"got {values.size} values for a {ndim}-D mask", where="spacing")
    if not np.all(np.isfinite(values) & (values > 0)):
        raise InputError(f"values must be finite and > 0 mm, got {values.tolist()}", "spacing")
    return values


def worst_case_distance(shape: Sequence[int], spacing: Sequence[float]) -> float:
    """The largest distance possible in the volume: its diagonal in mm.

    Used as HD95 when exactly one mask is empty (BraTS: 373.13 for 240x240x155 at 1 mm).
    """
    return float(
        np.linalg.norm(np.asarray(shape, dtype=np.float64) * check_spacing(spacing, len(shape)))
    )


def surface_distances(
    pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """Directed surface distances between two non-empty bool masks.

    Args:
        pred: (*S) bool mask, non-empty; S 2-D or 3-D.
        ref: (*S) bool mask, non-empty.
        spacing: voxel size in mm per axis of S.

    Returns:
        ``(pred_to_ref, ref_to_pred)``: float64 arrays of shape (|∂pred|,) and (|∂ref|,) holding
        each surface voxel's distance in mm to the other mask's surface (voxel order is C order).

    Raises:
        InputError: on mismatched shapes, non-bool masks, a bad spacing or an empty mask (the
            distances are undefined; :func:`hd95` and :func:`surface_dice` handle that case).
    """
    check_pair(pred, ref)
    sampling = check_spacing(spacing, pred.ndim)
    if not (pred.any() and ref.any()):
        raise InputError("surface distances need two non-empty masks", where="pred/ref")
    box = _joint_box(pred, ref, _CROP_MARGIN)
    pred_surface, ref_surface = _surface(pred[box]), _surface(ref[box])
    # EDT of the complement gives, at every voxel, the distance to the nearest surface voxel.
    to_ref = distance_transform_edt(~ref_surface, sampling=sampling)
    to_pred = distance_transform_edt(~pred_surface, sampling=sampling)
    return to_ref[pred_surface], to_pred[ref_surface]


def hd95(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float]) -> float:
    """95th-percentile symmetric Hausdorff distance in mm (see the module doc for conventions).

    Args:
        pred: (*S) bool mask; S 2-D or 3-D.
        ref: (*S) bool mask.
        spacing: voxel size in mm per axis of S.
    """
    return surface_scores(pred, ref, spacing, tolerance_mm=0.0)[0]


def surface_dice(
    pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float], tolerance_mm: float
) -> float:
    """Surface Dice (normalised surface distance) at ``tolerance_mm``, in [0, 1].

    Args:
        pred: (*S) bool mask; S 2-D or 3-D.
        ref: (*S) bool mask.
        spacing: voxel size in mm per axis of S.
        tolerance_mm: largest distance in mm at which a surface voxel still counts as matched.
    """
    return surface_scores(pred, ref, spacing, tolerance_mm)[1]


def surface_scores(
    pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float], tolerance_mm: float
) -> tuple[float, float]:
    """``(hd95_mm, surface_dice)`` from one pair of distance transforms (what case metrics use).

    Args:
        pred: (*S) bool mask; S 2-D or 3-D.
        ref: (*S) bool mask.
        spacing: voxel size in mm per axis of S.
        tolerance_mm: surface Dice tolerance in mm, finite and >= 0.
    """
    check_pair(pred, ref)
    check_spacing(spacing, pred.ndim)
    if not (math.isfinite(tolerance_mm) and tolerance_mm >= 0):
        raise InputError(f"must be finite and >= 0 mm, got {tolerance_mm}", where="tolerance_mm")
    pred_empty, ref_empty = not pred.any(), not ref.any()
    if pred_empty and ref_empty:
        return 0.0, 1.0
    if pred_empty or ref_empty:
        return worst_case_distance(pred.shape, spacing), 0.0
    pred_to_ref, ref_to_pred = surface_distances(pred, ref, spacing)
    return _hd95(pred_to_ref, ref_to_pred), _surface_dice(pred_to_ref, ref_to_pred, tolerance_mm)


def _hd95(pred_to_ref: np.ndarray, ref_to_pred: np.ndarray) -> float:
    """95th percentile of the union of both directed distance sets (mm)."""
    return float(np.percentile(np.concatenate([pred_to_ref, ref_to_pred]), 95))


def _surface_dice(pred_to_ref: np.ndarray, ref_to_pred: np.ndarray, tolerance_mm: float) -> float:
    """Fraction of all surface voxels within ``tolerance_mm`` of the other surface."""
    matched = int(np.count_nonzero(pred_to_ref <= tolerance_mm)) + int(
        np.count_nonzero(ref_to_pred <= tolerance_mm)
    )
    return matched / (pred_to_ref.size + ref_to_pred.size)


def _surface(mask: np.ndarray) -> np.ndarray:
    """Surface voxels of a bool mask: ``mask XOR erode(mask)``, full connectivity, outside = 0."""
    structure = generate_binary_structure(mask.ndim, mask.ndim)
    return mask ^ binary_erosion(mask, structure=structure, border_value=0)


def _joint_box(pred: np.ndarray, ref: np.ndarray, margin: int) -> tuple[slice, ...]:
    """Slices of the bounding box of ``pred | ref`` grown by ``margin`` voxels, clipped to S."""
    union = pred | ref
    box = []
    for axis, size in enumerate(union.shape):
        others = tuple(a for a in range(union.ndim) if a != axis)
        hits = np.flatnonzero(union.any(axis=others))
        box.append(slice(max(int(hits[0]) - margin, 0), min(int(hits[-1]) + 1 + margin, size)))
    return tuple(box)
