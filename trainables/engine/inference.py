"""Sliding-window inference with Gaussian weighting (nnU-Net style), for 2-D and 3-D models.

Windows overlap by a fraction of the patch; each window's logits are weighted by a Gaussian
centred on the window (sigma = patch/8), because predictions near a patch border see less
context and are less reliable. Logits, not probabilities, are accumulated, as nnU-Net v2 does,
so the validation loss can be computed on the aggregate.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def gaussian_importance(patch: Sequence[int], device: torch.device) -> Tensor:
    """(*patch) float32 weights, max 1, sigma = patch/8 per axis, no zeros (min clipped)."""
    grids = []
    for size in patch:
        coords = torch.arange(size, device=device, dtype=torch.float32) - (size - 1) / 2
        grids.append(torch.exp(-0.5 * (coords / (size / 8)) ** 2))
    weight = grids[0]
    for g in grids[1:]:
        weight = weight[..., None] * g
    weight = weight / weight.max()
    return weight.clamp_min(weight[weight > 0].min().item())


def window_starts(size: int, patch: int, overlap: float) -> list[int]:
    """Start offsets along one axis so windows of ``patch`` cover ``size`` with >= ``overlap``."""
    if size <= patch:
        return [0]
    step = max(1, int(patch * (1 - overlap)))
    count = math.ceil((size - patch) / step) + 1
    actual = (size - patch) / (count - 1)
    return [round(i * actual) for i in range(count)]


@torch.no_grad()
def sliding_window_logits(
    model: nn.Module,
    image: Tensor,
    patch: Sequence[int],
    overlap: float = 0.5,
    gaussian: bool = True,
    batch_size: int = 2,
    autocast: AbstractContextManager | None = None,
) -> Tensor:
    """Predict a whole volume (or slice stack) with overlapping windows.

    Args:
        model: network in eval mode; maps (B, C, *patch) to (B, K, *patch) logits.
        image: (C, *S) input on the model's device. For 2-D models pass a 3-D volume and a 2-D
            ``patch``: every slice along the last axis is predicted (slices are batched).
        patch: window size, 2 or 3 ints.
        overlap: fraction of the window shared with its neighbour.
        gaussian: Gaussian (True) or uniform window weights.
        batch_size: windows per forward pass.
        autocast: context (e.g. ``torch.autocast``) to run the forward passes in.

    Returns:
        (K, *S) float32 logits.
    """
    if len(patch) == image.ndim - 1:
        return _sliding_window_nd(model, image, patch, overlap, gaussian, batch_size, autocast)
    if len(patch) == 2 and image.ndim == 4:  # 2-D model on a volume: slice along the last axis
        slices = image.permute(3, 0, 1, 2)  # (Z, C, X, Y)
        outs = [
            _sliding_window_nd(model, s, patch, overlap, gaussian, batch_size, autocast)
            for s in slices
        ]
        return torch.stack(outs, dim=-1)
    raise ValueError(f"patch {list(patch)} does not fit an image of shape {list(image.shape)}")


def _sliding_window_nd(
    model: nn.Module,
    image: Tensor,
    patch: Sequence[int],
    overlap: float,
    gaussian: bool,
    batch_size: int,
    autocast: AbstractContextManager | None,
) -> Tensor:
    spatial = image.shape[1:]
    padded, crop = _pad_to(image, patch)
    weight = (
        gaussian_importance(patch, image.device)
        if gaussian
        else torch.ones(tuple(patch), device=image.device)
    )
    starts = [window_starts(s, p, overlap) for s, p in zip(padded.shape[1:], patch, strict=True)]
    windows = list(itertools.product(*starts))
    logits: Tensor | None = None
    norm = torch.zeros(padded.shape[1:], device=image.device)
    for i in range(0, len(windows), batch_size):
        chunk = windows[i : i + batch_size]
        slicers = [tuple(slice(s, s + p) for s, p in zip(w, patch, strict=True)) for w in chunk]
        batch = torch.stack([padded[(slice(None), *sl)] for sl in slicers])
        with autocast or nullcontext():
            out = model(batch)
        out = out.float()
        if logits is None:
            logits = torch.zeros((out.shape[1], *padded.shape[1:]), device=image.device)
        for sl, o in zip(slicers, out, strict=True):
            logits[(slice(None), *sl)] += o * weight
            norm[sl] += weight
    assert logits is not None
    logits /= norm
    return logits[(slice(None), *crop)][(slice(None), *(slice(0, s) for s in spatial))]


def _pad_to(image: Tensor, patch: Sequence[int]) -> tuple[Tensor, tuple[slice, ...]]:
    """Pad (C, *S) symmetrically to at least ``patch``; return it and the crop that undoes it."""
    pads: list[int] = []
    crop: list[slice] = []
    for size, p in zip(image.shape[1:], patch, strict=True):
        total = max(0, p - size)
        before = total // 2
        pads.append((before, total - before))
        crop.append(slice(before, before + size))
    flat = [v for pair in reversed(pads) for v in pair]  # F.pad wants last axis first
    return (F.pad(image, flat) if any(flat) else image), tuple(crop)
