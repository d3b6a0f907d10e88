"""Label schemes and tumour regions.

Every supported dataset's labels are mapped onto one internal scheme so models, losses and
metrics never see dataset-specific codes:

====  ==========================================  ===========  ===========  ===================
code  internal meaning                            BraTS<=2021  BraTS 2023+  MSD Task01
====  ==========================================  ===========  ===========  ===================
0     background                                  0            0            0
1     necrotic / non-enhancing tumour core (NCR)  1            1            2 (non-enhancing)
2     peritumoural oedema (ED)                    2            2            1 (oedema)
3     enhancing tumour (ET)                       4            3            3 (enhancing)
====  ==========================================  ===========  ===========  ===================

Regions (BraTS evaluation): WT = {1, 2, 3}, TC = {1, 3}, ET = {3} in internal codes. The
``binary`` scheme (CT haemorrhage, brain tissue) maps any positive label to 1 with one region, FG
(subtypes merge into one foreground); a negative label is an error, and so is a value an MSD
folder's dataset.json does not list (:func:`trainables.data.nifti_voxels.map_label`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trainables.config.base import look_up_option


@dataclass(frozen=True)
class LabelScheme:
    """How one dataset encodes its labels and which regions are evaluated.

    Attributes:
        name: scheme name used in configs and manifests.
        to_internal: source label value -> internal code.
        regions: region name -> internal codes it contains, in evaluation order.
    """

    name: str
    to_internal: dict[int, int]
    regions: dict[str, tuple[int, ...]]

    @property
    def num_classes(self) -> int:
        """Number of internal classes including background (softmax output channels)."""
        return max(self.to_internal.values()) + 1

    @property
    def region_names(self) -> tuple[str, ...]:
        return tuple(self.regions)


_BRATS_REGIONS = {"wt": (1, 2, 3), "tc": (1, 3), "et": (3,)}

SCHEMES: dict[str, LabelScheme] = {
    "brats2021": LabelScheme("brats2021", {0: 0, 1: 1, 2: 2, 4: 3}, _BRATS_REGIONS),
    "brats2023": LabelScheme("brats2023", {0: 0, 1: 1, 2: 2, 3: 3}, _BRATS_REGIONS),
    "msd_brats": LabelScheme("msd_brats", {0: 0, 1: 2, 2: 1, 3: 3}, _BRATS_REGIONS),
    "binary": LabelScheme("binary", {0: 0, 1: 1}, {"fg": (1,)}),
}

# After mapping, every BraTS-like scheme shares this internal scheme.
INTERNAL_BRATS = LabelScheme("internal", {0: 0, 1: 1, 2: 2, 3: 3}, _BRATS_REGIONS)
INTERNAL_BINARY = LabelScheme("internal_binary", {0: 0, 1: 1}, {"fg": (1,)})


def get_scheme(name: str) -> LabelScheme:
    """Look a scheme up by name; the error lists the known schemes."""
    return SCHEMES[look_up_option(name, SCHEMES, field="data.label_scheme")]


def scheme_kind(scheme: LabelScheme) -> str:
    """``binary (foreground)`` or ``BraTS``: how messages name a scheme's labels."""
    return "binary (foreground)" if scheme.name.endswith("binary") else "BraTS"


def internal_scheme(scheme: LabelScheme) -> LabelScheme:
    """The internal scheme a source scheme maps onto (codes 0..num_classes-1)."""
    return INTERNAL_BINARY if scheme.name == "binary" else INTERNAL_BRATS


def unknown_labels(label: np.ndarray, scheme: LabelScheme) -> list[int]:
    """Label values present in ``label`` that ``scheme`` does not define (sorted)."""
    present = np.unique(label)
    if scheme.name == "binary":  # any positive value is foreground (subtypes merge into one)
        return sorted(int(v) for v in present if v < 0)  # no convention reads -1 as foreground
    return sorted(int(v) for v in present if int(v) not in scheme.to_internal)


def to_internal(label: np.ndarray, scheme: LabelScheme) -> np.ndarray:
    """Map source label codes to internal codes.

    Args:
        label: integer label map of any shape, source codes.
        scheme: the source scheme.

    Returns:
        uint8 array of the same shape with internal codes.

    Raises:
        ValueError: if ``label`` holds a value the scheme does not define (callers wrap this
            into a :class:`~trainables.errors.CaseError` naming the file).
    """
    binary = scheme.name == "binary"
    bad = unknown_labels(label, scheme)
    if bad:
        allowed = (
            "0 background, any positive value foreground"
            if binary
            else f"allowed: {sorted(scheme.to_internal)}"
        )
        raise ValueError(f"labels {bad} are outside the {scheme.name} scheme ({allowed})")
    if binary:
        return (label != 0).astype(np.uint8)
    lut = np.zeros(max(scheme.to_internal) + 1, dtype=np.uint8)
    for source, internal in scheme.to_internal.items():
        lut[source] = internal
    return lut[label.astype(np.int64)]


def regions_from_labels(label: np.ndarray, scheme: LabelScheme = INTERNAL_BRATS) -> np.ndarray:
    """Binary region masks from an internal label map.

    Args:
        label: (*S) internal codes.
        scheme: internal scheme whose regions to build.

    Returns:
        (R, *S) bool array, one mask per region in ``scheme.regions`` order.
    """
    return np.stack([np.isin(label, codes) for codes in scheme.regions.values()])
