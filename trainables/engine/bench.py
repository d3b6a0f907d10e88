"""Training-step benchmark: time, voxels/s and peak memory of one configured model.

The step is measured on random input of the configured patch and batch size, so it isolates
the network, loss, optimizer and precision from data loading; compare it with an epoch's
``perf/voxels_per_s`` to see whether the data pipeline starves the device.
"""

from __future__ import annotations

import math
import platform
import time
from collections.abc import Callable
from typing import Any

import torch

from trainables.data.labels import INTERNAL_BRATS
from trainables.engine.config import TrialConfig
from trainables.engine.precision import (
    autocast_context,
    effective_precision,
    peak_memory_gib,
    resolve_device,
)
from trainables.losses import build_loss, output_channels
from trainables.models import build_model
from trainables.optim import build_optimizer


def benchmark_step(
    cfg: TrialConfig,
    steps: int = 20,
    warmup: int = 5,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Median and mean time of ``steps`` training steps after ``warmup`` untimed ones."""
    device = resolve_device(cfg.device)
    precision = effective_precision(cfg.train.precision, device)
    scheme = INTERNAL_BRATS
    model = build_model(cfg.model, len(cfg.data.modalities), output_channels(cfg.loss, scheme))
    model = model.to(device).train()
    step_model = torch.compile(model) if cfg.train.compile else model
    loss_fn = build_loss(cfg.loss, scheme).to(device)
    optimizer = build_optimizer(cfg.optimizer, model.parameters())
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    batch, patch = cfg.train.batch_size, tuple(cfg.sampling.patch_size)
    generator = torch.Generator(device).manual_seed(cfg.seed)
    image = torch.randn(
        (batch, len(cfg.data.modalities), *patch), device=device, generator=generator
    )
    label = torch.randint(
        0, scheme.num_classes, (batch, *patch), device=device, generator=generator
    )

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast_context(precision, device):
            out = step_model(image)
        scaler.scale(loss_fn(out, label)).backward()
        scaler.step(optimizer)
        scaler.update()

    times = _time_steps(step, steps, warmup, device, progress)
    median = sorted(times)[len(times) // 2]
    return {
        "model": cfg.model.kind,
        "device": _device_name(device),
        "precision": precision,
        "batch_size": batch,
        "patch_size": list(patch),
        "step_ms_median": round(median * 1e3, 3),
        "step_ms_mean": round(sum(times) / len(times) * 1e3, 3),
        "voxels_per_s": round(batch * math.prod(patch) / median),
        "peak_gpu_mem_gib": peak_memory_gib(device),
        "parameters": sum(p.numel() for p in model.parameters()),
        "torch": torch.__version__,
    }


def _time_steps(
    step: Callable[[], None],
    steps: int,
    warmup: int,
    device: torch.device,
    progress: Callable[[str], None] | None,
) -> list[float]:
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda *_: None)
    for _ in range(warmup):
        step()
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for i in range(steps):
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
        if progress and (i + 1) % max(1, steps // 4) == 0:
            progress(f"bench step {i + 1}/{steps}: {times[-1] * 1e3:.1f} ms")
    return times


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
