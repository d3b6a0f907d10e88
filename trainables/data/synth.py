"""Synthetic BraTS-2021-layout cases that a small network can learn from.

A case is a head in an ``(X, Y, Z)`` voxel grid: background 0 outside an ellipsoidal scalp,
skull and CSF rim around a brain with a smooth white/grey-matter pattern and two ventricles. Most
cases hold one (sometimes two) irregular tumours: necrotic core (BraTS label 1), enhancing rim
(4), oedema around both (2), so WT ⊇ TC ⊇ ET. Each class has a mean intensity per modality like
real MRI (T1: WM > GM > CSF; T2: CSF bright; FLAIR: CSF dark, oedema bright; T1ce: enhancing rim
bright), then partial volume, texture, a mild bias field, a gain and Rician noise are applied.

Unlike real BraTS (skull-stripped), scalp and skull are kept so "crop to non-zero" has work to
do. Intensities are integers in [1, 32767] inside the head and 0 outside (the non-zero mask is
the head in every modality): float32 in memory, int16 on disk like real BraTS, so a loaded file
equals the generated array. Geometry is in voxels; ``spacing`` only sets the affine.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from scipy.ndimage import distance_transform_edt, gaussian_filter

from trainables.data.parallel import map_cases
from trainables.data.types import BRATS_MODALITIES
from trainables.errors import InputError

Shape = tuple[int, int, int]
MARKER = "synth.json"
GENERATOR = "ablate.trainables.data.synth"
MIN_DIM = 16
_INT16_MAX = 32767
_CASE_ID = re.compile(r"Synth_\d{4,}")

CLASSES: tuple[str, ...] = ("bg", "scalp", "skull", "csf", "gm", "wm", "ed", "ncr", "et")
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
# Outer edges of scalp, skull, CSF rim and brain, in units of the (deformed) head radius.
_SHELLS = (1.0, 0.93, 0.86, 0.82)
_BRAIN_EDGE = _SHELLS[-1]
# Enhancement patterns: full ring around necrosis, solid (no necrosis), broken ring (small ET),
# non-enhancing (no ET, like many low-grade gliomas).
_ET_STYLES = ("ring", "solid", "partial", "none")
_ET_STYLE_P = (0.5, 0.2, 0.2, 0.1)


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
    shape = _check_shape(shape, f"synth case {case_id}: shape")
    frac, brain, brain_axes = _head_fractions(shape, rng)
    seg = np.zeros(shape, dtype=np.uint8)
    if tumour:
        wt, tc, et = _tumours(shape, rng, brain, brain_axes)
        seg[wt], seg[tc], seg[et] = 2, 1, 4
        _insert_tumour(frac, seg)
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
    shape = _check_shape(shape, "shape")
    spacing = _check_params(cases, seed, tumour_free_fraction, spacing)
    out = Path(out_dir)
    meta = {"generator": GENERATOR, "version": 1, "seed": int(seed), "shape": list(shape)}
    meta |= {"cases": int(cases), "spacing": list(spacing)}
    meta |= {"tumour_free_fraction": float(tumour_free_fraction)}
    meta["case_ids"] = case_ids = [f"Synth_{i:04d}" for i in range(cases)]
    _claim_out_dir(out)
    _write_marker(out, {**meta, "complete": False})  # claims the directory before any case
    phase = _stream(seed, 1).random()
    affine = np.diag([*spacing, 1.0])
    jobs = [
        (out, case_id, seed, i, shape, not _is_tumour_free(i, tumour_free_fraction, phase), affine)
        for i, case_id in enumerate(case_ids)
    ]
    dirs = map_cases(_one_case, jobs, case_ids, workers, progress)
    _write_marker(out, {**meta, "complete": True})
    return dirs


def _one_case(
    out: Path, case_id: str, seed: int, i: int, shape: tuple[int, int, int], tumour: bool,
    affine: np.ndarray,
) -> Path:  # fmt: skip
    images, seg = synthesize_case(case_id, shape, _stream(seed, 0, i), tumour=tumour)
    return _write_case(out / case_id, case_id, images, seg, affine)


def _stream(seed: int, *key: int) -> np.random.Generator:
    """An independent generator per ``key``: (1,) is the tumour-free phase, (0, i) is case i,
    so case i never depends on how many cases are generated."""
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=key))


def _check_shape(shape: Sequence[int], where: str) -> Shape:
    """Three integer dimensions, each >= MIN_DIM (smaller heads have no room for shells)."""
    dims = tuple(shape)
    if len(dims) != 3 or not all(isinstance(d, int | np.integer) for d in dims):
        raise InputError(f"must be three integers (X, Y, Z), got {shape!r}", where=where)
    if min(dims) < MIN_DIM:
        raise InputError(f"every dimension must be >= {MIN_DIM} voxels, got {dims}", where=where)
    return int(dims[0]), int(dims[1]), int(dims[2])


def _check_params(
    cases: int, seed: int, tumour_free_fraction: float, spacing: Sequence[float]
) -> tuple[float, float, float]:
    """Validate the scalar arguments of :func:`synthesize_dataset`; returns the spacing."""
    if not isinstance(cases, int | np.integer) or cases < 1:
        raise InputError(f"must be an integer >= 1, got {cases!r}", where="cases")
    if not isinstance(seed, int | np.integer) or seed < 0:
        raise InputError(f"must be an integer >= 0, got {seed!r}", where="seed")
    fraction = tumour_free_fraction
    if not isinstance(fraction, int | float | np.floating) or not 0.0 <= fraction <= 1.0:
        raise InputError(f"must be in [0, 1], got {fraction!r}", where="tumour_free_fraction")
    values = tuple(float(s) for s in spacing)
    if len(values) != 3 or not all(np.isfinite(s) and s > 0 for s in values):
        raise InputError(f"must be three positive sizes in mm, got {spacing!r}", where="spacing")
    return values[0], values[1], values[2]


def _is_tumour_free(i: int, fraction: float, phase: float) -> bool:
    """Low-discrepancy pick: every prefix of cases has round(fraction * n) ± 1 tumour-free ones,
    and which cases they are shifts with the seed (through ``phase`` in [0, 1))."""
    return int(np.floor((i + 1) * fraction + phase)) > int(np.floor(i * fraction + phase))


def _claim_out_dir(out: Path) -> None:
    """Refuse a non-empty directory that is not a synth output; clear an old synth output."""
    if out.exists() and not out.is_dir():
        raise InputError("exists and is not a directory", where=out)
    if out.is_dir() and any(out.iterdir()):
        marker = out / MARKER
        if not marker.is_file():
            raise InputError(
                f"directory is not empty and has no {MARKER} marker, so it is not a synthetic "
                "dataset; refusing to overwrite it (choose a new or empty directory)",
                where=out,
            )
        for case_id in _read_marker(marker).get("case_ids", []):
            # Only names this module writes, so a tampered marker cannot delete other paths.
            if isinstance(case_id, str) and _CASE_ID.fullmatch(case_id):
                shutil.rmtree(out / case_id, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)


def _read_marker(marker: Path) -> dict[str, Any]:
    """The parsed marker; InputError if it is not one this module wrote."""
    try:
        meta = json.loads(marker.read_text())
    except (OSError, ValueError) as err:
        raise InputError(f"unreadable synth marker ({err}); refusing to overwrite", marker) from err
    if not isinstance(meta, dict) or meta.get("generator") != GENERATOR:
        raise InputError("not a synth marker written by ablate; refusing to overwrite", marker)
    return meta


def _write_marker(out: Path, meta: dict[str, Any]) -> None:
    (out / MARKER).write_text(json.dumps(meta, indent=2) + "\n")


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


def _grid(shape: Shape) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Voxel-centre coordinates in [-1, 1] per axis, as (X,1,1), (1,Y,1), (1,1,Z) arrays."""
    axes = [((np.arange(n, dtype=np.float32) + 0.5) / n * 2 - 1) for n in shape]
    return np.ix_(*axes)  # type: ignore[return-value]


