"""Batched data augmentation in pure torch, run on the training device (GPU when there is one).

nnU-Net's CPU augmentation costs ~0.37 s per 128^3 sample per core, which would starve a GPU,
so every transform here is a batched tensor op on whatever device the batch lives on:

- spatial: one rotation (about all three axes in 3-D, in-plane in 2-D) times an isotropic scale
  per sample, resampled with a single ``affine_grid`` + ``grid_sample`` for the samples that drew
  it (bilinear image; the label as nnU-Net resamples it: each class's one-hot mask bilinear,
  the highest wins; zero padding, ``align_corners=False``); mirroring per axis. A training
  sample that drew either arrives cut with nnU-Net's margin around its patch
  (:func:`source_shape`) and is resampled from that region into the patch
  (:func:`augment_sources`), so what a rotation or zoom-out brings in is image, not zeros.
  A strongly anisotropic 3-D patch (thick slices) is rotated and scaled within its slices only,
  as nnU-Net's "dummy 2-D" augmentation does (:func:`spatial_plan`), so slices several mm apart
  are never interpolated into each other.
- intensity, per sample (parameters per channel where nnU-Net varies them), in nnU-Net's
  order: Gaussian noise, Gaussian blur (separable 1-D kernels, a sigma per axis), multiplicative
  brightness, contrast around the mean (clipped to the original range), simulated low
  resolution, gamma of the inverted intensity, gamma; both gammas keep the mean and std.

Which samples get which transform is decided on the host, from uniform draws made with each
sample in the loader (:func:`augment_sources`; :func:`augment_batch` draws them per batch on a
CPU ``torch.Generator``, ``host_generator``), because these decisions choose which code runs:
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

import numpy as np
import torch
from torch import Tensor

from trainables.data.augment_config import (
    ANISOTROPY_RATIO,
    AugmentConfig,
    source_shape,
    spatial_plan,
)
from trainables.data.augment_ops import (
    adjust_contrast,
    adjust_gamma,
    gaussian_blur,
    rotation_matrices,
    simulate_low_resolution,
    spatial_transform,
)
from trainables.data.augment_rows import TRANSFORMS, Rows, decide, on_rows, uniform
from trainables.data.labels import INTERNAL_BRATS
from trainables.data.sources import SourceBatch
from trainables.errors import InputError

__all__ = [
    "ANISOTROPY_RATIO",
    "LABEL_DTYPES",
    "AugmentConfig",
    "adjust_gamma",
    "augment_batch",
    "augment_sources",
    "decision_columns",
    "gaussian_blur",
    "needs_margin",
    "rotation_matrices",
    "simulate_low_resolution",
    "source_shape",
    "spatial_plan",
    "spatial_transform",
]


LABEL_DTYPES = (torch.int64, torch.uint8)  # uint8: ``train.speed.uint8_labels``; kept as given
LABEL_CLASSES = INTERNAL_BRATS.num_classes  # internal codes 0..3 (binary labels use 0..1)
Step = Callable[[Tensor, Tensor], Tensor]  # (rows of the batch, their indices) -> new rows


def augment_batch(
    image: Tensor,
    label: Tensor,
    cfg: AugmentConfig,
    generator: torch.Generator,
    host_generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Augment a batch of patches on its own device, without making the host wait for it.

    Args:
        image: ``(B, C, *S)`` float, ``S`` 2-D or 3-D.
        label: ``(B, *S)`` int64 or uint8 label codes.
        cfg: probabilities and ranges.
        generator: source of the transforms' parameters and noise; on the tensors' device.
        host_generator: CPU source of the per-sample decisions (which sample gets which
            transform; one ``(B, 9 + len(S))`` uniform draw per call) and of the low-resolution
            channels and zooms (one ``(B, C, 2)`` draw: they set tensor shapes). None draws
            them from ``generator``, which must then be a CPU generator.

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
    decisions = torch.rand(image.shape[0], decision_columns(image.ndim - 2), generator=decider)
    zooms = torch.rand(*image.shape[:2], 2, generator=decider, dtype=torch.float64)
    shape = tuple(image.shape[2:])
    return _augment([(image, label)], decisions, zooms, cfg, generator, shape)


def augment_sources(
    batch: SourceBatch,
    cfg: AugmentConfig,
    patch: tuple[int, ...],
    generator: torch.Generator,
    label_dtype: torch.dtype | None = None,
) -> tuple[Tensor, Tensor]:
    """The training batch of patches ``P`` from a loader batch, augmented on its device.

    The samples cut with a margin (those that drew a rotation or scale) are resampled into
    ``P`` from their wider region, so a rotated or zoomed-out patch shows the image around it;
    the per-sample decisions are the ones the loader drew with each sample.

    Args:
        batch: the loader's batch (float16 or float32 images), on the training device.
        patch: ``P``, the training patch's spatial size.
        generator: source of the transforms' parameters and noise; on the batch's device.
        label_dtype: the labels' dtype on return (the loader sends the margin's labels as
            uint8 whatever the configured dtype); None: as the batch has them.

    Returns:
        ``(B, C, *P)`` float32 image and ``(B, *P)`` label, rows in the batch's order (the
        samples cut at ``P`` first).
    """
    groups = [(image.float(), label) for image, label in batch.groups()]
    for image, label in groups:
        _check_batch(image, label)
    if batch.decisions is None or not cfg.enabled:
        image, label = _joined([_centre_crop(image, label, patch) for image, label in groups])
    else:
        decisions = torch.from_numpy(batch.decisions)
        zooms = torch.from_numpy(batch.zooms)
        image, label = _augment(groups, decisions, zooms, cfg, generator, patch)
    return image, label if label_dtype is None else label.to(label_dtype)


def decision_columns(ndim: int) -> int:
    """Uniform draws per sample that decide its transforms (flips: one per spatial axis)."""
    return len(TRANSFORMS) + ndim


def needs_margin(cfg: AugmentConfig, decisions: np.ndarray) -> bool:
    """Whether a sample with these ``(decision_columns,)`` uniforms is rotated or scaled (and
    so cut with the margin of :func:`~trainables.data.augment_config.source_shape`)."""
    rotation = decisions[TRANSFORMS.index("rotation")] < cfg.rotation_prob
    scale = decisions[TRANSFORMS.index("scale")] < cfg.scale_prob
    return bool(cfg.enabled and (rotation or scale))


Group = tuple[Tensor, Tensor]  # (n, C, *S) image, (n, *S) label


def _augment(
    groups: list[Group],
    decisions: Tensor,
    zooms: Tensor,
    cfg: AugmentConfig,
    generator: torch.Generator,
    patch: tuple[int, ...],
) -> tuple[Tensor, Tensor]:
    """Every transform on the groups' rows (in order), each group resampled into ``patch``.

    ``decisions``: ``(B, decision_columns)`` uniforms and ``zooms`` ``(B, C, 2)``, on the host.
    """
    sizes = [image.shape[0] for image, _ in groups]
    rows = decide(cfg, decisions, groups[0][0].device, sizes)
    lowres = _lowres_zooms(cfg, rows, zooms)
    degrees, slice_axis = spatial_plan(cfg, patch)
    image, label = _spatial(groups, cfg, rows, generator, (degrees, slice_axis), patch)
    image = _intensity(image, cfg, rows, generator, (lowres, slice_axis))
    return _flips(image, label, rows)


def _lowres_zooms(cfg: AugmentConfig, rows: Rows, draws: Tensor) -> list[list[float | None]]:
    """Per sample that drew ``lowres``, per channel: the zoom, or None (channel untouched).

    ``draws``: ``(B, C, 2)`` host uniforms, always drawn so the stream does not depend on them.
    """
    low, high = cfg.lowres_zoom
    values = draws.tolist()
    return [
        [low + (high - low) * z if u < cfg.lowres_channel_prob else None for u, z in values[b]]
        for b in rows.host["lowres"]
    ]


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


def _spatial(
    groups: list[Group],
    cfg: AugmentConfig,
    rows: Rows,
    generator: torch.Generator,
    plan: tuple[float, int | None],
    patch: tuple[int, ...],
) -> tuple[Tensor, Tensor]:
    """Rotation and scale in one resampling of the rows that drew either, into ``patch``
    (the others centre-cropped to it); in dummy 2-D, a rotation about the slice axis only and
    a scale of the other two axes only. ``plan``: the rotation bound and slice axis
    (:func:`spatial_plan`). Returns the groups joined, ``(B, C, *patch)``."""
    batch, like = sum(image.shape[0] for image, _ in groups), groups[0][0]
    degrees, slice_axis = plan
    angles = uniform((-degrees, degrees), (batch, 3 if len(patch) == 3 else 1), generator, like)
    scales = uniform(cfg.scale_range, (batch,), generator, like)
    if not rows.host["spatial"]:
        return _joined([_centre_crop(image, label, patch) for image, label in groups])
    matrix = _matrices(angles, scales, rows, slice_axis)
    out, offset = [], 0
    for g, (image, label) in enumerate(groups):
        count, local = image.shape[0], rows.host[f"spatial{g}"]
        part = matrix[offset : offset + count]
        offset += count
        if len(local) == count:  # every row resampled (a group cut with the margin)
            out.append(spatial_transform(image, label, part, LABEL_CLASSES, patch))
            continue
        image_p, label_p = _centre_crop(image, label, patch)
        if local:
            index = rows.device[f"spatial{g}"]
            warped, lab = spatial_transform(
                image.index_select(0, index),
                label.index_select(0, index),
                part.index_select(0, index),
                LABEL_CLASSES,
                patch,
            )
            image_p = image_p.index_copy(0, index, warped)
            label_p = label_p.index_copy(0, index, lab)
        out.append((image_p, label_p))
    return _joined(out)


def _matrices(angles: Tensor, scales: Tensor, rows: Rows, slice_axis: int | None) -> Tensor:
    """``(B, d, d)`` rotation times per-axis scale, the identity for rows that drew neither
    (``angles`` ``(B, 3)`` or ``(B, 1)`` in degrees, ``scales`` ``(B,)``)."""
    batch, ndim = angles.shape[0], 3 if angles.shape[1] == 3 else 2
    rotate, scale = rows.masks["rotation"], rows.masks["scale"]
    per_axis = torch.where(scale, scales, torch.ones_like(scales)).unsqueeze(1).repeat(1, ndim)
    if slice_axis is not None:  # in-place only: python-int indexing, no host-device copy
        for axis in range(3):
            if axis != slice_axis:
                angles[:, axis] = 0.0
        per_axis[:, slice_axis] = 1.0
    eye = torch.eye(ndim, device=angles.device).expand(batch, ndim, ndim)
    matrix = torch.where(rotate.view(-1, 1, 1), rotation_matrices(angles.deg2rad()), eye)
    return matrix * per_axis.view(batch, 1, ndim)  # R @ diag(scale per axis)


def _centre_crop(image: Tensor, label: Tensor, patch: tuple[int, ...]) -> Group:
    """The middle ``patch`` of ``(n, C, *S)`` and ``(n, *S)`` (views; the inputs when equal)."""
    if tuple(image.shape[2:]) == tuple(patch):
        return image, label
    starts = [(s - p) // 2 for s, p in zip(image.shape[2:], patch, strict=True)]
    window = tuple(slice(a, a + p) for a, p in zip(starts, patch, strict=True))
    return image[(slice(None), slice(None), *window)], label[(slice(None), *window)]


def _joined(groups: list[Group]) -> Group:
    """The groups' rows in order; labels in the widest of their dtypes (uint8 and int64)."""
    if len(groups) == 1:
        return groups[0]
    dtype = groups[0][1].dtype
    for _, label in groups[1:]:
        dtype = torch.promote_types(dtype, label.dtype)
    return torch.cat([g[0] for g in groups]), torch.cat([g[1].to(dtype) for g in groups])


