"""Post-processing of a predicted label map, in the test pass and ``ablate predict`` alike
(``validation.test_postprocess``); validation, which selects the epoch, sees the raw map.

Two rules the BraTS and nnU-Net literature ablate: keep only the largest connected component
of the foreground (nnU-Net's "remove all but the largest component", 26-connected in 3-D), and
relabel an enhancing-tumour prediction smaller than a threshold as necrosis (Isensee et al.'s
BraTS post-processing: a few false ET voxels in a case without ET cost that case's whole ET
Dice, scored 0 instead of 1).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from trainables.config.trial import PostprocessConfig
from trainables.data.labels import LabelScheme


def postprocess_labels(
    labels: np.ndarray, cfg: PostprocessConfig, scheme: LabelScheme
) -> np.ndarray:
    """``labels`` (*S) internal codes after ``cfg``'s rules (a copy where one applies).

    ``min_et_voxels`` needs an ``et`` region (BraTS labels); with binary labels it does
    nothing (the trial's log says so, :class:`~trainables.engine.runner.TrialRunner`).
    """
    out = labels
    if cfg.min_et_voxels and "et" in scheme.regions:
        et = np.isin(out, scheme.regions["et"])
        count = int(et.sum())
        if 0 < count < cfg.min_et_voxels:
            necrosis = next(c for c in scheme.regions["tc"] if c not in scheme.regions["et"])
            out = np.where(et, necrosis, out).astype(labels.dtype)
    if cfg.largest_component:
        foreground = out > 0
        components, count = ndimage.label(foreground, structure=np.ones((3,) * out.ndim))
        if count > 1:
            sizes = np.bincount(components.ravel())
            sizes[0] = 0  # background
            out = np.where(components == sizes.argmax(), out, 0).astype(labels.dtype)
    return out
