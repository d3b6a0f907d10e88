"""Batched data augmentation in pure torch, run on the training device (GPU when there is one).

nnU-Net's CPU augmentation costs ~0.37 s per 128^3 sample per core, which would starve a GPU,
so every transform here is a batched tensor op on whatever device the batch lives on:

- spatial: one rotation (about all three axes in 3-D, in-plane in 2-D) times an isotropic scale
  per sample, resampled with a single ``affine_grid`` + ``grid_sample`` for the samples that drew
  it (bilinear image, nearest label, zero padding, ``align_corners=False``); mirroring per axis.
  A strongly anisotropic 3-D patch (thick slices) is rotated and scaled within its slices only,
  as nnU-Net's "dummy 2-D" augmentation does (:func:`spatial_plan`), so slices several mm apart
  are never interpolated into each other.
- intensity, per sample (parameters per channel where nnU-Net varies them): Gaussian noise,
  Gaussian blur (separable 1-D kernels), multiplicative brightness, contrast around the mean
  (clipped to the original range), gamma on the [0, 1]-rescaled intensity.

Which samples get which transform is decided on the host, by one ``torch.rand`` per batch on a
CPU ``torch.Generator`` (``host_generator``), because these decisions choose which code runs:
transforms nobody drew are skipped, and the others touch only the samples that drew them, so
every other sample stays bit-identical. The decisions reach the device as one small pinned,
non-blocking copy; the blur's kernel radius comes from the configured sigma bound, not from the
drawn sigmas. Nothing is read back from the device, so the host never waits for the GPU: there
is no synchronisation at all. The transforms' parameters and the noise come from ``generator``,
on the batch's device; the per-sample probabilities and parameter distributions are as
configured whichever generator draws what.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from pydantic import Field, field_validator
from torch import Tensor

from trainables.config.base import Frozen
from trainables.data.augment_ops import (
    adjust_contrast,
    adjust_gamma,
    gaussian_blur,
    rotation_matrices,
    spatial_transform,
    upload,
)
from trainables.errors import InputError

__all__ = [
    "ANISOTROPY_RATIO",
    "LABEL_DTYPES",
    "AugmentConfig",
    "augment_batch",
    "gaussian_blur",
    "rotation_matrices",
    "spatial_plan",
    "spatial_transform",
]


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
            and scale is resampled once (bilinear image, nearest label, zeros outside).
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
        blur_prob: chance per sample of a Gaussian blur (nnU-Net: 0.2); every channel is
            blurred, each with its own sigma.
        blur_sigma: ``(low, high)`` Gaussian sigma in voxels, per sample and channel, the same on
            every axis; the kernel radius is ``ceil(3 * high)`` voxels (nnU-Net: 0.5-1).
        brightness_prob: chance per sample of a multiplicative brightness change (nnU-Net: 0.15).
        brightness_range: ``(low, high)`` factor multiplying the intensities, per channel
            (nnU-Net: 0.75-1.25).
        contrast_prob: chance per sample of a contrast change (nnU-Net: 0.15).
        contrast_range: ``(low, high)`` factor scaling each channel around its mean, the result
            clipped to the channel's original min-max range (nnU-Net: 0.75-1.25).
        gamma_prob: chance per sample of a gamma transform (nnU-Net: 0.3).
        gamma_range: ``(low, high)`` exponent, per channel, applied to the intensity rescaled
            to [0, 1] by the channel's min and max, then mapped back (nnU-Net: 0.7-1.5; its
            inverted-gamma variant and mean/std retention are not applied here).
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
    brightness_prob: float = Field(default=0.15, ge=0.0, le=1.0)
    brightness_range: tuple[float, float] = (0.75, 1.25)
    contrast_prob: float = Field(default=0.15, ge=0.0, le=1.0)
    contrast_range: tuple[float, float] = (0.75, 1.25)
    gamma_prob: float = Field(default=0.3, ge=0.0, le=1.0)
    gamma_range: tuple[float, float] = (0.7, 1.5)

    @field_validator("noise_std", "brightness_range", "contrast_range")
    @classmethod
    def _non_negative_range(cls, value: tuple[float, float]) -> tuple[float, float]:
        return _check_range(value, positive=False)

    @field_validator("scale_range", "blur_sigma", "gamma_range")
    @classmethod
    def _positive_range(cls, value: tuple[float, float]) -> tuple[float, float]:
        return _check_range(value, positive=True)


def _check_range(value: tuple[float, float], positive: bool) -> tuple[float, float]:
    low, high = value
    if low > high:
        raise ValueError(f"low {low} is greater than high {high}")
    if (positive and low <= 0) or low < 0:
        raise ValueError(f"low {low} must be {'> 0' if positive else '>= 0'}")
    return value


ANISOTROPY_RATIO = 3.0  # nnU-Net's ANISO_THRESHOLD: longest / shortest patch axis for dummy 2-D


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


# Decision columns of the per-batch random draw; flips follow, one column per spatial axis.
LABEL_DTYPES = (torch.int64, torch.uint8)  # uint8: ``train.speed.uint8_labels``; kept as given
_TRANSFORMS = ("rotation", "scale", "noise", "blur", "brightness", "contrast", "gamma")


def augment_batch(
    image: Tensor,
    label: Tensor,
    cfg: AugmentConfig,
    generator: torch.Generator,
    host_generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Augment a batch on its own device, without making the host wait for the device.

    Args:
        image: ``(B, C, *S)`` float, ``S`` 2-D or 3-D.
        label: ``(B, *S)`` int64 or uint8 label codes.
        cfg: probabilities and ranges.
        generator: source of the transforms' parameters and noise; on the tensors' device.
        host_generator: CPU source of the per-sample decisions (which sample gets which
            transform; one ``(B, 7 + len(S))`` uniform draw per call). None draws them from
            ``generator``, which must then be a CPU generator (the CPU workers' path).

    Returns:
        ``(B, C, *S)`` image and ``(B, *S)`` label (same dtypes), new tensors or the inputs
        themselves when nothing was drawn.
    """
    _check_batch(image, label)
    if not cfg.enabled:
        return image, label
    decider = generator if host_generator is None else host_generator
    if decider.device.type != "cpu":
        raise InputError(
            f"the per-sample decisions need a CPU generator, got one on {decider.device}; pass "
            "host_generator",
            where="augment_batch",
        )
    rows = _decide(cfg, image.shape[0], image.ndim - 2, decider, image.device)
    image, label = _spatial(image, label, cfg, rows, generator)
    image = _intensity(image, cfg, rows, generator)
    return _flips(image, label, rows)


