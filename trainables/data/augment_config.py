"""The augmentation's settings (``augment``) and nnU-Net's spatial rule for a patch.

Defaults follow nnU-Net v2's ``nnUNetTrainer.get_training_transforms``; the transforms are in
:mod:`trainables.data.augment`.
"""

from __future__ import annotations

import math

from pydantic import Field, field_validator

from trainables.config.base import Frozen

# nnU-Net's ANISO_THRESHOLD, also its dummy-2-D rule (longest / shortest patch axis)
from trainables.data.resample import ANISOTROPY_RATIO


class AugmentConfig(Frozen):
    """Per-transform probabilities (per sample; flips per sample and axis) and ranges.

    Defaults follow nnU-Net v2. Ranges are ``(low, high)``; a value is drawn uniformly in them.
    Angles in degrees (drawn in ``[-rotation_deg, rotation_deg]``), ``scale_range`` as a factor
    on the sampling coordinates (> 1 shrinks the content), noise and blur in intensity units and
    voxels.

    Attributes:
        enabled: false: training patches are used as sampled, every transform below is off.
        flip_prob: chance of mirroring, drawn per sample and per spatial axis independently
            (nnU-Net: 0.5 on every axis).
        rotation_prob: chance per sample of a rotation (nnU-Net: 0.2); a sample drawing rotation
            and scale is resampled once (bilinear image, the label class by class as nnU-Net does,
            zeros outside).
        rotation_deg: largest rotation angle in degrees: each angle is uniform in
            ``[-rotation_deg, rotation_deg]``, one per axis in 3-D (three rotations about axes
            0, 1, 2 composed), one in-plane angle for 2-D models and in dummy 2-D. None:
            nnU-Net v2's choice from the patch: 30 for 3-D patches, 180 in dummy 2-D; for 2-D
            patches 180, or 15 when the longer side exceeds 1.5 x the shorter.
        dummy_2d: 3-D patches only: rotate and scale within the plane of the two longer patch
            axes, leaving the shortest axis (thick slices) as it is (nnU-Net's
            ``do_dummy_2D_aug``). None: when the longest patch axis is more than 3 x the
            shortest, nnU-Net's rule (its first axis, the coarsest, is the shortest patch axis
            of the plans it makes: ``ablate data plan``).
        scale_prob: chance per sample of an isotropic zoom (nnU-Net: 0.2).
        scale_range: ``(low, high)`` zoom factor, one per sample for all axes, applied to the
            sampling coordinates: > 1 shrinks the content (zooms out), < 1 enlarges it
            (nnU-Net: 0.7-1.4).
        noise_prob: chance per sample of additive Gaussian noise (nnU-Net: 0.1).
        noise_std: ``(low, high)`` noise standard deviation, one per sample (all channels), in
            normalised intensity units (nnU-Net's "variance" (0, 0.1), used there as the std).
        blur_prob: chance per sample of a Gaussian blur (nnU-Net: 0.2); each channel is then
            blurred with probability ``blur_channel_prob``, with its own sigmas.
        blur_sigma: ``(low, high)`` Gaussian sigma in voxels, drawn per sample, channel and
            axis; the kernel radius is ``ceil(3 * high)`` voxels (nnU-Net: 0.5-1).
        blur_channel_prob: chance per channel of a sample drawing blur that the channel is
            blurred (nnU-Net: 0.5).
        brightness_prob: chance per sample of a multiplicative brightness change (nnU-Net: 0.15).
        brightness_range: ``(low, high)`` factor multiplying the intensities, per channel
            (nnU-Net: 0.75-1.25). This and the contrast and gamma factors are drawn as nnU-Net's
            ``BGContrast``: half the time uniform in ``[low, 1)``, else in ``[1, high]``
            (plain uniform when ``low >= 1``).
        contrast_prob: chance per sample of a contrast change (nnU-Net: 0.15).
        contrast_range: ``(low, high)`` factor scaling each channel around its mean, the result
            clipped to the channel's original min-max range (nnU-Net: 0.75-1.25).
        lowres_prob: chance per sample of simulating a lower resolution (nnU-Net: 0.25): a
            channel is downsampled by nearest neighbour and brought back by linear
            interpolation; in dummy 2-D the slice axis keeps its resolution.
        lowres_channel_prob: chance per channel of a sample drawing it (nnU-Net: 0.5).
        lowres_zoom: ``(low, high)`` share of the resolution kept, per channel, the same on
            every axis (nnU-Net: 0.5-1).
        gamma_invert_prob: chance per sample of a gamma transform of the inverted intensities
            (``-x``; nnU-Net: 0.1), before the ordinary one; same range and statistics rule.
        gamma_prob: chance per sample of a gamma transform (nnU-Net: 0.3).
        gamma_range: ``(low, high)`` exponent, per channel, applied to the intensity rescaled
            to [0, 1] by the channel's min and max, then mapped back (nnU-Net: 0.7-1.5).
        gamma_retain_stats: after a gamma transform, give each channel back its mean and
            standard deviation (nnU-Net: always).
        crop_margin: a sample that will be rotated or scaled is cut from the case with a margin
            around its patch (nnU-Net's "initial patch size", :func:`source_shape`), so the
            rotated or zoomed-out patch shows the image around it where nnU-Net's does; false:
            the patch alone is cut and whatever the transform brings in from beyond it is
            zero (background). Only those samples travel larger, so the bytes a batch moves
            barely change (image patches travel as the cache's float16).
    """

    enabled: bool = True
    flip_prob: float = Field(default=0.5, ge=0.0, le=1.0)
    rotation_prob: float = Field(default=0.2, ge=0.0, le=1.0)
    rotation_deg: float | None = Field(default=None, ge=0.0, le=180.0)
    dummy_2d: bool | None = None
    scale_prob: float = Field(default=0.2, ge=0.0, le=1.0)
    scale_range: tuple[float, float] = (0.7, 1.4)
    noise_prob: float = Field(default=0.1, ge=0.0, le=1.0)
    noise_std: tuple[float, float] = (0.0, 0.1)
    blur_prob: float = Field(default=0.2, ge=0.0, le=1.0)
    blur_sigma: tuple[float, float] = (0.5, 1.0)
    blur_channel_prob: float = Field(default=0.5, ge=0.0, le=1.0)
    brightness_prob: float = Field(default=0.15, ge=0.0, le=1.0)
    brightness_range: tuple[float, float] = (0.75, 1.25)
    contrast_prob: float = Field(default=0.15, ge=0.0, le=1.0)
    contrast_range: tuple[float, float] = (0.75, 1.25)
    lowres_prob: float = Field(default=0.25, ge=0.0, le=1.0)
    lowres_channel_prob: float = Field(default=0.5, ge=0.0, le=1.0)
    lowres_zoom: tuple[float, float] = (0.5, 1.0)
    gamma_invert_prob: float = Field(default=0.1, ge=0.0, le=1.0)
    gamma_prob: float = Field(default=0.3, ge=0.0, le=1.0)
    gamma_range: tuple[float, float] = (0.7, 1.5)
    gamma_retain_stats: bool = True
    crop_margin: bool = True

    @field_validator("noise_std", "brightness_range", "contrast_range")
    @classmethod
    def _non_negative_range(cls, value: tuple[float, float]) -> tuple[float, float]:
        return _check_range(value, positive=False)

    @field_validator("scale_range", "blur_sigma", "gamma_range", "lowres_zoom")
    @classmethod
    def _positive_range(cls, value: tuple[float, float]) -> tuple[float, float]:
        return _check_range(value, positive=True)

    @field_validator("lowres_zoom")
    @classmethod
    def _at_most_one(cls, value: tuple[float, float]) -> tuple[float, float]:
        if value[1] > 1:
            raise ValueError(f"high {value[1]} must be <= 1 (the share of the resolution kept)")
        return value


