"""Synthetic BraTS-2021-layout cases that a small network can learn from.

A case is a head in an ``(X, Y, Z)`` voxel grid (:mod:`trainables.data.synth_anatomy`: scalp,
skull and CSF rim around a brain with white/grey matter and two ventricles; most cases hold one,
sometimes two, irregular tumours, so WT ⊇ TC ⊇ ET). Each class has a mean intensity per
modality like real MRI (T1: WM > GM > CSF; T2: CSF bright; FLAIR: CSF dark, oedema bright;
T1ce: enhancing rim bright), then partial volume, texture, a mild bias field, a gain and Rician
noise are applied.

Unlike real BraTS (skull-stripped), scalp and skull are kept so "crop to non-zero" has work to
do. Intensities are integers in [1, 32767] inside the head and 0 outside (the non-zero mask is
the head in every modality): float32 in memory, int16 on disk like real BraTS, so a loaded file
equals the generated array. Geometry is in voxels; ``spacing`` only sets the affine.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np

from trainables.data.parallel import map_cases
from trainables.data.synth_anatomy import grid, head_and_lesion, smooth_noise
from trainables.data.synth_files import (
    GENERATOR,
    MARKER,
    case_stream,
    check_params,
    check_shape,
    claim_out_dir,
    is_lesion_free,
    write_marker,
)
from trainables.data.types import BRATS_MODALITIES

__all__ = ["MARKER", "synthesize_case", "synthesize_dataset"]
_INT16_MAX = 32767

# Mean intensity per modality (rows in BRATS_MODALITIES order) and class (columns in CLASSES
# order), roughly like raw BraTS values. Every tumour region is told apart by a combination:
# ET by T1ce (and T1ce - T1), NCR by T2 high / T1ce low, ED by FLAIR, WT by FLAIR + T2.
# fmt: off
_MEANS = np.array([
    # bg scalp skull csf  gm   wm   ed   ncr  et
    [0,  850,  120, 150, 450, 700, 380, 230, 450],   # t1
    [0,  850,  120, 140, 460, 680, 420, 180, 1100],  # t1ce
    [0,  420,   80, 950, 520, 330, 820, 960, 600],   # t2
    [0,  480,   70,  90, 470, 400, 900, 650, 700],   # flair
], dtype=np.float32)
# fmt: on
# Relative texture amplitude per class: tumours are more heterogeneous than normal tissue.
_HETEROGENEITY = np.array([0, 0.05, 0.05, 0.03, 0.04, 0.04, 0.08, 0.12, 0.10], dtype=np.float32)


def synthesize_case(
    case_id: str, shape: tuple[int, int, int], rng: np.random.Generator, tumour: bool = True
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Generate one case.

    Args:
        case_id: case name (only used in error messages).
        shape: ``(X, Y, Z)`` voxels, each >= 16.
        rng: the only source of randomness; the same generator state gives the same case.
        tumour: False for a tumour-free case (all-zero seg).

    Returns:
        ``({"t1", "t1ce", "t2", "flair"} -> (X, Y, Z) float32 integer-valued intensities in
        [0, 32767], 0 outside the head; (X, Y, Z) uint8 seg in BraTS 2018-2021 codes
        0/1/2/4)``.
    """
    shape = check_shape(shape, f"synth case {case_id}: shape")
    frac, seg = head_and_lesion(shape, rng, lesion=tumour)
    return _render(frac, rng), seg