def _check_batch(image: Tensor, label: Tensor) -> None:
    if image.ndim not in (4, 5) or label.shape != image.shape[:1] + image.shape[2:]:
        raise InputError(
            f"expected image (B, C, *S) with 2 or 3 spatial axes and label (B, *S), got image "
            f"{tuple(image.shape)} and label {tuple(label.shape)}",
            where="augment_batch",
        )
    if not image.is_floating_point() or label.dtype not in LABEL_DTYPES:
        raise InputError(
            f"expected a float image and an int64 or uint8 label, got {image.dtype} and "
            f"{label.dtype}",
            where="augment_batch",
        )


@dataclass(frozen=True)
class _Rows:
    """The samples (row indices into the batch) that drew each transform.

    Names: the ``_TRANSFORMS``, ``flip0``.. per spatial axis, and ``spatial`` (rotation or
    scale: the samples that are resampled).

    Attributes:
        host: ``name -> sorted row indices`` on the host; they choose which code runs.
        device: ``name -> (n,) int64`` the same indices on the batch's device.
        masks: ``rotation`` and ``scale`` as ``(B,)`` bool masks on the batch's device.
    """

    host: dict[str, list[int]]
    device: dict[str, Tensor]
    masks: dict[str, Tensor]


def _decide(
    cfg: AugmentConfig,
    batch: int,
    ndim: int,
    host_generator: torch.Generator,
    device: torch.device,
) -> _Rows:
    """Bernoulli draws, one per sample and transform (per axis for flips), on the host.

    The draw is on the CPU because its outcome picks the code path: drawn on the GPU it would
    have to be read back, a host sync per batch. ``host_generator`` must be a CPU generator.
    """
    probs = [getattr(cfg, f"{name}_prob") for name in _TRANSFORMS] + [cfg.flip_prob] * ndim
    draws = torch.rand(batch, len(probs), generator=host_generator)
    hits = draws < torch.tensor(probs)  # (B, 7 + ndim) bool, on the host
    names = [*_TRANSFORMS, *(f"flip{axis}" for axis in range(ndim))]
    host = {name: hits[:, j].nonzero().flatten().tolist() for j, name in enumerate(names)}
    host["spatial"] = sorted(set(host["rotation"]) | set(host["scale"]))
    # Every index list and both masks travel in one copy; the split views need no sync.
    mask_columns = [_TRANSFORMS.index("rotation"), _TRANSFORMS.index("scale")]
    parts = [torch.tensor(rows, dtype=torch.int64) for rows in host.values()]
    parts += [hits[:, j].to(torch.int64) for j in mask_columns]
    pieces = upload(torch.cat(parts), device).split([part.numel() for part in parts])
    return _Rows(
        host=host,
        device=dict(zip(host, pieces[: len(host)], strict=True)),
        masks={"rotation": pieces[-2].bool(), "scale": pieces[-1].bool()},
    )