def _check_range(value: tuple[float, float], positive: bool) -> tuple[float, float]:
    low, high = value
    if low > high:
        raise ValueError(f"low {low} is greater than high {high}")
    if (positive and low <= 0) or low < 0:
        raise ValueError(f"low {low} must be {'> 0' if positive else '>= 0'}")
    return value


def spatial_plan(cfg: AugmentConfig, shape: tuple[int, ...]) -> tuple[float, int | None]:
    """The rotation bound in degrees and the slice axis (None: fully 3-D) for a patch.

    nnU-Net v2's ``configure_rotation_dummyDA_mirroring_and_inital_patch_size`` where the
    config leaves them None (see :class:`AugmentConfig`).

    Args:
        shape: the patch's spatial extent in voxels, 2 or 3 axes.
    """
    slice_axis = None
    if len(shape) == 3:
        anisotropic = max(shape) / min(shape) > ANISOTROPY_RATIO
        if cfg.dummy_2d or (cfg.dummy_2d is None and anisotropic):
            slice_axis = shape.index(min(shape))
    if cfg.rotation_deg is not None:
        return cfg.rotation_deg, slice_axis
    if len(shape) == 2:
        return (15.0 if max(shape) / min(shape) > 1.5 else 180.0), None
    return (180.0 if slice_axis is not None else 30.0), slice_axis


