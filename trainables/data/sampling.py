"""Training samples from prepared cases: random patches, foreground oversampling, 2-D slices.

Arrays follow the project conventions: image ``(C, *S)`` (float16 memory maps from the cache,
float32 otherwise), label ``(*S)`` uint8 internal codes; 2-D slices are taken along the last
axis. Every function slices its input *before* converting anything, so a memory-mapped float16
case costs only the patch it contributes, never the whole volume.

Patch placement follows nnU-Net: a random start is drawn so that, when the volume is smaller than
the patch along an axis, the patch is padded symmetrically with zeros (image) and background
(label); a forced-foreground patch is centred on a random foreground voxel (plus jitter) and
then clipped into the same start range, which provably keeps that voxel inside the patch.
Every random number comes from the ``np.random.Generator`` passed in, so a sample is a pure
function of its seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Self

import numpy as np
from pydantic import Field, field_validator, model_validator

from trainables.config import ConfigProblem, Frozen, raise_problems
from trainables.errors import InputError

# Rejection sampling of empty slices gives up after this many draws (and keeps the last one),
# so a case with no foreground and ``empty_slice_drop=1`` cannot loop forever.
MAX_SLICE_DRAWS = 1000


class SamplingConfig(Frozen):
    """How training patches and validation views are cut from a case.

    Attributes:
        patch_size: training patch in voxels; 3 ints for 3-D models, 2 for 2-D slice models.
        foreground_fraction: share of patches forced to contain foreground (nnU-Net: 1/3).
        empty_slice_drop: 2-D only: probability of rejecting a slice without foreground and
            drawing again (0.5 in the MRI U-Net comparison paper).
        validation: ``whole`` volumes (sliding-window inference) or a ``center_crop``.
        val_crop_size: centre-crop size in voxels; defaults to ``patch_size``.
    """

    patch_size: tuple[int, ...] = (128, 128, 128)
    foreground_fraction: float = Field(default=1 / 3, ge=0.0, le=1.0)
    empty_slice_drop: float = Field(default=0.0, ge=0.0, le=1.0)
    validation: Literal["whole", "center_crop"] = "whole"
    val_crop_size: tuple[int, ...] | None = None

    @field_validator("patch_size", "val_crop_size")
    @classmethod
    def _positive_2d_or_3d(cls, value: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if value is None:
            return value
        if len(value) not in (2, 3):
            raise ValueError(f"needs 2 (2-D) or 3 (3-D) sizes, got {len(value)}")
        if any(v <= 0 for v in value):
            raise ValueError(f"sizes must be positive, got {list(value)}")
        return value

    @model_validator(mode="after")
    def _crop_matches_patch(self) -> Self:
        if self.val_crop_size is not None and len(self.val_crop_size) != len(self.patch_size):
            raise ValueError(
                f"val_crop_size {list(self.val_crop_size)} must have as many sizes as "
                f"patch_size {list(self.patch_size)}"
            )
        return self

    @model_validator(mode="after")
    def _slice_drop_needs_slices(self) -> Self:
        # The 3-D sampler never looks at it: a silently ignored setting would skew an ablation.
        if self.empty_slice_drop > 0 and not self.is_2d:
            why = (
                f"{self.empty_slice_drop} applies only to 2-D slice sampling, but patch_size "
                f"{list(self.patch_size)} is 3-D (set it to 0, or use a 2-D patch and model)"
            )
            raise_problems([ConfigProblem("empty_slice_drop", why)])
        return self

    @property
    def is_2d(self) -> bool:
        """True for 2-D slice models (``len(patch_size) == 2``)."""
        return len(self.patch_size) == 2

    @property
    def crop_size(self) -> tuple[int, ...]:
        """The validation centre-crop size: ``val_crop_size`` or else ``patch_size``."""
        return self.val_crop_size or self.patch_size


def sample_patch(
    image: np.ndarray,
    label: np.ndarray,
    patch_size: Sequence[int],
    rng: np.random.Generator,
    force_foreground: bool,
    fg_locations: np.ndarray | None = None,
    margin: Sequence[int] | None = None,
    image_dtype: type = np.float32,
) -> tuple[np.ndarray, np.ndarray]:
    """Cut one training patch, zero-padded where the volume is smaller than the patch.

    Args:
        image: ``(C, *S)`` intensities, any float dtype (a float16 memmap is fine).
        label: ``(*S)`` uint8 internal codes.
        patch_size: ``P``, one size per spatial axis, in voxels.
        rng: the only source of randomness.
        force_foreground: centre the patch on a random foreground voxel (random position when
            the case has no foreground).
        fg_locations: ``(N, ndim)`` int coordinates of foreground voxels (e.g. from the cache);
            found from ``label`` when None, which reads the whole label.
        margin: voxels per axis cut on each side of the patch as well (zeros beyond the
            volume), for a rotation or zoom to draw on; the patch is placed as without it, from
            the same random numbers, so its middle ``P`` voxels are the patch itself.
        image_dtype: dtype of the returned image (float16 keeps a float16 cache's bytes).

    Returns:
        ``(C, *(P + 2 margin))`` image and ``(*(P + 2 margin))`` uint8 label.
    """
    _check_case(image, label, patch_size, "patch_size")
    size = tuple(int(p) for p in patch_size)
    centre = _foreground_voxel(label, rng, fg_locations) if force_foreground else None
    start = _window_start(label.shape, size, rng, centre)
    start, size = _widen(start, size, margin)
    return _crop_pad(image, start, size, image_dtype), _crop_pad(label, start, size, np.uint8)


def sample_slice(
    image: np.ndarray,
    label: np.ndarray,
    patch_size_2d: Sequence[int],
    rng: np.random.Generator,
    force_foreground: bool,
    empty_slice_drop: float,
    fg_locations: np.ndarray | None = None,
    margin: Sequence[int] | None = None,
    image_dtype: type = np.float32,
) -> tuple[np.ndarray, np.ndarray]:
    """Cut one 2-D training patch from a slice along the last (axial) axis.

    A forced-foreground patch is centred in-plane on a random foreground voxel of its slice.
    Otherwise the slice is uniform, except that a slice without foreground is rejected with
    probability ``empty_slice_drop`` and drawn again, so the share of empty slices ``e`` becomes
    ``e(1-p) / (e(1-p) + 1 - e)``.

    Args:
        image: ``(C, X, Y, Z)``; label ``(X, Y, Z)`` uint8.
        patch_size_2d: ``(Px, Py)`` in voxels.
        rng, force_foreground, fg_locations: as in :func:`sample_patch` (3-D coordinates).
        empty_slice_drop: probability in [0, 1] of redrawing an empty slice.
        margin, image_dtype: as in :func:`sample_patch`, in-plane (2 sizes).

    Returns:
        ``(C, Px + 2 mx, Py + 2 my)`` image and ``(Px + 2 mx, Py + 2 my)`` uint8 label.
    """
    if len(patch_size_2d) != 2 or label.ndim != 3:
        raise InputError(
            f"needs a 2-D patch size and a 3-D label, got patch {list(patch_size_2d)} and "
            f"label shape {label.shape}",
            where="patch_size",
        )
    _check_case(image, label, (*patch_size_2d, 1), "patch_size")
    size = (int(patch_size_2d[0]), int(patch_size_2d[1]))
    voxel = _foreground_voxel(label, rng, fg_locations) if force_foreground else None
    z = int(voxel[2]) if voxel is not None else _draw_slice(label, rng, empty_slice_drop)
    start = _window_start(label.shape[:2], size, rng, None if voxel is None else voxel[:2])
    start, size = _widen(start, size, margin)
    return (
        _crop_pad(image[..., z], start, size, image_dtype),
        _crop_pad(label[..., z], start, size, np.uint8),
    )


def center_crop(
    image: np.ndarray, label: np.ndarray, size: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Centre crop (zero-padded symmetrically where the volume is smaller than ``size``).

    Args:
        image: ``(C, *S)``; label ``(*S)``.
        size: crop size, one per spatial axis, in voxels.

    Returns:
        ``(C, *size)`` float32 image and ``(*size)`` uint8 label.
    """
    _check_case(image, label, size, "val_crop_size")
    crop = tuple(int(s) for s in size)
    start = tuple(_centred_start(s, c) for s, c in zip(label.shape, crop, strict=True))
    return _crop_pad(image, start, crop, np.float32), _crop_pad(label, start, crop, np.uint8)


def validation_view(
    image: np.ndarray, label: np.ndarray, cfg: SamplingConfig
) -> tuple[np.ndarray, np.ndarray]:
    """The validation input of one case: the whole volume or its centre crop.

    For 2-D models the crop applies in-plane and keeps every slice (the crop size is
    ``(*cfg.crop_size, Z)``).

    Returns:
        ``(C, *V)`` float32 image and ``(*V)`` uint8 label.
    """
    if cfg.validation == "whole":
        return np.asarray(image, dtype=np.float32), np.asarray(label, dtype=np.uint8)
    size = (*cfg.crop_size, label.shape[-1]) if cfg.is_2d else cfg.crop_size
    return center_crop(image, label, size)


def _check_case(image: np.ndarray, label: np.ndarray, size: Sequence[int], field: str) -> None:
    """Raise :class:`InputError` unless image ``(C, *S)``, label ``(*S)`` and size agree."""
    if image.ndim != label.ndim + 1 or image.shape[1:] != label.shape:
        raise InputError(
            f"image shape {image.shape} does not match label shape {label.shape} "
            "(expected image (C, *S) and label (*S))",
            where="case",
        )
    if len(size) != label.ndim or any(int(s) <= 0 for s in size):
        raise InputError(
            f"{list(size)} needs {label.ndim} positive sizes for a volume of shape {label.shape}",
            where=field,
        )


def _foreground_voxel(
    label: np.ndarray, rng: np.random.Generator, fg_locations: np.ndarray | None
) -> np.ndarray | None:
    """A random foreground coordinate ``(ndim,)``, or None when the case has no foreground."""
    locations = np.argwhere(np.asarray(label) > 0) if fg_locations is None else fg_locations
    if len(locations) == 0:
        return None
    return np.asarray(locations[rng.integers(len(locations))], dtype=np.int64)


def _window_start(
    shape: Sequence[int],
    size: Sequence[int],
    rng: np.random.Generator,
    centre: np.ndarray | None,
) -> tuple[int, ...]:
    """Start corner of a window of ``size`` in a volume of ``shape`` (negative = padding).

    Starts range over ``[lb, ub]`` with ``lb = -(need // 2)`` and ``ub = S - P + ceil(need/2)``
    where ``need = max(P - S, 0)``: nnU-Net's symmetric padding. With a ``centre`` voxel the
    start is ``centre - P//2`` plus a jitter of up to a quarter patch, clipped into that range;
    the voxel then stays inside the window (its offset lies in ``[P/4, 3P/4]`` before clipping,
    and clipping to either bound keeps ``start <= centre < start + P``).
    """
    starts = []
    for axis, (s, p) in enumerate(zip(shape, size, strict=True)):
        need = max(p - s, 0)
        lb, ub = -(need // 2), s - p + need - need // 2
        if centre is None:
            starts.append(int(rng.integers(lb, ub + 1)))
            continue
        jitter = int(rng.integers(-(p // 4), p // 4 + 1))
        starts.append(int(np.clip(int(centre[axis]) - p // 2 + jitter, lb, ub)))
    return tuple(starts)


def _widen(
    start: tuple[int, ...], size: tuple[int, ...], margin: Sequence[int] | None
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The window ``margin`` voxels wider on each side (unchanged for None)."""
    if margin is None:
        return start, size
    if len(margin) != len(size) or any(int(m) < 0 for m in margin):
        raise InputError(
            f"{list(margin)} needs {len(size)} sizes >= 0 for a patch of {list(size)}",
            where="margin",
        )
    wide_start = tuple(s - int(m) for s, m in zip(start, margin, strict=True))
    return wide_start, tuple(p + 2 * int(m) for p, m in zip(size, margin, strict=True))


def _centred_start(s: int, c: int) -> int:
    """Start of a centred window of ``c`` voxels in ``s``; padding split as in nnU-Net."""
    return (s - c) // 2 if s >= c else -((c - s) // 2)


def _crop_pad(
    array: np.ndarray, start: Sequence[int], size: Sequence[int], dtype: type
) -> np.ndarray:
    """Window ``[start, start + size)`` over the last ``len(size)`` axes, zeros outside.

    Only the in-bounds part of ``array`` is read (and converted), so memory maps stay cheap.
    """
    lead = array.shape[: array.ndim - len(size)]
    spatial = array.shape[array.ndim - len(size) :]
    out = np.zeros((*lead, *size), dtype=dtype)
    src, dst = [], []
    for st, p, s in zip(start, size, spatial, strict=True):
        lo, hi = max(st, 0), min(st + p, s)
        if hi <= lo:  # cannot happen with _window_start's bounds; guards direct callers
            return out
        src.append(slice(lo, hi))
        dst.append(slice(lo - st, hi - st))
    lead_slices = (slice(None),) * len(lead)
    out[(*lead_slices, *dst)] = array[(*lead_slices, *src)]
    return out


def _draw_slice(label: np.ndarray, rng: np.random.Generator, drop: float) -> int:
    """A slice index along the last axis, rejecting empty slices with probability ``drop``."""
    depth = label.shape[-1]
    z = int(rng.integers(depth))
    for _ in range(MAX_SLICE_DRAWS):
        if drop <= 0.0 or label[..., z].any() or rng.random() >= drop:
            return z
        z = int(rng.integers(depth))
    return z
