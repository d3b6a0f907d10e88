"""The voxel grid of a NIfTI file: its header's spacing and affine checked, and two grids
compared. Used by case loading (every modality and the label on one grid) and by
``ablate evaluate`` (a prediction on its reference's grid)."""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import nibabel as nib
import numpy as np

from trainables.errors import CaseError

# Largest absolute difference between two affines (mm) still counted as the same voxel grid.
AFFINE_TOLERANCE = 1e-3
# Largest relative difference between pixdim and the affine's voxel size still taken as one.
SPACING_RTOL = 1e-3


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
    _check_spacing_matches_affine(case_id, path, what, img, size)


def _check_spacing_matches_affine(
    case_id: str, path: Path, what: str, img: nib.Nifti1Image, size: tuple[float, ...]
) -> None:
    """The spacing (pixdim, what ablate resamples and measures distances with) must be the
    voxel size of the affine (what predictions are written with): an sform of 3 mm voxels
    over a pixdim of 1 mm scored HD95 in the wrong unit and wrote predictions whose header
    said another size than the input's."""
    voxel = np.linalg.norm(np.asarray(img.affine)[:3, :3], axis=0)
    if np.allclose(size, voxel, rtol=SPACING_RTOL, atol=0.0):
        return
    which = "sform" if int(img.header["sform_code"]) > 0 else "qform"
    shown = " x ".join(f"{s:g}" for s in size), " x ".join(f"{v:g}" for v in voxel)
    message = (
        f"{what}'s header spacing (pixdim) {shown[0]} mm is not its affine's ({which}) voxel "
        f"size {shown[1]} mm: the header contradicts itself; rewrite it with one spacing"
    )
    raise CaseError(case_id, message, path)


class _Caught(logging.Filter):
    """Keeps (and holds back) the messages nibabel logs from one thread."""

    def __init__(self) -> None:
        super().__init__()
        self.thread, self.messages = threading.get_ident(), []

    def filter(self, record: logging.LogRecord) -> bool:
        if record.thread != self.thread:
            return True
        self.messages.append(record.getMessage())
        return False


@contextmanager
def header_repairs(case_id: str, path: Path) -> Iterator[None]:
    """Around a NIfTI read: what nibabel repairs in the header, said with the file's name.

    nibabel sets a zero spacing (pixdim[1..3]) to 1 mm and a negative one to its absolute value
    while reading, and says so on stderr without naming the file. A zero spacing is unknown,
    not 1 mm (every resampling and distance would use a made-up size): a CaseError. Other
    repairs (a negative pixdim is only a sign, kept in qfac) are logged again with the path.
    """
    logger = logging.getLogger("nibabel.global")
    caught = _Caught()
    logger.addFilter(caught)
    try:
        yield
    finally:
        logger.removeFilter(caught)
    for message in caught.messages:
        if "non-zero" in message:
            raise CaseError(
                case_id,
                "the header's voxel spacing (pixdim[1..3]) holds 0, so the spacing is unknown "
                "(nibabel would read it as 1 mm): write the true spacing into the header",
                path,
            )
        logger.warning("%s: %s", path, message)


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