def synthesize_dataset(
    out_dir: str | Path,
    cases: int,
    seed: int = 0,
    shape: tuple[int, int, int] = (64, 64, 48),
    tumour_free_fraction: float = 0.15,
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
    progress: Callable[[int, int, str], None] | None = None,
    workers: int = 1,
) -> list[Path]:
    """Write ``cases`` synthetic cases in the BraTS 2021 layout.

    Files are ``out_dir/<case>/<case>_{t1,t1ce,t2,flair,seg}.nii.gz`` (int16 images, uint8
    seg) with one affine, ``diag(*spacing, 1)``, and case ids ``Synth_0000``, ``Synth_0001``...
    Case ``i`` depends only on ``(seed, i, shape, tumour_free_fraction)``, so a smaller ``cases``
    gives a prefix of a larger one. ``out_dir/synth.json`` records the parameters; a non-empty
    directory without it is refused, one with it is regenerated (its old cases are removed).

    Args:
        progress: called as ``progress(done, total, case_id)`` after each case is written.
        workers: processes generating cases in parallel (1 = in this process); the cases are
            the same either way. A 240x240x155 case takes ~8 s of one core.

    Returns:
        The case directories in case order.

    Raises:
        InputError: naming the bad argument (``shape``, ``cases``, ``seed``, ``spacing``,
            ``tumour_free_fraction``) or the refused ``out_dir``.
    """
    shape = check_shape(shape, "shape")
    spacing = check_params(cases, seed, tumour_free_fraction, spacing)
    out = Path(out_dir)
    meta = {"generator": GENERATOR, "version": 1, "seed": int(seed), "shape": list(shape)}
    meta |= {"cases": int(cases), "spacing": list(spacing)}
    meta |= {"tumour_free_fraction": float(tumour_free_fraction)}
    meta["case_ids"] = case_ids = [f"Synth_{i:04d}" for i in range(cases)]
    claim_out_dir(out)
    write_marker(out, {**meta, "complete": False})  # claims the directory before any case
    phase = case_stream(seed, 1).random()
    affine = np.diag([*spacing, 1.0])
    jobs = [
        (out, case_id, seed, i, shape, not is_lesion_free(i, tumour_free_fraction, phase), affine)
        for i, case_id in enumerate(case_ids)
    ]
    dirs = map_cases(_one_case, jobs, case_ids, workers, progress)
    write_marker(out, {**meta, "complete": True})
    return dirs


def _one_case(
    out: Path, case_id: str, seed: int, i: int, shape: tuple[int, int, int], tumour: bool,
    affine: np.ndarray,
) -> Path:  # fmt: skip
    images, seg = synthesize_case(case_id, shape, case_stream(seed, 0, i), tumour=tumour)
    return _write_case(out / case_id, case_id, images, seg, affine)


def _write_case(
    case_dir: Path, case_id: str, images: dict[str, np.ndarray], seg: np.ndarray, affine: np.ndarray
) -> Path:
    """Write the four int16 modalities and the uint8 seg with one affine; returns ``case_dir``."""
    case_dir.mkdir(parents=True, exist_ok=True)
    arrays = {name: images[name].astype(np.int16) for name in BRATS_MODALITIES} | {"seg": seg}
    for name, array in arrays.items():
        img = nib.Nifti1Image(array, affine)
        img.set_qform(affine, code=1)
        img.set_sform(affine, code=1)
        img.header.set_xyzt_units("mm")
        nib.save(img, case_dir / f"{case_id}_{name}.nii.gz")
    return case_dir


def _render(frac: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Four modalities from tissue fractions (len(CLASSES), X, Y, Z); see :func:`synthesize_case`.

    Class means vary ±5% per case; texture scales with each class's heterogeneity."""
    shape = frac.shape[1:]
    means = _MEANS * rng.uniform(0.95, 1.05, _MEANS.shape).astype(np.float32)
    texture = smooth_noise(rng, shape, 1.0)
    base = np.tensordot(means, frac, axes=1)  # (4, X, Y, Z)
    varying = np.tensordot(means * _HETEROGENEITY, frac, axes=1)
    head = frac[0] < 0.5
    images = {}
    for m, name in enumerate(BRATS_MODALITIES):
        signal = base[m] + varying[m] * texture
        images[name] = _acquire(signal, head, rng, noise_sigma=0.025 * float(means[m, 5]))
    return images


def _acquire(
    signal: np.ndarray, head: np.ndarray, rng: np.random.Generator, noise_sigma: float
) -> np.ndarray:
    """Scanner effects on one (X, Y, Z) image: smooth multiplicative bias field (about ±15%),
    a global gain, Rician noise of ``noise_sigma`` (intensity units), integer rounding, and 0
    outside ``head``. Returns float32 in [0, 32767], >= 1 inside the head."""
    x, y, z = grid(signal.shape)
    terms = (x, y, z, x * x, y * y, z * z, x * y, y * z, x * z)
    coef = rng.normal(0.0, 0.04, len(terms)).astype(np.float32)
    bias = np.exp(sum(c * t for c, t in zip(coef, terms, strict=True)))
    gain = np.float32(rng.uniform(0.8, 1.25))
    clean = signal * bias * gain
    sigma = noise_sigma * gain
    real = clean + sigma * rng.standard_normal(signal.shape, dtype=np.float32)
    noisy = np.hypot(real, sigma * rng.standard_normal(signal.shape, dtype=np.float32))
    return np.where(head, np.clip(np.rint(noisy), 1, _INT16_MAX), 0).astype(np.float32)
