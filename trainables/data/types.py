"""Plain data types shared by the dataset layouts, the NIfTI loader, the cache and the engine."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# Canonical modality names. BraTS 2023 (t1n, t1c, t2w, t2f) and MSD (FLAIR, T1w, t1gd, T2w)
# names are mapped onto these by the layout readers.
BRATS_MODALITIES: tuple[str, ...] = ("t1", "t1ce", "t2", "flair")
CT_MODALITY = "ct"
MODALITIES: tuple[str, ...] = (*BRATS_MODALITIES, CT_MODALITY)


@dataclass(frozen=True)
class CaseRecord:
    """Where one case's files are, before anything is decoded.

    Attributes:
        case_id: the case name (directory name for BraTS, file stem for MSD).
        layout: "brats2021", "brats2023" or "msd".
        images: canonical modality -> file. For MSD's 4-D files every modality maps to the same
            file and ``channels`` gives its index along the 4th axis.
        label: label file, or None for unlabelled (test) cases.
        label_scheme: name of the source label scheme (see :mod:`trainables.data.labels`).
        channels: canonical modality -> channel index in a 4-D file (MSD only).
        label_values: the label values the dataset declares (MSD's dataset.json); any other
            value in the label file is a case error. Empty when none are declared.
    """

    case_id: str
    layout: str
    images: dict[str, Path]
    label: Path | None
    label_scheme: str
    channels: dict[str, int] = field(default_factory=dict)
    label_values: tuple[int, ...] = ()

    @property
    def modalities(self) -> tuple[str, ...]:
        """Modalities this case has, in canonical order."""
        return tuple(m for m in MODALITIES if m in self.images)


@dataclass
class LoadedCase:
    """One decoded case.

    Attributes:
        case_id: case name.
        image: (C, X, Y, Z) float32 (float16 when read from the cache), channels in
            ``modalities`` order.
        label: (X, Y, Z) uint8 internal label codes, or None.
        modalities: channel names.
        spacing: voxel size in mm along (X, Y, Z) of these arrays.
        affine: (4, 4) voxel-to-world matrix of the source files.
        bbox: ((x0, x1), (y0, y1), (z0, z1)) crop of the source grid this array covers, if cropped.
        source_spacing: the source grid's voxel size (mm) when the arrays were resampled to
            ``spacing`` (``data.preprocess.resample``); None: they are on the source grid.
    """

    case_id: str
    image: np.ndarray
    label: np.ndarray | None
    modalities: tuple[str, ...]
    spacing: tuple[float, float, float]
    affine: np.ndarray
    bbox: tuple[tuple[int, int], ...] | None = None
    source_spacing: tuple[float, float, float] | None = None
