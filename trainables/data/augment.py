"""Batched data augmentation in pure torch, run on the training device (GPU when there is one).

nnU-Net's CPU augmentation costs ~0.37 s per 128^3 sample per core, which would starve a GPU,
so every transform here is a batched tensor op on whatever device the batch lives on:

- spatial: one rotation (about all three axes in 3-D, in-plane in 2-D) times an isotropic scale
  per sample, resampled with a single ``affine_grid`` + ``grid_sample`` for the samples that drew
  it (bilinear image; the label as nnU-Net resamples it: each class's one-hot mask bilinear,
  the highest wins; zero padding, ``align_corners=False``); mirroring per axis.
  A strongly anisotropic 3-D patch (thick slices) is rotated and scaled within its slices only,
  as nnU-Net's "dummy 2-D" augmentation does (:func:`spatial_plan`), so slices several mm apart
  are never interpolated into each other.
- intensity, per sample (parameters per channel where nnU-Net varies them), in nnU-Net's
  order: Gaussian noise, Gaussian blur (separable 1-D kernels, a sigma per axis), multiplicative
  brightness, contrast around the mean (clipped to the original range), simulated low
  resolution, gamma of the inverted intensity, gamma; both gammas keep the mean and std.

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
from torch import Tensor

from trainables.data.augment_config import ANISOTROPY_RATIO, AugmentConfig, spatial_plan
from trainables.data.augment_ops import (
    adjust_contrast,
    adjust_gamma,
    gaussian_blur,
    rotation_matrices,
    simulate_low_resolution,
    spatial_transform,
    upload,
)
from trainables.data.labels import INTERNAL_BRATS
from trainables.errors import InputError

__all__ = [
    "ANISOTROPY_RATIO",
    "LABEL_DTYPES",
    "AugmentConfig",
    "adjust_gamma",
    "augment_batch",
    "gaussian_blur",
    "rotation_matrices",
    "simulate_low_resolution",
    "spatial_plan",
    "spatial_transform",
]


# Decision columns of the per-batch random draw; flips follow, one column per spatial axis.
LABEL_DTYPES = (torch.int64, torch.uint8)  # uint8: ``train.speed.uint8_labels``; kept as given
LABEL_CLASSES = INTERNAL_BRATS.num_classes  # internal codes 0..3 (binary labels use 0..1)
Step = Callable[[Tensor, Tensor], Tensor]  # (rows of the batch, their indices) -> new rows
_TRANSFORMS = (
    "rotation",
    "scale",
    "noise",
    "blur",
    "brightness",
    "contrast",
    "lowres",
    "gamma_invert",
    "gamma",
)


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
            transform; one ``(B, 9 + len(S))`` uniform draw per call) and of the low-resolution
            channels and zooms (one ``(B, C, 2)`` draw: they set tensor shapes). None draws
            them from ``generator``, which must then be a CPU generator (the CPU workers' path).

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
    lowres = _lowres_zooms(cfg, rows, image.shape[:2], decider)
    degrees, slice_axis = spatial_plan(cfg, tuple(image.shape[2:]))
    image, label = _spatial(image, label, cfg, rows, generator, (degrees, slice_axis))
    image = _intensity(image, cfg, rows, generator, (lowres, slice_axis))
    return _flips(image, label, rows)


def _lowres_zooms(
    cfg: AugmentConfig, rows: _Rows, batch_channels: torch.Size, host: torch.Generator
) -> list[list[float | None]]:
    """Per sample that drew ``lowres``, per channel: the zoom, or None (channel untouched).

    Drawn on the host, always (B, C, 2) numbers so the stream does not depend on the draws.
    """
    draws = torch.rand(*batch_channels, 2, generator=host, dtype=torch.float64).tolist()
    low, high = cfg.lowres_zoom
    return [
        [low + (high - low) * z if u < cfg.lowres_channel_prob else None for u, z in draws[b]]
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
    hits = draws < torch.tensor(probs)  # (B, 9 + ndim) bool, on the host
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
    plan: tuple[float, int | None],
) -> tuple[Tensor, Tensor]:
    """Rotation and scale in one resampling of the samples that drew either; in dummy 2-D, a
    rotation about the slice axis only and a scale of the other two axes only. ``plan``: the
    rotation bound and slice axis (:func:`spatial_plan`)."""
    batch, ndim = image.shape[0], image.ndim - 2
    degrees, slice_axis = plan
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
        image.index_select(0, index),
        label.index_select(0, index),
        matrix.index_select(0, index),
        label_classes=LABEL_CLASSES,
    )
    return image.index_copy(0, index, warped), label.index_copy(0, index, lab)


def _intensity(
    image: Tensor,
    cfg: AugmentConfig,
    rows: _Rows,
    generator: torch.Generator,
    lowres: tuple[list[list[float | None]], int | None],
) -> Tensor:
    """Noise, blur, brightness, contrast, low resolution, inverted gamma and gamma, in
    nnU-Net's order. ``lowres``: the host-drawn zooms and the axis kept (dummy 2-D)."""
    b, c, ndim = image.shape[0], image.shape[1], image.ndim - 2
    std = _uniform(cfg.noise_std, (b,), generator, image)
    sigma = _uniform(cfg.blur_sigma, (b, c, ndim), generator, image)
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
        image = _on_rows(image, rows, name, step)
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


def _flips(image: Tensor, label: Tensor, rows: _Rows) -> tuple[Tensor, Tensor]:
    """Mirror each spatial axis for the samples that drew it."""
    for axis in range(image.ndim - 2):
        name = f"flip{axis}"
        image = _on_rows(image, rows, name, lambda x, _i, a=axis: x.flip(a + 2))
        label = _on_rows(label, rows, name, lambda x, _i, a=axis: x.flip(a + 1))
    return image, label