def _uniform(
    low_high: tuple[float, float],
    shape: tuple[int, ...],
    generator: torch.Generator,
    like: Tensor,
) -> Tensor:
    """Uniform draws in ``[low, high]`` of ``shape``, on ``like``'s device, float32."""
    low, high = low_high
    u = torch.rand(shape, generator=generator, device=like.device)
    return low + (high - low) * u


def _on_rows(x: Tensor, rows: _Rows, name: str, fn: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
    """Apply ``fn(x[index], index)`` to the rows that drew ``name`` only (``index`` ``(n,)``
    int64 on ``x``'s device); the other rows stay untouched."""
    count = len(rows.host[name])
    if count == 0:
        return x
    index = rows.device[name]
    if count == x.shape[0]:
        return fn(x, index)
    return x.index_copy(0, index, fn(x.index_select(0, index), index))


def _spatial(
    image: Tensor,
    label: Tensor,
    cfg: AugmentConfig,
    rows: _Rows,
    generator: torch.Generator,
) -> tuple[Tensor, Tensor]:
    """Rotation and scale in one resampling of the samples that drew either; in dummy 2-D, a
    rotation about the slice axis only and a scale of the other two axes only."""
    batch, ndim = image.shape[0], image.ndim - 2
    degrees, slice_axis = spatial_plan(cfg, tuple(image.shape[2:]))
    angles = _uniform((-degrees, degrees), (batch, 3 if ndim == 3 else 1), generator, image)
    scales = _uniform(cfg.scale_range, (batch,), generator, image)
    if not rows.host["spatial"]:
        return image, label
    rotate, scale = rows.masks["rotation"], rows.masks["scale"]
    per_axis = torch.where(scale, scales, torch.ones_like(scales)).unsqueeze(1).repeat(1, ndim)
    if slice_axis is not None:  # in-place only: python-int indexing, no host-device copy
        for axis in range(3):
            if axis != slice_axis:
                angles[:, axis] = 0.0
        per_axis[:, slice_axis] = 1.0
    eye = torch.eye(ndim, device=image.device).expand(batch, ndim, ndim)
    matrix = torch.where(rotate.view(-1, 1, 1), rotation_matrices(angles.deg2rad()), eye)
    matrix = matrix * per_axis.view(batch, 1, ndim)  # R @ diag(scale per axis)
    index = rows.device["spatial"]
    warped, lab = spatial_transform(
        image.index_select(0, index), label.index_select(0, index), matrix.index_select(0, index)
    )
    return image.index_copy(0, index, warped), label.index_copy(0, index, lab)


def _intensity(
    image: Tensor, cfg: AugmentConfig, rows: _Rows, generator: torch.Generator
) -> Tensor:
    """Noise, blur, brightness, contrast and gamma, in nnU-Net's order."""
    b, c = image.shape[:2]
    std = _uniform(cfg.noise_std, (b,), generator, image)
    sigma = _uniform(cfg.blur_sigma, (b, c), generator, image)
    bright = _uniform(cfg.brightness_range, (b, c), generator, image)
    contrast = _uniform(cfg.contrast_range, (b, c), generator, image)
    gamma = _uniform(cfg.gamma_range, (b, c), generator, image)

    def noise(x: Tensor, i: Tensor) -> Tensor:
        eps = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return x + eps * _per(std.index_select(0, i), x)

    def blur(x: Tensor, i: Tensor) -> Tensor:
        # The configured upper bound fixes the kernel size on the host (see gaussian_blur).
        return gaussian_blur(x, sigma.index_select(0, i), max_sigma=cfg.blur_sigma[1])

    image = _on_rows(image, rows, "noise", noise)
    image = _on_rows(image, rows, "blur", blur)
    per_channel = {  # name -> (drawn (B, C) parameters, fn(x, parameters shaped like x))
        "brightness": (bright, torch.mul),
        "contrast": (contrast, adjust_contrast),
        "gamma": (gamma, adjust_gamma),
    }
    for name, (values, fn) in per_channel.items():
        image = _on_rows(
            image, rows, name, lambda x, i, v=values, f=fn: f(x, _per(v.index_select(0, i), x))
        )
    return image


def _per(values: Tensor, x: Tensor) -> Tensor:
    """``(n,)`` or ``(n, C)`` parameters shaped to broadcast over ``x`` ``(n, C, *S)``."""
    shape = (*values.shape, *([1] * (x.ndim - values.ndim)))
    return values.to(x.dtype).view(shape)


def _flips(image: Tensor, label: Tensor, rows: _Rows) -> tuple[Tensor, Tensor]:
    """Mirror each spatial axis for the samples that drew it."""
    for axis in range(image.ndim - 2):
        name = f"flip{axis}"
        image = _on_rows(image, rows, name, lambda x, _i, a=axis: x.flip(a + 2))
        label = _on_rows(label, rows, name, lambda x, _i, a=axis: x.flip(a + 1))
    return image, label
