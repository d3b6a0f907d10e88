"""Timing two training steps side by side: FLOPs, interleaved timed blocks, memory.

Used by ``benchmarks/bench_vs_nnunet.py``: each contender is a :class:`Side`; after warm-up,
blocks of steps alternate A, B, A, B (cancelling clock and thermal drift), each block ends with
a device synchronisation, and ms/step is the median over blocks.
"""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.nnunet_reference import NNUNetStep
from trainables.engine.bench import BenchStep
from trainables.engine.precision import autocast_context


def count_flops(network: nn.Module, image: Tensor, autocast: Callable[[], Any]) -> int:
    """FLOPs of one eager forward + backward (convolutions and matmuls), gradients dropped."""
    with FlopCounterMode(display=False) as counter:
        with autocast():
            outputs = network(image)
        outputs = outputs if isinstance(outputs, list | tuple) else [outputs]
        sum(o.float().mean() for o in outputs).backward()
    network.zero_grad(set_to_none=True)
    return counter.get_total_flops()


@dataclass
class Side:
    """One contender: its step, its tensors, its cudnn.benchmark setting and measurements."""

    name: str
    step: Callable[[], Any]
    network: nn.Module
    optimizer: torch.optim.Optimizer
    batch: list[Tensor]
    cudnn: bool
    flops: int = 0
    block_ms: list[float] = field(default_factory=list)
    transient_bytes: int = 0
    hidden_bytes: Callable[[], int] = lambda: 0  # a CUDA graph's activation pool (ours only)

    @property
    def device(self) -> torch.device:
        return self.batch[0].device

    def run(self, steps: int, timed: bool) -> None:
        """``steps`` steps, then a sync; record ms/step and peak memory when ``timed``."""
        cuda = self.device.type == "cuda"
        torch.backends.cudnn.benchmark = self.cudnn  # a global: set for every block
        if cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        base = torch.cuda.memory_allocated(self.device) if cuda else 0
        start = time.perf_counter()
        for _ in range(steps):
            self.step()
        if cuda:
            torch.cuda.synchronize(self.device)
        elapsed = time.perf_counter() - start
        if timed:
            self.block_ms.append(elapsed / steps * 1e3)
            if cuda:
                peak = torch.cuda.max_memory_allocated(self.device) - base
                self.transient_bytes = max(self.transient_bytes, peak)

    def resident_bytes(self) -> int:
        """Own weights, gradients, optimizer state and batch (distinct storages)."""
        params = list(self.network.parameters())
        found = [*params, *(p.grad for p in params if p.grad is not None), *self.batch]
        for state in self.optimizer.state.values():
            found += [t for t in state.values() if isinstance(t, Tensor)]
        storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in found}
        return sum(storages.values())

    def summary(self, voxels: int) -> dict[str, Any]:
        """Median/mean ms per step, voxels/s, TFLOP/s and peak memory."""
        median = statistics.median(self.block_ms)
        peak = (self.resident_bytes() + self.transient_bytes + self.hidden_bytes()) / 2**30
        return {
            "step_ms_median": round(median, 3),
            "step_ms_mean": round(statistics.fmean(self.block_ms), 3),
            "block_ms": [round(ms, 3) for ms in self.block_ms],
            "voxels_per_s": round(voxels / (median / 1e3)),
            "tflop_per_step": round(self.flops / 1e12, 4),
            "tflops_per_s": round(self.flops / (median / 1e3) / 1e12, 2),
            "peak_gpu_mem_gib": round(peak, 3) if self.device.type == "cuda" else None,
            "parameters": sum(p.numel() for p in self.network.parameters()),
        }


def reference_side(reference: NNUNetStep) -> Side:
    """nnU-Net's side; cudnn.benchmark on, as its ``run_training`` sets it."""
    flops = count_flops(reference.network, reference.data, reference.autocast)
    batch = [reference.data, *reference.target]
    return Side(
        "nnunet", reference.step, reference.network, reference.optimizer, batch, True, flops
    )


def our_side(ours: BenchStep, cudnn: bool) -> Side:
    """Our side; cudnn.benchmark on when asked or when the engine turns it on (CUDA), so the
    timed step runs as training does."""
    train = ours.train
    autocast = functools.partial(autocast_context, train.precision, train.device)
    flops = count_flops(train.model, ours.image, autocast)
    batch = [ours.image, ours.label]
    cudnn = cudnn or train.device.type == "cuda"
    side = Side("ours", ours.step, train.model, train.optimizer, batch, cudnn, flops)
    side.hidden_bytes = train.hidden_memory_bytes
    return side


def interleave(sides: list[Side], steps: int, warmup: int, block: int) -> None:
    """Warm each side up, then alternate timed blocks A, B, A, B until each has ``steps``."""
    for side in sides:
        side.run(warmup, timed=False)
    for done in range(0, steps, block):
        for side in sides:
            side.run(min(block, steps - done), timed=True)
