"""Inference benchmark: cases per minute of ``ablate predict``'s sliding window.

One synthetic, already-preprocessed case (default 240 x 240 x 155, a BraTS volume before the
crop, so an upper bound on the work per case) is predicted with the trial's model (random
weights: speed does not depend on them), patch, overlap, Gaussian weighting, windows per forward
pass and precision, on the trial's device, including the decoding to labels and the trial's
post-processing (``largest_component: auto``, which a trained run decides, is timed as every
step it may choose). Decoding NIfTI and preprocessing are not timed (``ablate data prepare``
measures those).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from trainables.config.postprocess import PostprocessConfig
from trainables.config.trial import TrialConfig
from trainables.data.labels import LabelScheme
from trainables.engine.bench import configured_scheme
from trainables.engine.inference import window_starts
from trainables.engine.postprocess import with_postprocess
from trainables.engine.precision import effective_precision, peak_memory_gib, resolve_device
from trainables.engine.predict import Member, Predictor, postprocess_steps
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
    steps = postprocess_steps(predictor.postprocess) or "none"
    auto = "" if cfg.validation.test_postprocess.decided else " (auto: every step it may choose)"
    return {
        "model": cfg.model.kind,
        "device": str(device),
        "precision": effective_precision(cfg.train.precision, device),
        "shape": list(shape),
        "patch": list(patch),
        "windows_per_case": _windows(shape, patch, cfg.validation.overlap) * mirrors,
        "windows_per_pass": cfg.validation.inference_batch(cfg.model.input_dims),
        "tta": tta,
        "postprocess": steps + auto,
        "seconds_per_case": round(seconds, 3),
        "cases_per_minute": round(60.0 / seconds, 3),
        "peak_gpu_mem_gib": peak_memory_gib(device),
    }


def _random_predictor(cfg: TrialConfig) -> Predictor:
    device = resolve_device(cfg.device)
    scheme = configured_scheme(cfg)
    cfg = with_postprocess(cfg, timed_postprocess(cfg.validation.test_postprocess, scheme))
    torch.manual_seed(cfg.seed)
    outputs = output_channels(cfg.loss, scheme)
    model = build_model(cfg.model, len(cfg.data.modalities), outputs).to(device).eval()
    return Predictor([Member(cfg, model, "random weights")], scheme, device)


def timed_postprocess(given: PostprocessConfig, scheme: LabelScheme) -> PostprocessConfig:
    """The post-processing to time: ``given``, or for ``largest_component: auto`` (which only
    a trained run decides) every step it could choose, its most expensive outcome."""
    if given.decided:
        return given
    regions = scheme.region_names if len(scheme.regions) > 1 else ()
    return given.model_copy(
        update={"largest_component": True, "largest_component_regions": regions}
    )


def _windows(shape: Sequence[int], patch: Sequence[int], overlap: float) -> int:
    """Window positions over ``shape`` (a 2-D patch: positions per slice, times the slices)."""
    counts = [len(window_starts(s, p, overlap)) for s, p in zip(shape, patch, strict=False)]
    slices = shape[-1] if len(patch) == 2 else 1
    return math.prod(counts) * slices


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
