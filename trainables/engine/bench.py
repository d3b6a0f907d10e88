"""Training-step benchmark: time, voxels/s and peak memory of one configured model.

The step is the one training runs (:func:`trainables.engine.step.build_train_step`), measured
on random input of the configured patch and batch size, so it isolates
the network, loss, optimizer and precision from data loading; compare it with an epoch's
``perf/voxels_per_s`` to see whether the data pipeline starves the device.
"""

from __future__ import annotations

import math
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from trainables.config.rules import known_scheme
from trainables.config.trial import TrialConfig
from trainables.data.labels import (
    INTERNAL_BINARY,
    INTERNAL_BRATS,
    LabelScheme,
)
from trainables.engine.precision import peak_memory_gib
from trainables.engine.step import StepOptions, TrainStep, build_train_step

__all__ = ["BenchStep", "StepOptions", "benchmark_pipeline", "benchmark_step", "build_bench_step"]


@dataclass
class BenchStep:
    """The trial's own training step (:class:`TrainStep`) on a fixed batch on the device.

    Attributes:
        train: the step ``TrialRunner`` trains with, built by the same builder.
        image: ``(B, C, *S)`` float32 input; overwrite it in place (``copy_``) to train on
            other data.
        label: ``(B, *S)`` int64 internal codes, likewise.
    """

    train: TrainStep
    image: Tensor
    label: Tensor

    def step(self) -> Tensor:
        """One optimizer step; returns the detached float32 scalar loss (still on the device)."""
        return self.train.step(self.image, self.label)


def configured_scheme(cfg: TrialConfig) -> LabelScheme:
    """The internal label scheme a trial will train on, from its config alone (no data read):
    the one the config fixes (:func:`~trainables.config.rules.known_scheme`: a named scheme,
    generated cases), else a guess for real data with ``label_scheme: auto``, binary for CT
    inputs (MSD-style CT data) and BraTS regions otherwise."""
    known = known_scheme(cfg.data)
    if known is not None:
        return known
    return INTERNAL_BINARY if cfg.data.modalities == ("ct",) else INTERNAL_BRATS


def build_bench_step(
    cfg: TrialConfig,
    options: StepOptions | None = None,
    progress: Callable[[str], None] | None = None,
) -> BenchStep:
    """The trial's training step with a random batch from ``cfg.seed``: ``(B, C, *S)`` normal
    input and ``(B, *S)`` uniform internal codes."""
    scheme = configured_scheme(cfg)
    train = build_train_step(cfg, scheme, len(cfg.data.modalities), options, progress)
    train.model.train()
    image, label = _random_batch(cfg, scheme.num_classes, train.device)
    if train.memory_format is not None:  # converted once here, so the timed step's is a no-op
        image = image.contiguous(memory_format=train.memory_format)
    return BenchStep(train, image, label)


def _random_batch(
    cfg: TrialConfig, num_classes: int, device: torch.device
) -> tuple[Tensor, Tensor]:
    batch, patch = cfg.train.batch_size, tuple(cfg.sampling.patch_size)
    generator = torch.Generator(device).manual_seed(cfg.seed)
    shape = (batch, len(cfg.data.modalities), *patch)
    image = torch.randn(shape, device=device, generator=generator)
    label = torch.randint(0, num_classes, (batch, *patch), device=device, generator=generator)
    return image, label


def benchmark_step(
    cfg: TrialConfig,
    steps: int = 20,
    warmup: int = 5,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Median and mean time of ``steps`` training steps after ``warmup`` untimed ones."""
    setup = build_bench_step(cfg, progress=progress)
    device = setup.train.device
    times = _time_steps(setup.step, steps, warmup, device, progress)
    median = sorted(times)[len(times) // 2]
    batch, patch = cfg.train.batch_size, tuple(cfg.sampling.patch_size)
    return {
        "model": cfg.model.kind,
        "device": device_name(device),
        "precision": setup.train.precision,
        "batch_size": batch,
        "patch_size": list(patch),
        "step_ms_median": round(median * 1e3, 3),
        "step_ms_mean": round(sum(times) / len(times) * 1e3, 3),
        "voxels_per_s": round(batch * math.prod(patch) / median),
        "peak_gpu_mem_gib": peak_memory_gib(device, setup.train.hidden_memory_bytes()),
        "parameters": sum(p.numel() for p in setup.train.model.parameters()),
        "torch": torch.__version__,
    }


def benchmark_pipeline(
    cfg: TrialConfig,
    steps: int = 20,
    warmup: int = 5,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """End-to-end training iterations (cache -> patches -> device -> augmentation -> step)
    against the pure step on random input, measured in one run.

    The ratio ``iteration_ms / step_ms`` is the DESIGN target "data pipeline within 10% of the
    pure step" (<= 1.1 with at most 4 CPU workers per GPU); ``data_wait_frac`` is the share of
    the iteration spent waiting for a batch.
    """
    from trainables.config.dotted import apply_overrides
    from trainables.config.trial import parse_trial_config
    from trainables.engine.runner import TrialRunner

    pure = benchmark_step(cfg, steps, warmup, progress)
    data = apply_overrides(cfg.model_dump(mode="json"), {"train.iterations_per_epoch": steps})
    runner = TrialRunner(parse_trial_config(data), progress=progress)
    runner.train_epoch()  # warm-up: workers start, caches fill, cudnn picks kernels
    if runner.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(runner.device)
    timed = runner.train_epoch()
    iteration_ms = timed["perf/train_s"] / steps * 1e3
    return {
        **pure,
        "num_workers": cfg.train.num_workers,
        "gpu_augmentation": cfg.train.gpu_augmentation,
        "iteration_ms": round(iteration_ms, 3),
        "iteration_over_step": round(iteration_ms / pure["step_ms_median"], 3),
        "data_wait_frac": round(timed["perf/data_wait_s"] / timed["perf/train_s"], 4),
        "pipeline_peak_gpu_mem_gib": peak_memory_gib(
            runner.device, runner.trainer.hidden_memory_bytes()
        ),
    }


def _time_steps(
    step: Callable[[], object],
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


def device_name(device: torch.device) -> str:
    """GPU name, or the CPU and its thread count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
