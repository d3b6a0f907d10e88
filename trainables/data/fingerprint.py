"""Dataset-level numbers: foreground intensity statistics for ``foreground`` normalisation,
and the target spacing of ``target_spacing`` resampling (:func:`with_dataset_spacing`).

nnU-Net's ``CTNormalization`` clips every case to the 0.5th and 99.5th percentiles of the
*training dataset's* foreground intensities and z-scores it with their mean and std. Its
"dataset fingerprint" computes those four numbers per channel once: a subsample of the
foreground voxels (label > 0, after the crop to the non-zero box) of every labelled case, pooled.
This module does the same when a dataset is prepared (:func:`trainables.data.cache.prepare`),
so a case's normalised image never depends on its own label, and the numbers travel with the
cache's manifest and the trained model's config (``normalization.stats``).

Which cases: every labelled case of the dataset being prepared. The cache is shared by all
trials, splits and folds of a sweep and is made before any split exists, so the numbers cannot
be restricted to one split's training cases; nnU-Net likewise pools all of ``imagesTr``,
including the cases its 5-fold cross-validation later validates on (but not ``imagesTs``: a
split's test cases do contribute here). The four pooled numbers per channel say nothing about
where any one case's foreground is. Unlabelled cases contribute
nothing (they have no foreground to sample); a dataset prepared for an external test or for
``ablate predict`` is normalised with the trained model's numbers, never recomputed.

One deviation in the sample: nnU-Net draws the same number of voxels from every case (10^8
split over the cases, with replacement); here a case contributes all its foreground voxels up
to :data:`SAMPLES_PER_CASE` (a seeded subsample without replacement above that), so below the
cap a case with more foreground weighs more.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

import numpy as np

from trainables.data.nifti import load_case, open_nifti
from trainables.data.nifti_grid import spacing as header_spacing
from trainables.data.parallel import map_cases
from trainables.data.preprocess import (
    ForegroundIntensity,
    ForegroundNormalization,
    PreprocessConfig,
    crop_case,
)
from trainables.data.resample import TargetSpacing, dataset_target_spacing
from trainables.data.types import MODALITIES, CaseRecord, LoadedCase
from trainables.errors import CaseError, InputError

# Foreground voxels sampled per labelled case (all of them when the case has fewer).
SAMPLES_PER_CASE = 100_000

Samples = dict[str, np.ndarray]  # modality -> 1-D float32 foreground intensities


def with_dataset_stats(
    cfg: PreprocessConfig,
    records: Sequence[CaseRecord],
    workers: int = 1,
    progress: Callable[[int, int, str], None] | None = None,
) -> PreprocessConfig:
    """``cfg`` with ``foreground`` normalisation's ``stats`` computed from ``records``.

    Other normalisations, and ``foreground`` with its stats written out, are returned as they are.

    Args:
        cfg: the requested preprocessing.
        records: the dataset's cases; the labelled ones are sampled (see the module docstring).
        workers: processes decoding cases in parallel (1 = in this process).
        progress: called as ``progress(done, total, name)`` after each sampled case.

    Raises:
        InputError: no labelled case has a foreground voxel to compute the statistics from.
    """
    norm = cfg.normalization
    if not isinstance(norm, ForegroundNormalization) or norm.stats is not None:
        return cfg
    labelled = [r for r in records if r.label is not None]
    jobs = [(record, cfg.crop_to_nonzero) for record in labelled]
    names = [f"{r.case_id} (foreground intensities)" for r in labelled]
    samples = [s for s in map_cases(_case_samples, jobs, names, workers, progress) if s]
    if not samples:
        raise InputError(
            "'foreground' normalisation computes its clip range, mean and std from the labelled "
            f"foreground of the dataset's cases, and none of its {len(labelled)} labelled cases "
            "has a foreground voxel; write data.preprocess.normalization.stats or choose another "
            "normalization (zscore, ct_window, none)",
            where="data.preprocess.normalization",
        )
    stats = pooled_stats(samples, norm.lower_percentile, norm.upper_percentile)
    return cfg.model_copy(update={"normalization": norm.model_copy(update={"stats": stats})})


def _case_samples(record: CaseRecord, crop: bool) -> Samples | None:
    """One case's foreground intensities per modality; None if it cannot be read (the
    preparation names it) or has no foreground."""
    try:
        case = load_case(record)
    except CaseError:
        return None
    return foreground_intensities(crop_case(case) if crop else case)


def foreground_intensities(case: LoadedCase, per_case: int = SAMPLES_PER_CASE) -> Samples | None:
    """Intensities of the case's foreground voxels (label > 0), per modality.

    Args:
        case: image (C, X, Y, Z), label (X, Y, Z) internal codes.
        per_case: most voxels kept; above it a subsample seeded by the case id (the same
            voxels in every modality, so preparing twice gives the same numbers).

    Returns:
        modality -> (N,) float32, or None when the case has no label or no foreground.
    """
    if case.label is None:
        return None
    flat = np.flatnonzero(case.label)
    if flat.size == 0:
        return None
    if flat.size > per_case:
        rng = np.random.default_rng(
            int.from_bytes(hashlib.sha256(case.case_id.encode()).digest()[:8])
        )
        flat = np.sort(rng.choice(flat, size=per_case, replace=False))
    image = np.asarray(case.image, dtype=np.float32)
    return {m: image[i].ravel()[flat] for i, m in enumerate(case.modalities)}


def pooled_stats(
    samples: Sequence[Samples], lower_percentile: float, upper_percentile: float
) -> tuple[ForegroundIntensity, ...]:
    """Per modality, percentiles (linear interpolation, as ``np.percentile``), mean and std
    (float64 accumulation) of the samples of every case pooled; std 0 is stored as 1."""
    present = {m for sample in samples for m in sample}
    modalities = [m for m in MODALITIES if m in present] + sorted(present - set(MODALITIES))
    stats = []
    for modality in modalities:
        values = np.concatenate([s[modality] for s in samples if modality in s])
        lower, upper = np.percentile(values, [lower_percentile, upper_percentile])
        std = float(values.std(dtype=np.float64))
        stats.append(
            ForegroundIntensity(
                modality=modality,
                lower=float(lower),
                upper=float(upper),
                mean=float(values.mean(dtype=np.float64)),
                std=std if std > 1e-8 else 1.0,
            )
        )
    return tuple(stats)


def with_dataset_spacing(cfg: PreprocessConfig, records: Sequence[CaseRecord]) -> PreprocessConfig:
    """``cfg`` with ``target_spacing`` resampling's ``spacing`` computed from ``records``
    (nnU-Net's rule, :func:`~trainables.data.resample.dataset_target_spacing`).

    From the headers of the labelled cases' first image (all cases when none is labelled; a
    spacing says nothing of a label), so no voxel is decoded. A case whose header cannot be read
    is left out here (its preparation names it). One deviation: nnU-Net's median shape is that
    after the crop to the non-zero box; the headers give the shape before it.

    Raises:
        InputError: no case's header could be read.
    """
    resample = cfg.resample
    if not isinstance(resample, TargetSpacing) or resample.spacing is not None:
        return cfg
    labelled = [r for r in records if r.label is not None] or list(records)
    grids = [g for g in (_header_grid(r) for r in labelled) if g is not None]
    if not grids:
        raise InputError(
            "'target_spacing' resampling computes its spacing from the dataset's image headers, "
            f"and none of its {len(labelled)} cases has a readable one; write "
            "data.preprocess.resample.spacing",
            where="data.preprocess.resample",
        )
    target = dataset_target_spacing([g[0] for g in grids], [g[1] for g in grids])
    update = {"resample": resample.model_copy(update={"spacing": target})}
    return cfg.model_copy(update=update)


def _header_grid(record: CaseRecord) -> tuple[tuple[float, float, float], tuple[int, ...]] | None:
    """(spacing mm, spatial shape) from the header of the case's first image, or None."""
    path = record.images[record.modalities[0]]
    try:
        img = open_nifti(path, record.case_id, header_only=True)
    except CaseError:
        return None
    return header_spacing(img), tuple(int(n) for n in img.shape[:3])