def _intensity(
    image: Tensor,
    cfg: AugmentConfig,
    rows: Rows,
    generator: torch.Generator,
    lowres: tuple[list[list[float | None]], int | None],
) -> Tensor:
    """Noise, blur, brightness, contrast, low resolution, inverted gamma and gamma, in
    nnU-Net's order. ``lowres``: the host-drawn zooms and the axis kept (dummy 2-D)."""
    b, c, ndim = image.shape[0], image.shape[1], image.ndim - 2
    std = uniform(cfg.noise_std, (b,), generator, image)
    sigma = uniform(cfg.blur_sigma, (b, c, ndim), generator, image)
    blurred = torch.rand((b, c), generator=generator, device=image.device) < cfg.blur_channel_prob
    factors = {
        name: _bg_contrast(getattr(cfg, f"{kind}_range"), (b, c), generator, image)
        for name, kind in (("brightness", "brightness"), ("contrast", "contrast"),
                           ("gamma_invert", "gamma"), ("gamma", "gamma"))
    }  # fmt: skip

    def noise(x: Tensor, i: Tensor) -> Tensor:
        eps = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return x + eps * _per(std.index_select(0, i), x)

    def blur(x: Tensor, i: Tensor) -> Tensor:
        # The configured upper bound fixes the kernel size on the host (see gaussian_blur).
        out = gaussian_blur(x, sigma.index_select(0, i), max_sigma=cfg.blur_sigma[1])
        chosen = blurred.index_select(0, i).view(*x.shape[:2], *([1] * ndim))
        return torch.where(chosen, out, x)

    def gamma(invert: bool) -> Callable[[Tensor, Tensor], Tensor]:
        return lambda x, g: adjust_gamma(x, g, invert, cfg.gamma_retain_stats)

    def low_resolution(x: Tensor, _index: Tensor) -> Tensor:
        zooms, keep_axis = lowres  # in the order of the rows that drew it, as x is
        return simulate_low_resolution(x, zooms, keep_axis)

    def per_channel(name: str, fn: Callable[[Tensor, Tensor], Tensor]) -> Step:
        return lambda x, i: fn(x, _per(factors[name].index_select(0, i), x))

    steps: list[tuple[str, Step]] = [
        ("noise", noise),
        ("blur", blur),
        ("brightness", per_channel("brightness", torch.mul)),
        ("contrast", per_channel("contrast", adjust_contrast)),
        ("lowres", low_resolution),
        ("gamma_invert", per_channel("gamma_invert", gamma(invert=True))),
        ("gamma", per_channel("gamma", gamma(invert=False))),
    ]
    for name, step in steps:
        image = on_rows(image, rows, name, step)
    return image