def _smooth_noise(rng: np.random.Generator, shape: Sequence[int], sigma: float) -> np.ndarray:
    """Gaussian-smoothed white noise, normalised to zero mean and unit std; float32 ``shape``.

    ``sigma`` is the correlation length in voxels."""
    field = gaussian_filter(rng.standard_normal(tuple(shape), dtype=np.float32), sigma, truncate=3)
    return (field - field.mean()) / max(float(field.std()), 1e-6)


def _soft_inside(level: np.ndarray, edge: float, width: float) -> np.ndarray:
    """Partial-volume membership: ~1 where ``level`` < ``edge``, ~0 beyond, sigmoid of ``width``."""
    return (1.0 / (1.0 + np.exp((level - edge) / width))).astype(np.float32)


def _head_fractions(
    shape: Shape, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tissue fractions of a tumour-free head.

    Returns:
        ``(frac, brain, brain_axes)``: (len(CLASSES), X, Y, Z) float32 fractions summing to 1
        (tumour classes 0); (X, Y, Z) bool brain mask; (3,) brain semi-axes in voxels.
    """
    head_axes = rng.uniform(0.78, 0.88, 3)  # with the lumps below, stays off the box edge
    x, y, z = _grid(shape)
    r = np.sqrt((x / head_axes[0]) ** 2 + (y / head_axes[1]) ** 2 + (z / head_axes[2]) ** 2)
    r = r * (1 + 0.03 * np.clip(_smooth_noise(rng, shape, min(shape) / 8), -2, 2))  # lumpy head
    width = 1.1 / min(shape)  # about half a voxel in units of the head radius
    inside = [_soft_inside(r, edge, width) for edge in _SHELLS]  # nested, outermost first
    frac = np.zeros((len(CLASSES), *shape), dtype=np.float32)
    frac[0] = 1 - inside[0]
    for k in range(3):  # scalp, skull, CSF rim: between consecutive shells
        frac[k + 1] = inside[k] - inside[k + 1]
    ventricles = _ventricles((x / head_axes[0], y / head_axes[1], z / head_axes[2]), width)
    frac[3] += inside[3] * ventricles
    tissue = inside[3] * (1 - ventricles)
    # White matter deep, grey matter towards the cortex, with a smooth random boundary.
    depth = 1 - r / _BRAIN_EDGE
    wm_logit = 0.8 * _smooth_noise(rng, shape, min(shape) / 16) + 3.0 * (depth - 0.3)
    white = 1.0 / (1.0 + np.exp(-3.0 * wm_logit))
    frac[4], frac[5] = tissue * (1 - white), tissue * white
    brain_axes = _BRAIN_EDGE * head_axes * np.asarray(shape) / 2
    return frac, inside[3] > 0.5, brain_axes


def _ventricles(coords: tuple[np.ndarray, ...], width: float) -> np.ndarray:
    """Soft membership (X, Y, Z) of two lateral ventricles; ``coords`` in head-radius units."""
    radii = np.array([0.08, 0.28, 0.12]) * _BRAIN_EDGE
    out = np.zeros((), dtype=np.float32)  # broadcasts up to (X, Y, Z) at the first maximum
    for side in (-1, 1):
        centre = np.array([side * 0.14, 0.05, 0.1]) * _BRAIN_EDGE
        level = np.sqrt(
            sum(((c - m) / a) ** 2 for c, m, a in zip(coords, centre, radii, strict=True))
        )
        out = np.maximum(out, _soft_inside(level, 1.0, width / radii.min()))
    return out


def _tumours(
    shape: Shape, rng: np.random.Generator, brain: np.ndarray, brain_axes: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One (20%: two) tumours inside ``brain``; returns (X, Y, Z) bool WT, TC, ET masks.

    A blob that misses the brain entirely is redrawn so a tumour case is never empty."""
    masks = tuple(np.zeros(shape, dtype=bool) for _ in range(3))
    count = 2 if rng.random() < 0.2 else 1
    for k in range(count):
        for _ in range(8):
            if _add_blob(rng, brain, brain_axes, 1.0 if k == 0 else 0.6, masks):
                break
    return masks


def _add_blob(
    rng: np.random.Generator,
    brain: np.ndarray,
    brain_axes: np.ndarray,
    scale: float,
    masks: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> bool:
    """OR one irregular tumour into ``masks`` (WT, TC, ET); False if it fell outside the brain.

    The core and the oedema are rotated ellipsoids (semi-axes in voxels) whose boundaries are
    deformed by smooth noise; the work is done in a box around the tumour for speed."""
    core = np.maximum(rng.uniform(0.15, 0.4) * scale * brain_axes * rng.uniform(0.75, 1.25, 3), 1)
    oedema = core * rng.uniform(1.4, 2.3)
    centre = _tumour_centre(rng, brain.shape, brain_axes)
    box, offsets = _box_around(centre, 1.6 * oedema + 2, brain.shape)
    rotated = np.tensordot(_rotation(rng), offsets, axes=1)
    inside = brain[box]
    tc = _deformed(rng, rotated, core, 0.25, max(1.0, core.min() / 2)) & inside
    wt = (_deformed(rng, rotated, oedema, 0.3, max(1.5, oedema.min() / 3)) & inside) | tc
    if not tc.any():
        return False
    et = _enhancing(rng, tc, min(brain.shape))
    for full, part in zip(masks, (wt, tc, et), strict=True):
        full[box] |= part
    return True


def _box_around(
    centre: np.ndarray, extent: np.ndarray, shape: Sequence[int]
) -> tuple[tuple[slice, ...], np.ndarray]:
    """The box ``centre ± extent`` (voxels, (3,)) clipped to ``shape``, and its voxel offsets
    from ``centre`` as a (3, *B) float32 array."""
    lo = np.clip(np.floor(centre - extent), 0, shape).astype(int)
    hi = np.clip(np.ceil(centre + extent + 1), 0, shape).astype(int)
    axes = [np.arange(a, b) - c for a, b, c in zip(lo, hi, centre, strict=True)]
    offsets = np.stack(np.meshgrid(*axes, indexing="ij")).astype(np.float32)
    return tuple(slice(a, b) for a, b in zip(lo, hi, strict=True)), offsets


def _deformed(
    rng: np.random.Generator, offsets: np.ndarray, radii: np.ndarray, amplitude: float, sigma: float
) -> np.ndarray:
    """Bool (*B): inside the ellipsoid of semi-axes ``radii`` (voxels, (3,)) around (3, *B)
    ``offsets``, its boundary pushed in and out by smooth noise (``amplitude`` in units of the
    radius, correlation length ``sigma`` voxels) so tumours are irregular blobs."""
    scaled = offsets / radii.astype(np.float32).reshape(3, 1, 1, 1)
    level = np.sqrt((scaled**2).sum(axis=0))
    return level + amplitude * _smooth_noise(rng, level.shape, sigma) < 1


def _tumour_centre(rng: np.random.Generator, shape: Shape, brain_axes: np.ndarray) -> np.ndarray:
    """A voxel position (3,) uniform in the inner 60% of the brain ellipsoid."""
    direction = rng.standard_normal(3)
    direction /= np.linalg.norm(direction)
    radius = 0.6 * rng.random() ** (1 / 3)  # cube root: uniform in volume, not in radius
    return np.asarray(shape) / 2 - 0.5 + radius * direction * brain_axes


def _rotation(rng: np.random.Generator) -> np.ndarray:
    """A random orthogonal (3, 3) matrix (QR of a Gaussian matrix, signs fixed)."""
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    return (q * np.sign(np.diag(r))).astype(np.float32)


def _enhancing(rng: np.random.Generator, tc: np.ndarray, min_dim: int) -> np.ndarray:
    """ET mask inside the core ``tc`` (bool, any shape), by one of ``_ET_STYLES``.

    The rim thickness is 1-2.2 voxels at 64 voxels across and grows with the grid, so it stays
    a few mm thick; the rest of the core is necrosis."""
    style = _ET_STYLES[rng.choice(len(_ET_STYLES), p=_ET_STYLE_P)]
    if style == "none":
        return np.zeros_like(tc)
    if style == "solid":
        return tc.copy()
    thickness = rng.uniform(1.0, 2.2) * max(1.0, min_dim / 64)
    if style == "partial":  # the rim thins to nothing in places: a broken ring, small ET
        thickness = thickness * (1 + 1.2 * _smooth_noise(rng, tc.shape, 1.5))
    return tc & (distance_transform_edt(tc) <= thickness)


def _insert_tumour(frac: np.ndarray, seg: np.ndarray) -> None:
    """Replace tissue fractions by tumour ones, in place, with half-voxel partial volume.

    ``frac``: (len(CLASSES), X, Y, Z); ``seg``: (X, Y, Z) BraTS codes."""
    soft = [gaussian_filter((seg == code).astype(np.float32), 0.6) for code in (2, 1, 4)]
    tumour = np.clip(sum(soft), 0, 1)
    frac[:6] *= 1 - tumour
    frac[6], frac[7], frac[8] = soft  # ed, ncr, et: CLASSES order


def _render(frac: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Four modalities from tissue fractions (len(CLASSES), X, Y, Z); see :func:`synthesize_case`.

    Class means vary ±5% per case; texture scales with each class's heterogeneity."""
    shape = frac.shape[1:]
    means = _MEANS * rng.uniform(0.95, 1.05, _MEANS.shape).astype(np.float32)
    texture = _smooth_noise(rng, shape, 1.0)
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
    x, y, z = _grid(signal.shape)
    terms = (x, y, z, x * x, y * y, z * z, x * y, y * z, x * z)
    coef = rng.normal(0.0, 0.04, len(terms)).astype(np.float32)
    bias = np.exp(sum(c * t for c, t in zip(coef, terms, strict=True)))
    gain = np.float32(rng.uniform(0.8, 1.25))
    clean = signal * bias * gain
    sigma = noise_sigma * gain
    real = clean + sigma * rng.standard_normal(signal.shape, dtype=np.float32)
    noisy = np.hypot(real, sigma * rng.standard_normal(signal.shape, dtype=np.float32))
    return np.where(head, np.clip(np.rint(noisy), 1, _INT16_MAX), 0).astype(np.float32)
