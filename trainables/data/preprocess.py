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
   - ``foreground`` (nnU-Net's ``CTNormalization``): clip to ``[lower, upper]`` and z-score with
     ``mean``/``std``, four numbers per modality computed *once per dataset* from the labelled
     foreground of its cases (:mod:`trainables.data.fingerprint`) and stored in the config's
     ``stats``; every case, labelled or not, is normalised with the same numbers and its own
     label is never read.
   - ``ct_window``: clip Hounsfield units to ``[center - width/2, center + width/2]``, scale to
     [0, 1].
   - ``none``: only cast to float32.
3. ``resample`` (``kind: target_spacing``): resample image and label to one voxel spacing,
   nnU-Net's way (:mod:`trainables.data.resample`); ``none`` (the default) keeps the grid.

Constant images (std 0, an empty brain mask) never produce NaN: the std is replaced by 1 and empty
masks leave the channel at 0.

:func:`foreground_sample` draws, per label class, the voxel coordinates the cache stores for
foreground oversampling (nnU-Net likewise computes class locations during preprocessing).
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Sequence
from dataclasses import replace
from typing import Annotated, Literal, assert_never

import numpy as np
from pydantic import Field, model_validator

from trainables.config import Frozen
from trainables.data.resample import NoResampling, ResampleConfig, TargetSpacing, resample_case
from trainables.data.types import LoadedCase
from trainables.errors import CaseError, InputError

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


class ForegroundIntensity(Frozen):
    """One modality's dataset-level foreground intensity statistics (nnU-Net's fingerprint).

    Attributes:
        modality: the channel these numbers normalise (``ct``, ``t1``...).
        lower: clip bound, the ``lower_percentile`` of the pooled foreground intensities (source
            units: HU for CT).
        upper: clip bound, the ``upper_percentile`` of the same intensities.
        mean: mean of the pooled (unclipped) foreground intensities.
        std: their standard deviation (> 0).
    """

    modality: str
    lower: float
    upper: float
    mean: float
    std: float = Field(gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> ForegroundIntensity:
        if self.lower > self.upper:
            raise ValueError(f"lower ({self.lower}) must not be above upper ({self.upper})")
        return self


class ForegroundNormalization(Frozen):
    """nnU-Net's CT normalisation with dataset-level foreground statistics.

    Attributes:
        lower_percentile: lower clip percentile (0-100) of the pooled foreground intensities.
        upper_percentile: upper clip percentile (0-100) of the pooled foreground intensities.
        stats: the numbers applied, one entry per modality. None (the usual setting) = computed
            when the dataset is prepared, from the labelled foreground of its cases; a trained
            model's config carries the computed ones, so prediction and external tests apply
            exactly the numbers training used. Written out, they are applied as given.
    """

    kind: Literal["foreground"] = "foreground"
    lower_percentile: float = Field(default=0.5, ge=0, le=100)
    upper_percentile: float = Field(default=99.5, ge=0, le=100)
    stats: tuple[ForegroundIntensity, ...] | None = None

    @model_validator(mode="after")
    def _ordered(self) -> ForegroundNormalization:
        if self.lower_percentile >= self.upper_percentile:
            raise ValueError(
                f"lower_percentile ({self.lower_percentile}) must be below "
                f"upper_percentile ({self.upper_percentile})"
            )
        names = [s.modality for s in self.stats or ()]
        if len(set(names)) != len(names):
            raise ValueError(f"stats name a modality more than once ({', '.join(names)})")
        return self

    def stats_for(self, modality: str) -> ForegroundIntensity:
        """The statistics of one modality.

        Raises:
            InputError: naming ``normalization.stats`` when they are unset or lack ``modality``.
        """
        where = "data.preprocess.normalization.stats"
        if self.stats is None:
            raise InputError(
                "'foreground' normalisation has no dataset statistics: they are computed when a "
                "dataset is prepared (a model trained before ablate did so cannot be applied; "
                "retrain it, or write the stats into its config)",
                where=where,
            )
        for entry in self.stats:
            if entry.modality == modality:
                return entry
        have = ", ".join(s.modality for s in self.stats) or "none"
        raise InputError(f"no statistics for modality {modality!r} (have: {have})", where=where)


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
        resample: resampling to one voxel spacing after the normalisation (nnU-Net's order),
            selected by ``kind``; ``none`` keeps each case's grid.
    """

    crop_to_nonzero: bool = True
    normalization: NormalizationConfig = Field(default_factory=ZScoreNormalization)
    resample: ResampleConfig = Field(default_factory=NoResampling)

    def requests(self) -> list[PreprocessConfig]:
        """The requests a cache holding exactly this preprocessing may have been prepared
        from: this config with any of the numbers a preparation computes from the dataset
        (``foreground`` statistics, the ``target_spacing``) unset, all of them first; empty
        when it has none set. A trained model's config holds them filled in, whether the
        trial computed them or wrote them out."""
        computed: list[tuple[str, Frozen]] = []
        norm, resample = self.normalization, self.resample
        if isinstance(norm, ForegroundNormalization) and norm.stats is not None:
            computed.append(("normalization", norm.model_copy(update={"stats": None})))
        if isinstance(resample, TargetSpacing) and resample.spacing is not None:
            computed.append(("resample", resample.model_copy(update={"spacing": None})))
        subsets = [
            subset
            for size in range(len(computed), 0, -1)
            for subset in itertools.combinations(computed, size)
        ]
        return [self.model_copy(update=dict(subset)) for subset in subsets]

    def fingerprint(self) -> str:
        """Short stable hash (16 hex digits) of the canonical config JSON and PREPROCESS_VERSION.

        Two configs that preprocess identically (e.g. a default left out vs. written explicitly)
        give the same fingerprint because defaults are filled in before hashing.
        """
        config = self.model_dump(mode="json")
        if config["resample"] == {"kind": "none"}:  # caches made before resampling stay valid
            del config["resample"]
        payload = {"version": PREPROCESS_VERSION, "config": config}
        canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def preprocess(case: LoadedCase, cfg: PreprocessConfig) -> LoadedCase:
    """Crop, normalise and resample one case; the normalisation never reads the label.

    Args:
        case: decoded case; image (C, X, Y, Z) any real dtype, label (X, Y, Z) uint8 or None.
        cfg: what to do (``foreground`` normalisation needs its ``stats`` set).

    Returns:
        A new case: image (C, X', Y', Z') float32, label cropped (and resampled) alike, ``bbox``
        set to the crop in source-grid voxels when cropping (composed with an existing
        ``bbox``); when resampled, ``spacing`` is the target and ``source_spacing`` the
        case's own. ``affine`` stays the source files' affine.
    """
    case = crop_case(case) if cfg.crop_to_nonzero else case
    image = normalize(np.asarray(case.image, dtype=np.float32), case.modalities, cfg.normalization)
    return resample_case(replace(case, image=image), cfg.resample)


def crop_case(case: LoadedCase) -> LoadedCase:
    """The case cropped to the box of voxels non-zero in any modality (image as float32)."""
    image = np.asarray(case.image, dtype=np.float32)
    box = nonzero_bbox(image)
    slices = tuple(slice(lo, hi) for lo, hi in box)
    label = case.label[slices] if case.label is not None else None
    if label is not None and case.label is not None:
        lost = int(np.count_nonzero(case.label)) - int(np.count_nonzero(label))
        if lost:  # a misregistered label: its tumour would vanish from training without a word
            message = (
                f"the label has {lost} foreground voxels where every image is 0 (outside the "
                "images' non-zero box): label and images do not match"
            )
            raise CaseError(case.case_id, message)
    bbox = _compose_bbox(case.bbox, box)
    return replace(case, image=image[(slice(None), *slices)], label=label, bbox=bbox)


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


def crop_shape(bbox: Sequence[tuple[int, int]] | None, shape: Sequence[int]) -> tuple[int, ...]:
    """The (X, Y, Z) a crop ``bbox`` of a ``shape`` grid covers (``shape`` when not cropped)."""
    return tuple(int(n) for n in shape) if bbox is None else tuple(hi - lo for lo, hi in bbox)


def _compose_bbox(
    outer: tuple[tuple[int, int], ...] | None, inner: tuple[tuple[int, int], ...]
) -> tuple[tuple[int, int], ...]:
    """Express ``inner`` (relative to an already-cropped array) in source-grid coordinates."""
    if outer is None:
        return inner
    return tuple((o0 + i0, o0 + i1) for (o0, _), (i0, i1) in zip(outer, inner, strict=True))


def normalize(image: np.ndarray, modalities: Sequence[str], cfg: NormalizationConfig) -> np.ndarray:
    """Normalise intensities (no variant reads a label).

    Args:
        image: (C, *S) float32; not modified.
        modalities: the C channel names (``foreground`` looks its statistics up by name).
        cfg: the normalisation variant.

    Returns:
        (C, *S) float32.
    """
    image = np.array(image, dtype=np.float32, copy=True)
    match cfg:
        case ZScoreNormalization():
            return _zscore(image, cfg)
        case ForegroundNormalization():
            return _foreground(image, modalities, cfg)
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
    image: np.ndarray, modalities: Sequence[str], cfg: ForegroundNormalization
) -> np.ndarray:
    """In place on ``image`` (C, *S): clip to ``[lower, upper]``, then ``(x - mean) / std``.

    nnU-Net's ``CTNormalization``: the four numbers of each modality are the dataset's
    (``cfg.stats``), the same for every case, so a case's normalised image depends on its
    intensities only, never on its label.
    """
    for channel, modality in zip(image, modalities, strict=True):
        stats = cfg.stats_for(modality)
        np.clip(channel, stats.lower, stats.upper, out=channel)
        channel -= stats.mean
        channel /= stats.std
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
