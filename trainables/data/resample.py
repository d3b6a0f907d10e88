"""Resampling to a target voxel spacing, nnU-Net's way (``data.preprocess.resample``).

nnU-Net trains every case on one voxel grid: the dataset's median spacing, except that the
coarse axis of a strongly anisotropic dataset (thick CT slices) takes the 10th percentile of
its spacings (:func:`dataset_target_spacing`). Images are resampled with a third-order spline
and labels class by class with linear interpolation of the one-hot mask, kept at >= 0.5
(:func:`resample_image`, :func:`resample_label`). When the source or target spacing is
anisotropic (coarsest / finest > 3), the coarse axis is resampled apart, by nearest neighbour
("If anisotropic, in-plane with third-order spline, out-of-plane with nearest neighbor"), so
thick slices are not blended into each other. A case whose shape would not change is left as it
is. Coordinates map voxel centres onto voxel centres (``(i + 0.5) * in / out - 0.5``), as
``skimage.transform.resize`` does in nnU-Net, and spline overshoot is clipped to the input's
range per channel (skimage's ``clip=True``).

Predictions go the other way in :mod:`trainables.engine.resize`: probabilities on the
resampled grid are brought back to the source grid before they are decoded into labels, so
every reported number is measured on the case as it was given. A slice model keeps each case's
slice spacing when ``in_plane_only`` (nnU-Net's 2d configuration).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Annotated, Literal

import numpy as np
from pydantic import Field, PositiveFloat
from scipy import ndimage

from trainables.config import Frozen
from trainables.data.types import LoadedCase
from trainables.errors import InputError

Spacing = tuple[float, float, float]

# nnU-Net's ANISO_THRESHOLD: an axis this many times coarser than the finest is "anisotropic".
ANISOTROPY_RATIO = 3.0


class NoResampling(Frozen):
    """Keep each case's own voxel grid (the default: BraTS is 1 mm isotropic already)."""

    kind: Literal["none"] = "none"


class TargetSpacing(Frozen):
    """Resample every case to one voxel spacing (nnU-Net's preprocessing).

    Attributes:
        spacing: the target (X, Y, Z) voxel size in mm. None (the usual setting) = computed when
            the dataset is prepared, by nnU-Net's rule: the median spacing of its labelled
            cases, the coarse axis of an anisotropic dataset at the 10th percentile; a trained
            model's config carries the computed one, so prediction and external tests resample
            new cases to the grid training used. Written out, it is applied as given.
        image_order: spline order for images (3: nnU-Net's cubic; 1: linear; 0: nearest).
        in_plane_only: resample X and Y only and keep each case's own slice spacing (Z), as
            nnU-Net's 2d configuration does ("we do not change the spacing between slices");
            a slice model (2-D) must say which it wants, a volume model takes false.
    """

    kind: Literal["target_spacing"] = "target_spacing"
    spacing: tuple[PositiveFloat, PositiveFloat, PositiveFloat] | None = None
    image_order: int = Field(default=3, ge=0, le=5)
    in_plane_only: bool = False

    def target_for(self, spacing: Sequence[float]) -> Spacing:
        """The spacing a case of ``spacing`` is resampled to (its own Z when in-plane only)."""
        x, y, z = self.target()
        return (x, y, float(spacing[2])) if self.in_plane_only else (x, y, z)

    def target(self) -> Spacing:
        """The spacing to resample to; InputError naming the field when it is unset."""
        if self.spacing is None:
            raise InputError(
                "'target_spacing' resampling has no spacing: it is computed when a dataset is "
                "prepared (a model's config must carry it; write it out, e.g. [1.0, 1.0, 1.0])",
                where="data.preprocess.resample.spacing",
            )
        return self.spacing


ResampleConfig = Annotated[NoResampling | TargetSpacing, Field(discriminator="kind")]


