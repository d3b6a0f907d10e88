"""The tensor operations of the augmentation, each applied to every sample it is given.

:mod:`trainables.data.augment` decides which samples draw which transform and passes each
operation only those rows; these functions neither draw random numbers nor read anything back
from the device.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def upload(values: Tensor, device: torch.device) -> Tensor:
    """``values`` (a small CPU tensor) on ``device`` without the host waiting for the device.

    A plain ``.to("cuda")`` from pageable memory synchronises the stream (and so waits for all
    queued kernels); from pinned memory ``non_blocking`` just queues the copy, and the caching
    host allocator keeps the pinned block until the copy has run.
    """
    if values.device == device:
        return values
    if device.type == "cuda":
        values = values.pin_memory()
    return values.to(device, non_blocking=True)


def spatial_transform(
    image: Tensor,
    label: Tensor,
    matrix: Tensor,
    label_classes: int | None = None,
    out_shape: Sequence[int] | None = None,
) -> tuple[Tensor, Tensor]:
    """Resample every sample through a linear map about the volume centre.

    Args:
        image: ``(n, C, *S)`` float; label ``(n, *S)`` int64 or uint8.
        matrix: ``(n, d, d)`` maps output voxel offsets from the centre to input offsets, in
            voxel units and the tensors' axis order (``d = len(S)``); the identity changes
            nothing, a rotation rotates about the centre whatever the shape's aspect ratio.
        label_classes: resample the label as nnU-Net does (:func:`resample_label_linear`) with
            codes ``0 .. label_classes - 1``; None: nearest neighbour.
        out_shape: ``P``, the output's spatial size, centred in ``S`` (the patch inside a
            region cut with a margin); None: ``S``. With the identity and an even ``S - P``
            the output is exactly the centre crop.

    Returns:
        Resampled ``(n, C, *P)`` image (bilinear) and ``(n, *P)`` label (same dtype); outside
        the input the image is 0 and the label background.
    """
    spatial = image.shape[2:]
    out = tuple(spatial if out_shape is None else out_shape)
    # grid_sample works in normalised [-1, 1] coordinates with the axes reversed (x = last):
    # theta = N_in^-1 M N_out in reversed order, N = diag(size / 2) with align_corners=False.
    sizes = [s / 2.0 for s in reversed(spatial)] + [p / 2.0 for p in reversed(out)]
    half_in, half_out = upload(torch.tensor(sizes), image.device).split(len(out))
    reversed_m = matrix.to(half_in.dtype).flip(-1).flip(-2)
    theta = reversed_m * half_out.view(1, 1, -1) / half_in.view(1, -1, 1)
    theta = torch.cat([theta, theta.new_zeros(theta.shape[0], len(out), 1)], dim=2)
    grid = F.affine_grid(theta, [*image.shape[:2], *out], align_corners=False)
    warped = F.grid_sample(
        image, grid.to(image.dtype), "bilinear", padding_mode="zeros", align_corners=False
    )
    nearest = _resample_label_nearest(label, grid)
    if label_classes is None:
        return warped, nearest
    return warped, resample_label_linear(label, grid, label_classes, nearest)


def _resample_label_nearest(label: Tensor, grid: Tensor) -> Tensor:
    lab = F.grid_sample(
        label.unsqueeze(1).to(grid.dtype),
        grid,
        "nearest",
        padding_mode="zeros",
        align_corners=False,
    )
    return lab.squeeze(1).round().to(label.dtype)


# nnU-Net scores in float16 after scaling by 1000, which makes scores within ~5e-4 equal
_TIE = 1e-3


def resample_label_linear(label: Tensor, grid: Tensor, classes: int, nearest: Tensor) -> Tensor:
    """nnU-Net's ``mode_seg='bilinear'``: each class's one-hot mask interpolated, highest wins.

    Outside the input counts as one more class (nnU-Net pads the label with -1 and maps it to
    background afterwards), so a voxel mostly outside is background; a top score shared
    (within 1e-3) goes to the nearest neighbour's label (nnU-Net's ``seg_tiebreak``).

    Args:
        label: ``(n, *S)`` codes in ``[0, classes)``.
        grid: the ``affine_grid`` sampling grid, ``(n, *S, d)``.
        classes: number of label codes (internal codes: 4 covers every scheme).
        nearest: the nearest-neighbour resampling of ``label`` on ``grid``, for ties.
    """
    ndim = label.ndim - 1
    codes = torch.arange(classes, device=label.device, dtype=label.dtype)
    onehot = (label.unsqueeze(1) == codes.view(1, classes, *([1] * ndim))).to(grid.dtype)
    scores = F.grid_sample(onehot, grid, "bilinear", padding_mode="zeros", align_corners=False)
    outside = 1.0 - scores.sum(1, keepdim=True)
    scores = torch.cat([scores, outside], dim=1)
    first, best = scores.max(dim=1)
    # the runner-up: the best masked out (topk is ~6x slower on a CPU for this shape)
    second = scores.scatter(1, best.unsqueeze(1), float("-inf")).amax(dim=1)
    best = torch.where(best == classes, torch.zeros_like(best), best).to(label.dtype)
    return torch.where(first - second < _TIE, nearest, best)


def rotation_matrices(angles: Tensor) -> Tensor:
    """Rotation matrices from angles in radians.

    Args:
        angles: ``(n, 1)`` in-plane angles (2-D) or ``(n, 3)`` angles about axes 0, 1, 2 (3-D).

    Returns:
        ``(n, 2, 2)`` or ``(n, 3, 3)``: ``R2(a)`` or ``R0(a0) @ R1(a1) @ R2(a2)`` where ``Ri``
        rotates the plane of the two other axes.
    """
    cos, sin = angles.cos(), angles.sin()
    if angles.shape[1] == 1:
        c, s = cos[:, 0], sin[:, 0]
        return torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)
    out = torch.eye(3, dtype=angles.dtype, device=angles.device).repeat(angles.shape[0], 1, 1)
    for axis in range(3):
        a, b = [i for i in range(3) if i != axis]
        rot = torch.eye(3, dtype=angles.dtype, device=angles.device).repeat(angles.shape[0], 1, 1)
        rot[:, a, a], rot[:, a, b] = cos[:, axis], -sin[:, axis]
        rot[:, b, a], rot[:, b, b] = sin[:, axis], cos[:, axis]
        out = out @ rot
    return out


def gaussian_blur(x: Tensor, sigma: Tensor, max_sigma: float) -> Tensor:
    """Separable Gaussian blur with one sigma per sample, channel and axis (mirrored borders).

    Each 1-D kernel is ``exp(-d^2 / (2 sigma^2))`` over the offsets ``d`` in ``[-r, r]``,
    normalised to sum 1, with ``r = max(1, ceil(3 max_sigma))`` voxels. The radius comes from
    the host number ``max_sigma``, not from ``sigma`` (reading ``sigma.max()`` back from a GPU
    would make the host wait for it). A sample whose sigma is below the bound gets its own
    narrow Gaussian in the wider window: the same blur as with a ``ceil(3 sigma)`` radius (or
    the batch maximum's, as this function once used) except for the kernel's weights beyond that
    radius, which the narrower window drops and renormalises away: under 0.3% of the kernel's
    mass for any sigma (they lie beyond 3 sigma), 2.7e-4 at sigma = 1.

    Args:
        x: ``(n, C, *S)`` float, ``S`` 2-D or 3-D.
        sigma: ``(n, C, len(S))`` standard deviations in voxels per axis (> 0), or ``(n, C)``
            for the same on every axis; at most ``max_sigma`` (a larger one is truncated at
            ``r`` rather than at 3 sigma).
        max_sigma: upper bound of ``sigma`` in voxels (``AugmentConfig.blur_sigma[1]``).

    Returns:
        ``(n, C, *S)``; every (sample, channel) is one group of a depthwise convolution, one
        1-D kernel per spatial axis, so the whole batch costs ``len(S)`` convolutions. Beyond
        the border the image is mirrored (``reflect``: voxel ``-d`` is voxel ``d``), as
        batchgeneratorsv2's ``blur_dimension`` pads; an axis no longer than the radius, which
        cannot be mirrored, repeats its edge voxel.
    """
    n, c, *spatial = x.shape
    if sigma.ndim == 2:
        sigma = sigma.unsqueeze(-1).expand(n, c, len(spatial))
    radius = max(1, math.ceil(3.0 * max_sigma))
    offsets = torch.arange(-radius, radius + 1, device=x.device, dtype=torch.float32)
    conv = F.conv3d if len(spatial) == 3 else F.conv2d
    out = x.reshape(1, n * c, *spatial)
    for axis in range(len(spatial)):
        kernel = torch.exp(-0.5 * (offsets / sigma[..., axis].reshape(-1, 1).float()) ** 2)
        kernel = (kernel / kernel.sum(1, keepdim=True)).to(x.dtype)  # (n*C, 2r+1)
        shape = [1] * len(spatial)
        shape[axis] = kernel.shape[1]
        pad = [0] * (2 * len(spatial))
        pad[2 * (len(spatial) - 1 - axis)] = pad[2 * (len(spatial) - 1 - axis) + 1] = radius
        mode = "reflect" if spatial[axis] > radius else "replicate"
        padded = F.pad(out, pad, mode=mode)
        out = conv(padded, kernel.view(n * c, 1, *shape), groups=n * c)
    return out.view(n, c, *spatial)


def simulate_low_resolution(
    x: Tensor, zooms: Sequence[Sequence[float | None]], keep_axis: int | None
) -> Tensor:
    """nnU-Net's ``SimulateLowResolutionTransform``: each chosen channel down by nearest
    neighbour to ``round(S * zoom)`` voxels, then back to ``S`` by (bi/tri)linear interpolation.

    Args:
        x: ``(n, C, *S)`` float.
        zooms: per sample, per channel, the share of the resolution kept (host numbers: they
            set tensor shapes), or None to leave that channel as it is.
        keep_axis: an axis of ``S`` kept at full resolution (dummy 2-D's slice axis), or None.

    Returns:
        ``(n, C, *S)``, a new tensor.
    """
    spatial = list(x.shape[2:])
    mode = "trilinear" if len(spatial) == 3 else "bilinear"
    out = x.clone()
    for i, row in enumerate(zooms):
        for c, zoom in enumerate(row):
            if zoom is None:
                continue
            # nnU-Net keeps the zoom in float32: an exact .5 product then rounds as there
            zoom32 = float(torch.tensor(zoom, dtype=torch.float32))
            size = [
                n if axis == keep_axis else max(1, round(n * zoom32))
                for axis, n in enumerate(spatial)
            ]
            low = F.interpolate(x[i, c][None, None].float(), size=size, mode="nearest-exact")
            back = F.interpolate(low, size=spatial, mode=mode, align_corners=False)
            out[i, c] = back[0, 0].to(x.dtype)
    return out


def _spatial_dims(x: Tensor) -> tuple[int, ...]:
    return tuple(range(2, x.ndim))


def adjust_contrast(x: Tensor, factor: Tensor) -> Tensor:
    """Scale each channel around its mean, clipped to the channel's original range."""
    dims = _spatial_dims(x)
    mean = x.mean(dim=dims, keepdim=True)
    low, high = x.amin(dim=dims, keepdim=True), x.amax(dim=dims, keepdim=True)
    return torch.clamp((x - mean) * factor + mean, low, high)


def adjust_gamma(
    x: Tensor, gamma: Tensor, invert: bool = False, retain_stats: bool = False
) -> Tensor:
    """``low + range * ((x - low) / range) ** gamma`` per channel (a no-op on flat channels).

    Args:
        x: ``(n, C, *S)``.
        gamma: exponents broadcastable to ``x`` (one per sample and channel).
        invert: transform ``-x`` and negate the result (nnU-Net's ``p_invert_image``), so the
            exponent bends the bright end instead of the dark one.
        retain_stats: give each channel back its mean and standard deviation (unbiased), as
            nnU-Net's ``p_retain_stats``.
    """
    dims = _spatial_dims(x)
    if invert:
        x = -x
    if retain_stats:
        mean, std = x.mean(dim=dims, keepdim=True), x.std(dim=dims, keepdim=True)
    low, high = x.amin(dim=dims, keepdim=True), x.amax(dim=dims, keepdim=True)
    span = high - low
    unit = ((x - low) / span.clamp_min(1e-7)).clamp(0.0, 1.0)
    out = unit.pow(gamma) * span + low
    if retain_stats:
        new_mean, new_std = out.mean(dim=dims, keepdim=True), out.std(dim=dims, keepdim=True)
        out = (out - new_mean) * (std / new_std.clamp_min(1e-7)) + mean
    return -out if invert else out