# nnU-Net's get_patch_size divides the rotated extent by the low end of this zoom range (its
# training zooms span 0.7-1.4: the strongest zoom-outs still reach beyond the margin).
MARGIN_ZOOM = 0.85


def source_shape(cfg: AugmentConfig, patch: tuple[int, ...]) -> tuple[int, ...]:
    """The region cut around a patch that will be rotated or scaled, in voxels per axis.

    nnU-Net v2's initial patch size (``get_patch_size``), made to cover every angle up to the
    bound: per axis ``i`` the widest extent of the patch turned by at most the rotation bound in
    a plane with another axis ``j``, ``max P_i cos a + P_j sin a`` over those angles (the
    diagonal once the bound passes ``atan(P_j / P_i)``), divided by 0.85 and truncated.
    nnU-Net evaluates the bound itself, capped at 90 degrees, and pairs each axis with one
    neighbour only: the same for a cube at 30 degrees (128 gives its 205), less than a 45-degree
    turn needs at its 2-D and dummy-2-D bound of 180. The slice axis of dummy 2-D keeps its
    size, as in nnU-Net. The margin ``E - P`` is rounded up to even so the patch sits exactly
    in the middle (nnU-Net's centre falls half a voxel off for odd margins). Zooms out beyond
    1 / 0.85 (nnU-Net draws up to 1.4) still reach past the margin, as in nnU-Net.

    Args:
        patch: the training patch ``P``, 2 or 3 axes.

    Returns:
        ``E`` with ``E_i >= P_i``; ``patch`` itself when the margin is off or nothing rotates
        or scales.
    """
    spatial = cfg.rotation_prob > 0 or cfg.scale_prob > 0
    if not (cfg.enabled and cfg.crop_margin and spatial):
        return patch
    degrees, slice_axis = spatial_plan(cfg, patch)
    bound = math.radians(min(degrees, 90.0)) if cfg.rotation_prob > 0 else 0.0
    in_plane = [axis for axis in range(len(patch)) if axis != slice_axis]
    shape = []
    for axis, size in enumerate(patch):
        if axis == slice_axis:
            shape.append(size)
            continue
        turned = [_turned_extent(size, patch[j], bound) for j in in_plane if j != axis]
        wide = max(int(max(size, *turned) / MARGIN_ZOOM), size)
        shape.append(wide + (wide - size) % 2)
    return tuple(shape)


def _turned_extent(along: int, across: int, bound: float) -> float:
    """Widest extent along one axis of an ``along x across`` rectangle turned by any angle in
    ``[0, bound]`` radians: ``along cos a + across sin a``, largest at ``atan(across/along)``."""
    peak = math.atan2(across, along)
    angle = min(bound, peak)
    return along * math.cos(angle) + across * math.sin(angle)