def resample_case(case: LoadedCase, cfg: NoResampling | TargetSpacing) -> LoadedCase:
    """The case on the target grid: image (spline), label (one-hot linear), ``spacing`` the
    target and ``source_spacing`` the case's own. Returned as it is (``source_spacing`` None)
    when ``cfg`` is ``none`` or the target grid has the case's shape."""
    if isinstance(cfg, NoResampling):
        return case
    target = cfg.target_for(case.spacing)
    shape = resampled_shape(case.image.shape[1:], case.spacing, target)
    if shape == tuple(case.image.shape[1:]):
        return case
    axis = coarse_axis(case.spacing, target)
    image = resample_image(case.image, shape, axis, cfg.image_order)
    label = None if case.label is None else resample_label(case.label, shape, axis)
    return replace(case, image=image, label=label, spacing=target, source_spacing=case.spacing)


def resampled_shape(
    shape: Sequence[int], spacing: Sequence[float], target: Sequence[float]
) -> tuple[int, ...]:
    """nnU-Net's ``compute_new_shape``: ``round(shape * spacing / target)`` per axis, at least 1."""
    ratio = np.asarray(spacing, dtype=np.float64) / np.asarray(target, dtype=np.float64)
    return tuple(max(1, round(float(n * r))) for n, r in zip(shape, ratio, strict=True))


def coarse_axis(spacing: Sequence[float], target: Sequence[float]) -> int | None:
    """The axis resampled apart by nearest neighbour, or None (resample all axes together).

    nnU-Net's ``get_do_separate_z``/``get_lowres_axis``: the source spacing decides when it is
    anisotropic (coarsest > 3 x finest), else the target's; the coarsest axis is that axis when
    only one axis is coarsest (two equally coarse axes: none).
    """
    for candidate in (spacing, target):
        values = np.asarray(candidate, dtype=np.float64)
        if values.max() / values.min() > ANISOTROPY_RATIO:
            coarsest = np.flatnonzero(values == values.max())
            return int(coarsest[0]) if coarsest.size == 1 else None
    return None


def resample_image(
    image: np.ndarray, shape: Sequence[int], axis: int | None, order: int = 3
) -> np.ndarray:
    """Resample a (C, *S) float image to (C, *shape).

    Args:
        image: (C, X, Y, Z) intensities.
        shape: the new (X', Y', Z').
        axis: spatial axis (0-2) resampled apart by nearest neighbour, or None.
        order: spline order of the other axes.

    Returns:
        (C, X', Y', Z') float32, each channel clipped to its input range (with ``axis``, each
        slice along it to its source slice's range, as nnU-Net resizes slice by slice).
    """
    out = np.empty((image.shape[0], *shape), dtype=np.float32)
    for index, channel in enumerate(np.asarray(image, dtype=np.float32)):
        out[index] = _resize(channel, shape, axis, order, clip=True)
    return out


def resample_label(label: np.ndarray, shape: Sequence[int], axis: int | None) -> np.ndarray:
    """Resample an (X, Y, Z) uint8 label map to ``shape``, nnU-Net's ``resize_segmentation``:
    each class's mask linearly interpolated and kept where >= 0.5 (higher codes written last),
    the coarse ``axis`` (if any) by nearest neighbour."""
    out = np.zeros(tuple(shape), dtype=np.uint8)
    for code in np.unique(label):
        if code == 0:
            continue
        mask = _resize((label == code).astype(np.float32), shape, axis, order=1)
        out[mask >= 0.5] = code
    return out


