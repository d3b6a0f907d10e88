"""Post-processing of a predicted label map, in the test pass and ``ablate predict`` alike
(``validation.test_postprocess``); validation, which selects the epoch, sees the raw map.

Rules the BraTS and nnU-Net literature ablate: keep only the largest connected component of
the foreground (nnU-Net's "remove all but the largest component", 26-connected in 3-D), then of
chosen regions one by one (nnU-Net's per-class step: a region's other components become
background), and relabel an enhancing-tumour prediction smaller than a threshold as necrosis
(Isensee et al.'s BraTS post-processing: a few false ET voxels in a case without ET cost that
case's whole ET Dice, scored 0 instead of 1). Which largest-component steps help is decided
from validation cases by :mod:`trainables.engine.postprocess_decide` (``largest_component:
auto``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from trainables.config.postprocess import PostprocessConfig
from trainables.config.trial import TrialConfig
from trainables.data.labels import LabelScheme, scheme_kind
from trainables.errors import InputError

FIELD = "validation.test_postprocess"


def postprocess_labels(
    labels: np.ndarray, cfg: PostprocessConfig, scheme: LabelScheme
) -> np.ndarray:
    """``labels`` (*S) internal codes after ``cfg``'s rules (a copy where one applies): small
    enhancing tumour to necrosis, the foreground's largest component, then each region's.

    ``min_et_voxels`` needs an ``et`` region (BraTS labels); with binary labels it does
    nothing (the trial's log says so, :class:`~trainables.engine.runner.TrialRunner`). An
    undecided ``largest_component: auto`` is an error: a run decides it after its last epoch.
    """
    if not cfg.decided:
        raise InputError(
            "largest_component is 'auto' but no run decided it (a run decides after its last "
            "epoch; one stopped earlier did not): run `ablate test` on its sweep, or set it "
            "to true or false",
            where=f"{FIELD}.largest_component",
        )
    out = small_enhancing_to_necrosis(labels, cfg.min_et_voxels, scheme)
    if cfg.largest_component:
        out = keep_largest_component(out, [c for c in range(1, scheme.num_classes)])
    for region in cfg.largest_component_regions:
        out = keep_largest_component(out, region_codes(scheme, region))
    return out


def small_enhancing_to_necrosis(
    labels: np.ndarray, min_voxels: int, scheme: LabelScheme
) -> np.ndarray:
    """``labels`` with its enhancing tumour relabelled necrosis when it has fewer than
    ``min_voxels`` voxels (0: off; binary labels: unchanged)."""
    if not min_voxels or "et" not in scheme.regions:
        return labels
    et = np.isin(labels, scheme.regions["et"])
    count = int(et.sum())
    if not 0 < count < min_voxels:
        return labels
    necrosis = next(c for c in scheme.regions["tc"] if c not in scheme.regions["et"])
    return np.where(et, necrosis, labels).astype(labels.dtype)


def keep_largest_component(labels: np.ndarray, codes: Sequence[int]) -> np.ndarray:
    """``labels`` with the voxels of ``codes`` outside their largest 26-connected component
    (full connectivity in any number of axes) set to background, as nnU-Net's
    ``remove_all_but_largest_component_from_segmentation``: components tied for the largest
    size are all kept, as acvl_utils keeps them; ``labels`` itself when the mask has at most
    one component."""
    mask = np.isin(labels, codes)
    components, count = ndimage.label(mask, structure=np.ones((3,) * labels.ndim))
    if count <= 1:
        return labels
    sizes = np.bincount(components.ravel())
    sizes[0] = 0  # outside the mask
    keep = sizes == sizes.max()  # per component id; id 0 (outside the mask) is never dropped
    return np.where(mask & ~keep[components], 0, labels).astype(labels.dtype)


def region_codes(scheme: LabelScheme, region: str) -> tuple[int, ...]:
    """The internal codes of ``region``; an error naming the scheme's regions otherwise."""
    if region not in scheme.regions:
        raise InputError(
            f"{region!r} is not a region of {scheme_kind(scheme)} labels (regions: "
            f"{', '.join(scheme.regions)})",
            where=f"{FIELD}.largest_component_regions",
        )
    return scheme.regions[region]


def with_postprocess(cfg: TrialConfig, postprocess: PostprocessConfig) -> TrialConfig:
    """``cfg`` with ``validation.test_postprocess`` replaced (a decided ``auto``)."""
    validation = cfg.validation.model_copy(update={"test_postprocess": postprocess})
    return cfg.model_copy(update={"validation": validation})
