"""The anatomy shared by the synthetic MRI and CT generators: a head and its lesions.

A head in an ``(X, Y, Z)`` voxel grid is a stack of tissue fractions (one per :data:`CLASSES`
entry, summing to 1 per voxel): background outside an ellipsoidal scalp, skull and CSF rim around
a brain with a smooth white/grey-matter pattern and two ventricles. A lesion is one (sometimes
two) irregular tumours: necrotic core (BraTS label 1), enhancing rim (4), oedema around both (2),
so WT ⊇ TC ⊇ ET. The MRI generator (:mod:`trainables.data.synth`) and the CT one
(:mod:`trainables.data.synth_ct`) render these fractions into intensities their own way.
Geometry is in voxels.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.ndimage import distance_transform_edt, gaussian_filter

Shape = tuple[int, int, int]
CLASSES: tuple[str, ...] = ("bg", "scalp", "skull", "csf", "gm", "wm", "ed", "ncr", "et")
# Outer edges of scalp, skull, CSF rim and brain, in units of the (deformed) head radius.
_SHELLS = (1.0, 0.93, 0.86, 0.82)
_BRAIN_EDGE = _SHELLS[-1]
# Enhancement patterns: full ring around necrosis, solid (no necrosis), broken ring (small ET),
# non-enhancing (no ET, like many low-grade gliomas).
_ET_STYLES = ("ring", "solid", "partial", "none")
_ET_STYLE_P = (0.5, 0.2, 0.2, 0.1)


def head_and_lesion(
    shape: Shape, rng: np.random.Generator, lesion: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """One head, with a lesion unless ``lesion`` is False.

    Returns:
        ``(frac, seg)``: (len(CLASSES), X, Y, Z) float32 tissue fractions summing to 1 per voxel;
        (X, Y, Z) uint8 lesion labels in BraTS 2018-2021 codes 0/1/2/4 (all 0 without a lesion).
    """
    frac, brain, brain_axes = _head_fractions(shape, rng)
    seg = np.zeros(shape, dtype=np.uint8)
    if lesion:
        wt, tc, et = _tumours(shape, rng, brain, brain_axes)
        seg[wt], seg[tc], seg[et] = 2, 1, 4
        _insert_tumour(frac, seg)
    return frac, seg


def grid(shape: Shape) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Voxel-centre coordinates in [-1, 1] per axis, as (X,1,1), (1,Y,1), (1,1,Z) arrays."""
    axes = [((np.arange(n, dtype=np.float32) + 0.5) / n * 2 - 1) for n in shape]
    return np.ix_(*axes)  # type: ignore[return-value]


def smooth_noise(rng: np.random.Generator, shape: Sequence[int], sigma: float) -> np.ndarray:
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
    x, y, z = grid(shape)
    r = np.sqrt((x / head_axes[0]) ** 2 + (y / head_axes[1]) ** 2 + (z / head_axes[2]) ** 2)
    r = r * (1 + 0.03 * np.clip(smooth_noise(rng, shape, min(shape) / 8), -2, 2))  # lumpy head
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
    wm_logit = 0.8 * smooth_noise(rng, shape, min(shape) / 16) + 3.0 * (depth - 0.3)
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
    return level + amplitude * smooth_noise(rng, level.shape, sigma) < 1


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
        thickness = thickness * (1 + 1.2 * smooth_noise(rng, tc.shape, 1.5))
    return tc & (distance_transform_edt(tc) <= thickness)


def _insert_tumour(frac: np.ndarray, seg: np.ndarray) -> None:
    """Replace tissue fractions by tumour ones, in place, with half-voxel partial volume.

    ``frac``: (len(CLASSES), X, Y, Z); ``seg``: (X, Y, Z) BraTS codes."""
    soft = [gaussian_filter((seg == code).astype(np.float32), 0.6) for code in (2, 1, 4)]
    tumour = np.clip(sum(soft), 0, 1)
    frac[:6] *= 1 - tumour
    frac[6], frac[7], frac[8] = soft  # ed, ncr, et: CLASSES order