def _resize(
    volume: np.ndarray, shape: Sequence[int], axis: int | None, order: int, clip: bool = False
) -> np.ndarray:
    """(X, Y, Z) float32 -> ``shape``: spline ``order`` on every axis, or on every axis but
    ``axis`` followed by nearest neighbour along ``axis``. ``clip``: the spline's overshoot
    clipped to the input's range (with ``axis``, each slice to its own source slice's)."""
    shape = tuple(int(n) for n in shape)
    if tuple(volume.shape) == shape:
        return volume.astype(np.float32, copy=True)
    if axis is None:
        out = _zoom(volume, shape, order)
        return np.clip(out, volume.min(), volume.max(), out=out) if clip else out
    in_plane = tuple(volume.shape[a] if a == axis else shape[a] for a in range(volume.ndim))
    resized = volume  # in-plane unchanged: only the nearest-neighbour picks below
    if in_plane != volume.shape:
        resized = _zoom(volume, in_plane, order)
    if clip and resized is not volume:
        others = tuple(a for a in range(volume.ndim) if a != axis)
        low, high = volume.min(axis=others, keepdims=True), volume.max(axis=others, keepdims=True)
        np.clip(resized, low, high, out=resized)
    return np.take(resized, nearest_indices(volume.shape[axis], shape[axis]), axis=axis)


def _zoom(volume: np.ndarray, shape: tuple[int, ...], order: int) -> np.ndarray:
    """Spline resize with voxel centres on voxel centres (``grid_mode``) and edge values
    repeated outside (skimage's ``mode='edge'``)."""
    factors = [n / m for n, m in zip(shape, volume.shape, strict=True)]
    out = ndimage.zoom(volume, factors, order=order, mode="nearest", grid_mode=True)
    assert out.shape == shape, (out.shape, shape)  # zoom rounds in_shape * factor: exact here
    return out.astype(np.float32, copy=False)


def nearest_indices(size: int, new_size: int) -> np.ndarray:
    """(new_size,) source indices of nearest-neighbour resampling along one axis, voxel centres
    on voxel centres: ``round((i + 0.5) * size / new_size - 0.5)`` clipped to the axis."""
    centres = (np.arange(new_size) + 0.5) * (size / new_size) - 0.5
    return np.clip(np.floor(centres + 0.5), 0, size - 1).astype(np.int64)


def dataset_target_spacing(spacings: Sequence[Spacing], shapes: Sequence[Sequence[int]]) -> Spacing:
    """nnU-Net's ``determine_fullres_target_spacing`` over a dataset's cases.

    The median spacing; but when the median spacing's coarsest axis is more than 3 x the others'
    and the median shape along it is less than a third of the others' (few thick slices), that
    axis takes the 10th percentile of its spacings instead (not finer than the other axes), so
    thin-slice cases are not thrown away for the thick ones.

    Args:
        spacings: (X, Y, Z) mm of each case.
        shapes: (X, Y, Z) voxels of each case, same order.

    Returns:
        (X, Y, Z) mm, rounded to 1 nm: headers store float32 spacings (0.6 reads 0.6000000238),
        and 1 nm is far below any voxel. :func:`exact_target_spacing` is the unrounded value.
    """
    return rounded_spacing(exact_target_spacing(spacings, shapes))


def rounded_spacing(spacing: Sequence[float]) -> Spacing:
    """(X, Y, Z) mm rounded to 1 nm (see :func:`dataset_target_spacing`)."""
    return (round(float(spacing[0]), 6), round(float(spacing[1]), 6), round(float(spacing[2]), 6))


def exact_target_spacing(
    spacings: Sequence[Sequence[float]], shapes: Sequence[Sequence[int]]
) -> np.ndarray:
    """:func:`dataset_target_spacing` before rounding: nnU-Net's planner works on this value,
    and float32 noise in it decides ties such as which of two equal axes is "coarsest"."""
    values = np.asarray(spacings, dtype=np.float64)
    target = np.median(values, axis=0)
    median_shape = np.median(np.asarray(shapes, dtype=np.float64), axis=0)
    worst = int(np.argmax(target))
    others = [a for a in range(3) if a != worst]
    anisotropic_spacing = target[worst] > ANISOTROPY_RATIO * max(target[a] for a in others)
    few_voxels = median_shape[worst] * ANISOTROPY_RATIO < min(median_shape[a] for a in others)
    if anisotropic_spacing and few_voxels:
        coarse = float(np.percentile(values[:, worst], 10))
        finest_other = max(target[a] for a in others)
        target[worst] = coarse if coarse >= finest_other else finest_other + 1e-5
    return target