def _bg_contrast(
    low_high: tuple[float, float], shape: tuple[int, ...], generator: torch.Generator, like: Tensor
) -> Tensor:
    """nnU-Net's ``BGContrast``: half the draws uniform in ``[low, 1)``, the others in
    ``[max(low, 1), high]``, so a range around 1 darkens as often as it brightens."""
    low, high = low_high
    below = torch.rand(shape, generator=generator, device=like.device) < 0.5
    u = torch.rand(shape, generator=generator, device=like.device)
    upper = max(low, 1.0)
    under = low + (min(high, 1.0) - low) * u
    over = upper + (high - upper) * u
    return torch.where(below & (low < 1.0), under, over)


def _per(values: Tensor, x: Tensor) -> Tensor:
    """``(n,)`` or ``(n, C)`` parameters shaped to broadcast over ``x`` ``(n, C, *S)``."""
    shape = (*values.shape, *([1] * (x.ndim - values.ndim)))
    return values.to(x.dtype).view(shape)


def _flips(image: Tensor, label: Tensor, rows: Rows) -> tuple[Tensor, Tensor]:
    """Mirror each spatial axis for the samples that drew it."""
    for axis in range(image.ndim - 2):
        name = f"flip{axis}"
        image = on_rows(image, rows, name, lambda x, _i, a=axis: x.flip(a + 2))
        label = on_rows(label, rows, name, lambda x, _i, a=axis: x.flip(a + 1))
    return image, label
