"""Checks on decoded NIfTI voxels: images real-valued, finite after the header's scaling and not
constant; labels whole numbers in range, mapped to internal codes. Used by
:mod:`trainables.data.nifti`; every check raises a CaseError naming the case and the file."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from trainables.data.labels import LabelScheme, to_internal
from trainables.errors import CaseError

LABEL_LIMIT = 2**31  # larger label values are no scheme's (and would wrap when cast)


def check_real_valued(case_id: str, path: Path, what: str, dtype: np.dtype) -> None:
    """Complex, RGB or other structured voxels: a cast would drop parts silently."""
    if dtype.kind not in "iuf":
        message = f"{what} has {dtype} voxels; ablate reads real-valued images"
        raise CaseError(case_id, message, path)


def apply_scaling(channel: np.ndarray, img: nib.Nifti1Image) -> None:
    """Apply the header's scl_slope/scl_inter in place (nibabel already sanitised them)."""
    slope, inter = float(img.dataobj.slope), float(img.dataobj.inter)
    if slope != 1.0:
        channel *= np.float32(slope)
    if inter != 0.0:
        channel += np.float32(inter)


def check_finite(
    case_id: str, path: Path, what: str, channel: np.ndarray, img: nib.Nifti1Image
) -> None:
    """Every voxel finite after scaling. Scaled integer files are checked too: a large
    scl_slope overflows float32 to inf (and the preprocessing then makes NaN)."""
    slope, inter = float(img.dataobj.slope), float(img.dataobj.inter)
    scaled = slope != 1.0 or inter != 0.0
    if img.get_data_dtype().kind != "f" and not scaled:
        return  # integers as they are fit float32: no pass over the voxels
    # A float64 sum of finite float32 values cannot overflow, so this is an exact, cheap test.
    if np.isfinite(channel.sum(dtype=np.float64)):
        return
    n_nan, n_inf = int(np.isnan(channel).sum()), int(np.isinf(channel).sum())
    message = f"{what} has {n_nan} NaN and {n_inf} infinite voxels"
    if scaled:
        message += f" after the header's scaling (scl_slope {slope:g})"
    elif img.get_data_dtype().itemsize > 4 and n_inf:
        message += " (values beyond float32's range, about 3.4e38, count as infinite)"
    raise CaseError(case_id, message, path)


def check_not_constant(case_id: str, path: Path, what: str, channel: np.ndarray) -> None:
    """A scan whose voxels all hold one value (an all-zero volume, mostly) is an empty or broken
    export: no scanner writes one, and training on its labels would teach noise."""
    low = float(channel.min())
    if low == float(channel.max()):
        message = f"{what} is constant (every voxel is {low:g}): an empty or broken file"
        raise CaseError(case_id, message, path)


def label_codes(data: np.ndarray, path: Path, case_id: str) -> np.ndarray:
    """Label voxels (any real dtype) as integers in source codes.

    Float files are accepted when every value is a whole number (some tools save labels as
    float32); NaN, inf, fractional and huge values, and complex or structured voxels, are
    errors.
    """
    if data.dtype.kind == "b":
        return data.view(np.uint8)
    if data.dtype.kind not in "iuf":
        message = f"label has {data.dtype} voxels; ablate reads integer (or whole-number) labels"
        raise CaseError(case_id, message, path)
    if data.dtype.kind != "f":
        return data
    n_bad = int(np.count_nonzero(~np.isfinite(data)))
    if n_bad:
        raise CaseError(case_id, f"label has {n_bad} NaN or infinite voxels", path)
    fractional = data[data != np.round(data)]
    if fractional.size:  # enough digits to show 4.0000005 as such
        examples = ", ".join(f"{v:.9g}" for v in np.unique(fractional)[:5])
        message = f"label has {fractional.size} non-integer voxels (values {examples})"
        raise CaseError(case_id, message, path)
    huge = data[np.abs(data) >= LABEL_LIMIT]
    if huge.size:
        examples = ", ".join(f"{v:.6g}" for v in np.unique(huge)[:5])
        raise CaseError(case_id, f"label has {huge.size} voxels of values {examples}", path)
    return data.astype(np.int64)


def _check_declared(
    source: np.ndarray, declared: tuple[int, ...], case_id: str, path: Path
) -> None:
    """Refuse label values the dataset does not declare (``declared``; () checks nothing)."""
    if not declared:
        return
    extra = np.setdiff1d(np.unique(source), np.asarray(declared))
    if extra.size:
        shown = ", ".join(str(int(v)) for v in extra[:5])
        listed = ", ".join(map(str, declared))
        message = f"label has values {shown} that dataset.json does not list (it lists {listed})"
        raise CaseError(case_id, message, path)


def map_label(
    source: np.ndarray, scheme: LabelScheme, case_id: str, path: Path, declared: tuple[int, ...]
) -> np.ndarray:
    """Source codes -> internal uint8 codes; values the dataset does not declare (``declared``,
    its dataset.json's; () for any) or outside the scheme are a CaseError naming the file."""
    _check_declared(source, declared, case_id, path)
    try:
        return to_internal(source, scheme)
    except ValueError as exc:  # to_internal lists the bad and the allowed values
        raise CaseError(case_id, str(exc), path) from None
