"""The voxel grid of a NIfTI file: its header's spacing and affine checked, and two grids
compared. Used by case loading (every modality and the label on one grid) and by
``ablate evaluate`` (a prediction on its reference's grid)."""

from __future__ import annotations

import math
from pathlib import Path

import nibabel as nib
import numpy as np

from trainables.errors import CaseError

# Largest absolute difference between two affines (mm) still counted as the same voxel grid.
AFFINE_TOLERANCE = 1e-3


def spacing(img: nib.Nifti1Image) -> tuple[float, float, float]:
    """Voxel size in mm along (X, Y, Z) from the header zooms."""
    zooms = img.header.get_zooms()
    return float(zooms[0]), float(zooms[1]), float(zooms[2])


def check_header_grid(case_id: str, path: Path, what: str, img: nib.Nifti1Image) -> None:
    """The header must give a usable grid: spacing (pixdim) positive and finite, the affine
    finite. A NaN spacing would otherwise pass every later check and poison the cache's
    manifest (and every distance metric); a NaN affine compares as equal to anything."""
    size = spacing(img)
    if not all(math.isfinite(s) and s > 0 for s in size):
        shown = " x ".join(f"{s:g}" for s in size)
        message = f"{what} has voxel spacing {shown} mm in its header (pixdim): it must be > 0"
        raise CaseError(case_id, message, path)
    if not np.isfinite(np.asarray(img.affine)).all():
        raise CaseError(case_id, f"{what} has a non-finite affine in its header", path)


def affine_gap(a: np.ndarray, b: np.ndarray) -> float:
    """Largest absolute difference of two affines (mm)."""
    return float(np.max(np.abs(a - b)))


def check_affine(
    case_id: str, path: Path, what: str, affine: np.ndarray, reference: np.ndarray
) -> None:
    """``affine`` must be ``reference`` within :data:`AFFINE_TOLERANCE`; ``what`` names the
    two files in the message (``t1ce and t1``, ``prediction and reference``)."""
    diff = affine_gap(np.asarray(affine), np.asarray(reference))
    if not diff <= AFFINE_TOLERANCE:  # written so that NaN fails too
        message = (
            f"affines of {what} differ by up to {diff:.4g} (tolerance {AFFINE_TOLERANCE}): "
            "the files are not on one voxel grid"
        )
        raise CaseError(case_id, message, path)
