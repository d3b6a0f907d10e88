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
            ``patch``: every slice along the last axis is predicted, all slices of one window
            position batched together.
        patch: window size, 2 or 3 ints.
        overlap: fraction of the window shared with its neighbour.
        gaussian: Gaussian (True) or uniform window weights.
        batch_size: windows (or slices) per forward pass.
        autocast: context (e.g. ``torch.autocast``) to run the forward passes in.

    Returns:
        (K, *S) float32 logits.
    """
    run = _WindowRunner(model, batch_size, autocast)
    if len(patch) == image.ndim - 1:
        return _sliding_window(run, image[None], patch, overlap, gaussian)[0]
    if len(patch) == 2 and image.ndim == 4:  # 2-D model on a volume: slices become the batch
        slices = image.permute(3, 0, 1, 2)  # (Z, C, X, Y)
        return _sliding_window(run, slices, patch, overlap, gaussian).permute(1, 2, 3, 0)
    raise ValueError(f"patch {list(patch)} does not fit an image of shape {list(image.shape)}")


class _WindowRunner:
    """Runs the model over many windows in chunks of ``batch_size``; returns float32 logits."""

    def __init__(self, model: nn.Module, batch_size: int, autocast: AbstractContextManager | None):
        self.model, self.batch_size, self.autocast = model, max(1, batch_size), autocast

    def __call__(self, windows: Tensor) -> Tensor:
        outs = []
        for chunk in windows.split(self.batch_size):
            with self.autocast or nullcontext():
                outs.append(self.model(chunk).float())
        return torch.cat(outs)


def _sliding_window(
    run: _WindowRunner, images: Tensor, patch: Sequence[int], overlap: float, gaussian: bool
) -> Tensor:
    """(N, C, *S) -> (N, K, *S) logits; the N images share every window position."""
    spatial = images.shape[2:]
    padded, crop = _pad_to(images, patch)
    device = images.device
    weight = (
        gaussian_importance(patch, device) if gaussian else torch.ones(tuple(patch), device=device)
    )
    starts = [window_starts(s, p, overlap) for s, p in zip(padded.shape[2:], patch, strict=True)]
    slicers = [
        tuple(slice(s, s + p) for s, p in zip(w, patch, strict=True))
        for w in itertools.product(*starts)
    ]
    per_pass = max(1, run.batch_size // len(images))  # window positions per forward pass
    logits: Tensor | None = None
    norm = torch.zeros(padded.shape[2:], device=device)
    for i in range(0, len(slicers), per_pass):
        chunk = slicers[i : i + per_pass]
        out = run(torch.cat([padded[(slice(None), slice(None), *sl)] for sl in chunk]))
        if logits is None:
            logits = torch.zeros((len(images), out.shape[1], *padded.shape[2:]), device=device)
        for sl, o in zip(chunk, out.split(len(images)), strict=True):
            logits[(slice(None), slice(None), *sl)] += o * weight
            norm[sl] += weight
    assert logits is not None
    logits /= norm
    cropped = logits[(slice(None), slice(None), *crop)]
    return cropped[(slice(None), slice(None), *(slice(0, s) for s in spatial))]


def _pad_to(image: Tensor, patch: Sequence[int]) -> tuple[Tensor, tuple[slice, ...]]:
    """Pad (N, C, *S) symmetrically to at least ``patch``; return it and the crop undoing it."""
    pads: list[tuple[int, int]] = []
    crop: list[slice] = []
    for size, p in zip(image.shape[2:], patch, strict=True):
        total = max(0, p - size)
        before = total // 2
        pads.append((before, total - before))
        crop.append(slice(before, before + size))
    flat = [v for pair in reversed(pads) for v in pair]  # F.pad wants last axis first
    return (F.pad(image, flat) if any(flat) else image), tuple(crop)
