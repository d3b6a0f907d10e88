"""Per-case preprocessing: crop to the head/brain and normalise intensities.

Runs once per case when a dataset is prepared into the cache (:mod:`trainables.data.cache`), so
training never repeats it. Every step is pure numpy on one :class:`LoadedCase`:

1. ``crop_to_nonzero``: crop every modality and the label to the bounding box of the voxels that
   are non-zero in *any* modality (BraTS volumes are ~60 % empty background). The box is kept in
   ``LoadedCase.bbox`` in source-grid voxel coordinates so predictions can be pasted back.
2. ``normalization`` (one of, selected by ``kind``):

   - ``zscore`` (BraTS default): per-modality mean/std over the brain mask (voxels non-zero in any
     modality), optional clip to ``±clip`` std, optional min-max rescale to [0, 1]; background
     voxels are set to 0 (after the min-max rescale 0 is also the brain minimum).
   - ``foreground`` (nnU-Net's CT scheme, per case): clip to percentiles of the intensities inside
     the label's foreground, then z-score with the mean/std of those foreground intensities.
   - ``ct_window``: clip Hounsfield units to ``[center - width/2, center + width/2]``, scale to
     [0, 1].
   - ``none``: only cast to float32.

Constant images (std 0, an empty brain mask) never produce NaN: the std is replaced by 1 and empty
masks leave the channel at 0.

:func:`foreground_sample` draws, per label class, the voxel coordinates the cache stores for
foreground oversampling (nnU-Net likewise computes class locations during preprocessing).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from typing import Annotated, Literal, assert_never

import numpy as np
from pydantic import Field, model_validator

from trainables.config import Frozen
from trainables.data.types import LoadedCase

# Bump whenever the algorithm changes in a way that changes the output arrays: it is part of the
# fingerprint, so every prepared cache made by the old code is rebuilt instead of silently reused.
PREPROCESS_VERSION = 1

# Foreground voxel coordinates stored per class for foreground oversampling (see foreground_sample).
FG_SAMPLES_PER_CLASS = 10_000

# Below this a standard deviation is treated as 0 (constant channel) to avoid dividing by ~0.
_MIN_STD = 1e-8


class ZScoreNormalization(Frozen):
    """Per-modality z-score over the brain mask (BTRSeg / BraTS convention).

    Attributes:
        clip: clip z-scores to ``[-clip, clip]``; None keeps the full range.
        minmax: after clipping, rescale each modality's brain voxels to [0, 1].
    """

    kind: Literal["zscore"] = "zscore"
    clip: float | None = Field(default=5.0, gt=0)
    minmax: bool = False


class ForegroundNormalization(Frozen):
    """nnU-Net CT normalisation, with statistics from this case's labelled foreground.

    Attributes:
        lower_percentile: lower clip percentile (0-100) of the foreground intensities.
        upper_percentile: upper clip percentile (0-100) of the foreground intensities.
    """

    kind: Literal["foreground"] = "foreground"
    lower_percentile: float = Field(default=0.5, ge=0, le=100)
    upper_percentile: float = Field(default=99.5, ge=0, le=100)

    @model_validator(mode="after")
    def _ordered(self) -> ForegroundNormalization:
        if self.lower_percentile >= self.upper_percentile:
            raise ValueError(
                f"lower_percentile ({self.lower_percentile}) must be below "
                f"upper_percentile ({self.upper_percentile})"
            )
        return self


class CTWindowNormalization(Frozen):
    """Clip to a Hounsfield window and scale to [0, 1] (haemorrhage window by default).

    Attributes:
        center: window centre in HU.
        width: window width in HU.
    """

    kind: Literal["ct_window"] = "ct_window"
    center: float = 96.0
    width: float = Field(default=59.0, gt=0)


class NoNormalization(Frozen):
    """Keep the raw intensities (cast to float32)."""

    kind: Literal["none"] = "none"


NormalizationConfig = Annotated[
    ZScoreNormalization | ForegroundNormalization | CTWindowNormalization | NoNormalization,
    Field(discriminator="kind"),
]


class PreprocessConfig(Frozen):
    """What :func:`preprocess` does to each case.

    Attributes:
        crop_to_nonzero: crop to the bounding box of voxels non-zero in any modality.
        normalization: intensity normalisation, selected by ``kind``.
    """

    crop_to_nonzero: bool = True
    normalization: NormalizationConfig = Field(default_factory=ZScoreNormalization)

    def fingerprint(self) -> str:
        """Short stable hash (16 hex digits) of the canonical config JSON and PREPROCESS_VERSION.

        Two configs that preprocess identically (e.g. a default left out vs. written explicitly)
        give the same fingerprint because defaults are filled in before hashing.
        """
        payload = {"version": PREPROCESS_VERSION, "config": self.model_dump(mode="json")}
        canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def preprocess(case: LoadedCase, cfg: PreprocessConfig) -> LoadedCase:
    """Crop and normalise one case.

    Args:
        case: decoded case; image (C, X, Y, Z) any real dtype, label (X, Y, Z) uint8 or None.
        cfg: what to do.

    Returns:
        A new case: image (C, X', Y', Z') float32, label cropped alike, ``bbox`` set to the crop
        in source-grid voxels when cropping (composed with an existing ``bbox``). ``affine`` stays
        the source files' affine.
    """
    image = np.asarray(case.image, dtype=np.float32)
    label = case.label
    bbox = case.bbox
    if cfg.crop_to_nonzero:
        box = nonzero_bbox(image)
        slices = tuple(slice(lo, hi) for lo, hi in box)
        image = image[(slice(None), *slices)]
        label = label[slices] if label is not None else None
        bbox = _compose_bbox(bbox, box)
    image = normalize(image, label, cfg.normalization)
    return replace(case, image=image, label=label, bbox=bbox)


def nonzero_bbox(image: np.ndarray) -> tuple[tuple[int, int], ...]:
    """Bounding box of voxels non-zero in any channel.

    Args:
        image: (C, *S) array.

    Returns:
        One half-open ``(start, stop)`` pair per spatial axis; the whole extent if all voxels are 0
        (nothing to crop to, and an empty box would make an unusable case).
    """
    mask = np.any(image != 0, axis=0)
    box = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(np.any(mask, axis=other))
        box.append((int(hits[0]), int(hits[-1]) + 1) if hits.size else (0, mask.shape[axis]))
    return tuple(box)


def _compose_bbox(
    outer: tuple[tuple[int, int], ...] | None, inner: tuple[tuple[int, int], ...]
) -> tuple[tuple[int, int], ...]:
    """Express ``inner`` (relative to an already-cropped array) in source-grid coordinates."""
    if outer is None:
        return inner
    return tuple((o0 + i0, o0 + i1) for (o0, _), (i0, i1) in zip(outer, inner, strict=True))


def normalize(image: np.ndarray, label: np.ndarray | None, cfg: NormalizationConfig) -> np.ndarray:
    """Normalise intensities.

    Args:
        image: (C, *S) float32; not modified.
        label: (*S) internal label codes or None (used by ``foreground`` only).
        cfg: the normalisation variant.

    Returns:
        (C, *S) float32.
    """
    image = np.array(image, dtype=np.float32, copy=True)
    match cfg:
        case ZScoreNormalization():
            return _zscore(image, cfg)
        case ForegroundNormalization():
            return _foreground(image, label, cfg)
        case CTWindowNormalization():
            return _ct_window(image, cfg)
        case NoNormalization():
            return image
        case _:  # a new kind must be handled here, not silently left unnormalised
            assert_never(cfg)


def _mean_std(values: np.ndarray) -> tuple[float, float]:
    """Mean and std (float64 accumulation) of a 1-D sample; std 0 -> 1 so x - mean stays finite."""
    if values.size == 0:
        return 0.0, 1.0
    mean = float(values.mean(dtype=np.float64))
    std = float(values.std(dtype=np.float64))
    return mean, (std if std > _MIN_STD else 1.0)


def _zscore(image: np.ndarray, cfg: ZScoreNormalization) -> np.ndarray:
    """In place on ``image`` (C, *S) float32: z-score each channel over the brain mask."""
    brain = np.any(image != 0, axis=0)
    background = ~brain
    for channel in image:
        mean, std = _mean_std(channel[brain])
        channel -= mean
        channel /= std
        if cfg.clip is not None:
            np.clip(channel, -cfg.clip, cfg.clip, out=channel)
        if cfg.minmax:
            _minmax_in_place(channel, brain)
        channel[background] = 0.0
    return image


def _minmax_in_place(channel: np.ndarray, mask: np.ndarray) -> None:
    """Rescale ``channel`` so its values inside ``mask`` span [0, 1]; constant -> 0."""
    values = channel[mask]
    if values.size == 0:
        return
    low, high = float(values.min()), float(values.max())
    channel -= low
    if high - low > _MIN_STD:
        channel /= high - low
    else:
        channel[...] = 0.0


def _foreground(
    image: np.ndarray, label: np.ndarray | None, cfg: ForegroundNormalization
) -> np.ndarray:
    """In place on ``image`` (C, *S): clip to foreground percentiles, z-score by foreground stats.

    As in nnU-Net's ``CTNormalization`` the mean/std are those of the (unclipped) foreground
    intensities. nnU-Net gathers them over the whole training set; here they come from the case
    itself, so no dataset-wide pass is needed. Cases with no labelled foreground (or no label) fall
    back to the non-zero region, then to the whole image.
    """
    region = label > 0 if label is not None else np.zeros(image.shape[1:], dtype=bool)
    if not region.any():
        region = np.any(image != 0, axis=0)
    if not region.any():
        region = np.ones(image.shape[1:], dtype=bool)
    for channel in image:
        values = channel[region]
        low, high = np.percentile(values, [cfg.lower_percentile, cfg.upper_percentile])
        mean, std = _mean_std(values)
        np.clip(channel, low, high, out=channel)
        channel -= mean
        channel /= std
    return image


def _ct_window(image: np.ndarray, cfg: CTWindowNormalization) -> np.ndarray:
    """In place on ``image`` (C, *S) in HU: clip to the window and map it onto [0, 1]."""
    low = cfg.center - cfg.width / 2
    np.clip(image, low, low + cfg.width, out=image)
    image -= low
    image /= cfg.width
    return image


def foreground_sample(
    label: np.ndarray | None, case_id: str, per_class: int = FG_SAMPLES_PER_CLASS
) -> tuple[np.ndarray, tuple[tuple[int, int], ...]]:
    """Random subsample of foreground voxel coordinates per internal class.

    Args:
        label: (X, Y, Z) internal codes or None.
        case_id: seeds the subsample, so preparing twice gives the same file.
        per_class: most coordinates kept per class.

    Returns:
        ((N, 3) int32 coordinates grouped by class in increasing class order,
        ((class, count), ...) for the classes present).
    """
    if label is None:
        return np.zeros((0, 3), dtype=np.int32), ()
    flat = np.flatnonzero(label)
    codes = label.ravel()[flat]
    rng = np.random.default_rng(int.from_bytes(hashlib.sha256(case_id.encode()).digest()[:8]))
    chunks, classes = [], []
    for cls in np.unique(codes):
        members = flat[codes == cls]
        if members.size > per_class:
            members = np.sort(rng.choice(members, size=per_class, replace=False))
        chunks.append(members)
        classes.append((int(cls), int(members.size)))
    picked = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int64)
    coords = np.stack(np.unravel_index(picked, label.shape), axis=1).astype(np.int32)
    return coords.reshape(-1, 3), tuple(classes)
