"""Inference benchmark: cases per minute of ``ablate predict``'s sliding window.

One synthetic, already-preprocessed case (default 240 x 240 x 155, a BraTS volume before the
crop, so an upper bound on the work per case) is predicted with the trial's model (random
weights: speed does not depend on them), patch, overlap, Gaussian weighting, windows per forward
pass and precision, on the trial's device, including the decoding to labels. Decoding NIfTI and
preprocessing are not timed (``ablate data prepare`` measures those).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from trainables.config.trial import TrialConfig
from trainables.engine.bench import configured_scheme
from trainables.engine.inference import window_starts
from trainables.engine.precision import effective_precision, peak_memory_gib, resolve_device
from trainables.engine.predict import Member, Predictor
from trainables.engine.tta import flip_axes
from trainables.losses import output_channels
from trainables.models import build_model

BRATS_SHAPE = (240, 240, 155)


def benchmark_inference(
    cfg: TrialConfig,
    shape: Sequence[int] = BRATS_SHAPE,
    cases: int = 1,
    tta: bool = False,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Time ``cases`` predictions of one (C, *shape) volume after one untimed warm-up window.

    Returns:
        device, precision, shape, windows per case, windows per forward pass,
        ``seconds_per_case`` (s), ``cases_per_minute`` and ``peak_gpu_mem_gib`` (None on CPU).
    """
    predictor = _random_predictor(cfg)
    device = predictor.device
    image = np.random.default_rng(0).standard_normal((len(cfg.data.modalities), *shape))
    image = image.astype(np.float32)
    patch = cfg.sampling.patch_size
    predictor.predict(image[(slice(None), *(slice(0, p) for p in patch))])  # warm-up
    _sync(device)
    times = []
    for n in range(cases):
        tic = time.perf_counter()
        predictor.predict(image, tta)
        _sync(device)
        times.append(time.perf_counter() - tic)
        if progress:
            progress(f"inference {n + 1}/{cases}: {times[-1]:.1f} s")
    seconds = float(np.median(times))
    mirrors = len(flip_axes(cfg.model.input_dims)) if tta else 1
    return {
        "model": cfg.model.kind,
        "device": str(device),
        "precision": effective_precision(cfg.train.precision, device),
        "shape": list(shape),
        "patch": list(patch),
        "windows_per_case": _windows(shape, patch, cfg.validation.overlap) * mirrors,
        "windows_per_pass": cfg.validation.inference_batch(cfg.model.input_dims),
        "tta": tta,
        "seconds_per_case": round(seconds, 3),
        "cases_per_minute": round(60.0 / seconds, 3),
        "peak_gpu_mem_gib": peak_memory_gib(device),
    }


def _random_predictor(cfg: TrialConfig) -> Predictor:
    device = resolve_device(cfg.device)
    scheme = configured_scheme(cfg)
    torch.manual_seed(cfg.seed)
    outputs = output_channels(cfg.loss, scheme)
    model = build_model(cfg.model, len(cfg.data.modalities), outputs).to(device).eval()
    return Predictor([Member(cfg, model, "random weights")], scheme, device)


def _windows(shape: Sequence[int], patch: Sequence[int], overlap: float) -> int:
    """Window positions over ``shape`` (a 2-D patch: positions per slice, times the slices)."""
    counts = [len(window_starts(s, p, overlap)) for s, p in zip(shape, patch, strict=False)]
    slices = shape[-1] if len(patch) == 2 else 1
    return math.prod(counts) * slices


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
