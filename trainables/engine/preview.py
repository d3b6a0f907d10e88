"""The preview image logged per trial: a FLAIR slice with WT/TC/ET outlines of the reference
(left) and the prediction (right). Pure numpy/torch, with a minimal PNG encoder, so workers
need no imaging library."""

from __future__ import annotations

import struct
import zlib
from typing import TYPE_CHECKING

import numpy as np
import torch

from trainables.data.labels import regions_from_labels
from trainables.data.sampling import validation_view
from trainables.engine.precision import autocast_context
from trainables.engine.validation import predict_case, validation_case_ids
from trainables.losses import logits_to_labels

if TYPE_CHECKING:
    from trainables.engine.runner import TrialRunner

OUTLINE_COLORS = ((0, 255, 0), (255, 255, 0), (255, 0, 0))  # WT green, TC yellow, ET red


def preview_png(runner: TrialRunner, size: int = 256) -> bytes:
    """PNG of the first validation case: reference (left) and prediction (right) outlines.

    The axial slice (last axis) with the largest reference region 0 (WT) is drawn from FLAIR
    (the first channel when FLAIR is not an input), with one outline colour per region.
    """
    cfg, data = runner.cfg, runner.data
    image, label = _preview_case(runner)
    logits = _predict(runner, image)
    pred = logits_to_labels(logits[None], cfg.loss, data.scheme)[0].cpu().numpy()
    ref_regions = regions_from_labels(np.asarray(label), data.scheme)
    pred_regions = regions_from_labels(pred, data.scheme)
    z = int(ref_regions[0].reshape(-1, ref_regions.shape[-1]).sum(axis=0).argmax())
    channel = data.modalities.index("flair") if "flair" in data.modalities else 0
    flair = np.asarray(image[channel, ..., z], dtype=np.float32)
    return render_outlines(flair, ref_regions[..., z], pred_regions[..., z], size)


def _preview_case(runner: TrialRunner) -> tuple[np.ndarray, np.ndarray]:
    """(image (C, X, Y, Z), label (X, Y, Z)) of validation case 0, cropped as validation does."""
    cfg, data = runner.cfg, runner.data
    case = data.dataset.load(validation_case_ids(cfg, data)[0], modalities=data.modalities)
    assert case.label is not None
    return validation_view(case.image, case.label, cfg.sampling)


def _predict(runner: TrialRunner, image: np.ndarray) -> torch.Tensor:
    """(K, X, Y, Z) logits by the engine's sliding window, in eval mode, without gradients."""
    runner.model.eval()
    try:
        with torch.no_grad():
            autocast = autocast_context(runner.precision, runner.device)
            return predict_case(runner.model, runner.cfg, image, runner.device, autocast)
    finally:
        runner.model.train()


def render_outlines(image: np.ndarray, ref: np.ndarray, pred: np.ndarray, size: int = 256) -> bytes:
    """PNG: two panels of ``image`` (X, Y) with the outlines of ``ref`` / ``pred`` (R, X, Y)."""
    gray = _to_uint8(image)
    scale = max(1, size // max(gray.shape))
    panels = [_panel(gray, masks, scale) for masks in (ref, pred)]
    gap = np.zeros((panels[0].shape[0], 4, 3), np.uint8)
    return encode_png(np.concatenate([panels[0], gap, panels[1]], axis=1))


def _panel(gray: np.ndarray, masks: np.ndarray, scale: int) -> np.ndarray:
    rgb = _upscale(np.repeat(_display(gray)[..., None], 3, axis=2), scale)
    for mask, color in zip(masks, OUTLINE_COLORS, strict=False):
        rgb[_outline(_upscale(_display(mask.astype(bool)), scale))] = color
    return rgb


def _display(array: np.ndarray) -> np.ndarray:
    """(X, Y) voxel order -> image rows (Y, top = high Y) and columns (X)."""
    return np.flipud(array.T)


def _upscale(array: np.ndarray, scale: int) -> np.ndarray:
    return array.repeat(scale, axis=0).repeat(scale, axis=1)


def _outline(mask: np.ndarray) -> np.ndarray:
    """Pixels of ``mask`` with a 4-neighbour outside it: a one-pixel contour."""
    padded = np.pad(mask, 1, constant_values=False)
    inner = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~inner


def _to_uint8(image: np.ndarray) -> np.ndarray:
    """Window to the 1st-99th percentile of the non-zero voxels (the brain), as 0..255."""
    values = image[image != 0]
    low, high = np.percentile(values, [1, 99]) if values.size else (0.0, 1.0)
    scaled = (image - low) / max(float(high - low), 1e-6)
    return (np.clip(scaled, 0, 1) * 255).astype(np.uint8)


def encode_png(rgb: np.ndarray) -> bytes:
    """(H, W, 3) uint8 -> PNG bytes: 8-bit RGB, filter 0 on every row, zlib-compressed."""
    height, width, _ = rgb.shape
    rows = np.concatenate([np.zeros((height, 1), np.uint8), rgb.reshape(height, width * 3)], axis=1)

    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = zlib.compress(np.ascontiguousarray(rows).tobytes(), 6)
    chunks = chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + chunks
