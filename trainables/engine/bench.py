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
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from trainables.data.labels import (
    INTERNAL_BINARY,
    INTERNAL_BRATS,
    LabelScheme,
    get_scheme,
    internal_scheme,
)
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


@dataclass(frozen=True)
class StepOptions:
    """Switches that change how the step runs, not what it computes; each is a candidate
    speed-up to measure (``benchmarks/bench_vs_nnunet.py``). Defaults: the plain step.

    Attributes:
        channels_last: model weights and input in ``channels_last`` / ``channels_last_3d``.
        compile_loss: ``torch.compile`` the loss as well (``cfg.train.compile`` is the model).
    """

    channels_last: bool = False
    compile_loss: bool = False


@dataclass
class TrainStep:
    """One training step of a trial on a fixed batch on the device, as ``TrialRunner._step``.

    Attributes:
        model: the eager module; ``step_model`` may be a compiled wrapper of it.
        loss_fn: the eager loss (deep-supervision wrapper); ``step_loss`` may be compiled.
        image: ``(B, C, *S)`` float32 input; overwrite it in place (``copy_``) to train on
            other data.
        label: ``(B, *S)`` int64 internal codes, likewise.
        grad_clip: max gradient norm, or None (``cfg.train.grad_clip``).
    """

    model: nn.Module
    step_model: nn.Module
    loss_fn: nn.Module
    step_loss: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    image: Tensor
    label: Tensor
    device: torch.device
    precision: str
    grad_clip: float | None

    def step(self) -> Tensor:
        """One optimizer step; returns the detached float32 scalar loss (still on the device)."""
        self.optimizer.zero_grad(set_to_none=True)
        with autocast_context(self.precision, self.device):
            output = self.step_model(self.image)
        loss = self.step_loss(output, self.label)  # losses reduce in float32 themselves
        self.scaler.scale(loss).backward()
        if self.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss.detach()


def configured_scheme(cfg: TrialConfig) -> LabelScheme:
    """The internal label scheme a trial will train on, from its config alone (no data read):
    the named scheme, else binary for CT inputs (MSD-style CT data) and BraTS regions otherwise."""
    if cfg.data.label_scheme != "auto":
        return internal_scheme(get_scheme(cfg.data.label_scheme))
    return INTERNAL_BINARY if cfg.data.modalities == ("ct",) else INTERNAL_BRATS


def build_step(cfg: TrialConfig, options: StepOptions | None = None) -> TrainStep:
    """Model, loss, optimizer and scaler of ``cfg`` with a random batch from ``cfg.seed``:
    ``(B, C, *S)`` normal input and ``(B, *S)`` uniform internal codes."""
    options = options or StepOptions()
    device = resolve_device(cfg.device)
    scheme = configured_scheme(cfg)
    model = build_model(cfg.model, len(cfg.data.modalities), output_channels(cfg.loss, scheme))
    model = model.to(device).train()
    image, label = _random_batch(cfg, scheme.num_classes, device)
    if options.channels_last:
        memory_format = torch.channels_last_3d if image.ndim == 5 else torch.channels_last
        model = model.to(memory_format=memory_format)
        image = image.contiguous(memory_format=memory_format)
    loss_fn = build_loss(cfg.loss, scheme).to(device)
    precision = effective_precision(cfg.train.precision, device)
    return TrainStep(
        model=model,
        step_model=torch.compile(model) if cfg.train.compile else model,
        loss_fn=loss_fn,
        step_loss=torch.compile(loss_fn) if options.compile_loss else loss_fn,
        optimizer=build_optimizer(cfg.optimizer, model.parameters()),
        scaler=torch.amp.GradScaler(device.type, enabled=precision == "fp16"),
        image=image,
        label=label,
        device=device,
        precision=precision,
        grad_clip=cfg.train.grad_clip,
    )


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
    setup = build_step(cfg)
    times = _time_steps(setup.step, steps, warmup, setup.device, progress)
    median = sorted(times)[len(times) // 2]
    batch, patch = cfg.train.batch_size, tuple(cfg.sampling.patch_size)
    return {
        "model": cfg.model.kind,
        "device": device_name(setup.device),
        "precision": setup.precision,
        "batch_size": batch,
        "patch_size": list(patch),
        "step_ms_median": round(median * 1e3, 3),
        "step_ms_mean": round(sum(times) / len(times) * 1e3, 3),
        "voxels_per_s": round(batch * math.prod(patch) / median),
        "peak_gpu_mem_gib": peak_memory_gib(setup.device),
        "parameters": sum(p.numel() for p in setup.model.parameters()),
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
    from trainables.engine.config import parse_trial_config
    from trainables.engine.runner import TrialRunner

    pure = benchmark_step(cfg, steps, warmup, progress)
    data = cfg.model_dump(mode="json")
    data["train"]["iterations_per_epoch"] = steps
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
        "pipeline_peak_gpu_mem_gib": peak_memory_gib(runner.device),
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
