"""Undo the preprocessing's geometry and label mapping, and write label maps as NIfTI.

A prediction is made on the array the cache would hold: the source grid cropped to the
non-zero bounding box (``LoadedCase.bbox``), internal label codes. A case resampled to a target
spacing has its outputs brought back to the crop's grid before they are decoded
(:mod:`trainables.engine.resize`); :func:`restore_geometry` then pastes the labels back into
the source grid (zeros outside the box: background).
:func:`to_source_labels` maps internal codes back to the dataset's own values (BraTS <= 2021
0/1/2/4, BraTS 2023 0/1/2/3, MSD Task01 0/1/2/3 in its order, binary 0/1), and
:func:`write_label_nifti` writes them with the input's affine and header, through a temporary
file renamed into place so an interrupted run never leaves a half-written ``<case>.nii.gz``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from trainables.data.labels import LabelScheme
from trainables.data.preprocess import crop_shape

BBox = Sequence[tuple[int, int]]


def restore_geometry(label: np.ndarray, shape: Sequence[int], bbox: BBox | None) -> np.ndarray:
    """Paste a label map predicted on the cropped array back into the source grid.

    Args:
        label: (X', Y', Z') codes on the cropped grid.
        shape: (X, Y, Z) of the source images.
        bbox: ((x0, x1), (y0, y1), (z0, z1)) the crop took from the source grid; None: no crop.

    Returns:
        (X, Y, Z) array of ``label``'s dtype, 0 outside the box.
    """
    if bbox is None:
        if tuple(label.shape) != tuple(shape):
            raise ValueError(f"label shape {label.shape} is not the source shape {tuple(shape)}")
        return label
    if crop_shape(bbox, shape) != tuple(label.shape):
        raise ValueError(f"label shape {label.shape} does not fit the crop {list(bbox)}")
    full = np.zeros(tuple(shape), dtype=label.dtype)
    full[tuple(slice(lo, hi) for lo, hi in bbox)] = label
    return full


def to_source_labels(
    label: np.ndarray, scheme: LabelScheme, declared: tuple[int, ...] = ()
) -> np.ndarray:
    """Internal codes (any shape) -> the scheme's own label values, uint8.

    The inverse of :func:`trainables.data.labels.to_internal`. Binary foreground is 1, or the
    dataset's own code where its dataset.json declares exactly one (``declared`` (0, 2): 2).
    """
    lut = np.zeros(max(scheme.to_internal.values()) + 1, dtype=np.uint8)
    for source, internal in sorted(scheme.to_internal.items(), reverse=True):
        lut[internal] = source  # reversed: the smallest source value wins a shared code
    codes = [v for v in declared if v != 0]
    if scheme.name == "binary" and len(codes) == 1 and 1 < codes[0] <= 255:
        lut[1] = codes[0]
    if label.size and int(label.max()) >= len(lut):
        raise ValueError(f"internal code {int(label.max())} is outside the {scheme.name} scheme")
    return lut[np.asarray(label, dtype=np.int64)]


def write_label_nifti(label: np.ndarray, reference: nib.Nifti1Image, path: Path) -> Path:
    """Write ``label`` (X, Y, Z) uint8 with ``reference``'s affine, qform/sform and header.

    The header is the reference's (units, orientation codes, description) with the data type
    set to uint8 and no intensity scaling; a 4-D reference (MSD) gives a 3-D file. Written to
    ``.<name>.tmp`` beside ``path`` and renamed, so ``path`` is complete or absent.
    """
    header = reference.header.copy()
    header.set_data_dtype(np.uint8)
    data = np.asarray(label, dtype=np.uint8)
    out = type(reference)(data, reference.affine, header=header)
    qform, qcode = reference.get_qform(coded=True)
    sform, scode = reference.get_sform(coded=True)
    out.set_qform(qform if qform is not None else reference.affine, code=int(qcode or 0))
    out.set_sform(sform if sform is not None else reference.affine, code=int(scode or 0))
    out.header.set_slope_inter(1.0, 0.0)
    out.header["cal_min"], out.header["cal_max"] = 0, float(data.max(initial=0))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{''.join(path.suffixes[-2:])}")
    nib.save(out, tmp)
    os.replace(tmp, path)
    return path
