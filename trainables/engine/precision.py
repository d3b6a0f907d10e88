"""Device and numeric-precision choices, kept in one place so every path agrees."""

from __future__ import annotations

import statistics
import time
from contextlib import AbstractContextManager, nullcontext
from types import TracebackType

import torch

from trainables.errors import InputError


def resolve_device(requested: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; also ``cpu``, ``cuda``, ``cuda:N``. Anything
    else, CUDA without a GPU, or a GPU index torch does not see is an input error."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    kind, _, index = requested.partition(":")
    if kind not in ("cpu", "cuda") or (index and (kind == "cpu" or not index.isdigit())):
        message = f"unknown device {requested!r}: use auto, cpu, cuda or cuda:N (N a GPU index)"
        raise InputError(message, where="device")
    if kind == "cuda" and not torch.cuda.is_available():
        raise InputError("CUDA was requested but no GPU is visible to torch", where="device")
    if index and int(index) >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        raise InputError(f"{requested} was requested but torch sees {count} GPU(s)", "device")
    return torch.device(requested)


def effective_precision(requested: str, device: torch.device) -> str:
    """The precision actually used: fp16 on CPU runs as fp32 (CPU fp16 autocast is slow)."""
    if device.type == "cpu" and requested == "fp16":
        return "fp32"
    return requested


def autocast_context(
    precision: str, device: torch.device, cache_enabled: bool = True
) -> AbstractContextManager:
    """``torch.autocast`` for fp16/bf16, a no-op for fp32. ``cache_enabled=False`` for CUDA-graph
    capture (autocast's cache of casted weights must not outlive the captured region)."""
    if precision == "fp32":
        return nullcontext()
    dtype = torch.float16 if precision == "fp16" else torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype, cache_enabled=cache_enabled)


def peak_memory_gib(device: torch.device, hidden_bytes: int = 0) -> float | None:
    """Peak allocated GPU memory since the last reset plus ``hidden_bytes`` (a CUDA graph's
    activation pool, :meth:`TrainStep.hidden_memory_bytes`), in GiB (None on CPU)."""
    if device.type != "cuda":
        return None
    return (torch.cuda.max_memory_allocated(device) + hidden_bytes) / 2**30


class StepTimer:
    """Times each ``with timer:`` block without a host sync per block.

    On CUDA a pair of events is recorded around each block and read after one synchronisation
    in :meth:`median_ms` (the device's time for the block's work, excluding any idle time
    before it); elsewhere the wall clock (CPU work is synchronous).
    """

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.events: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []
        self.seconds: list[float] = []
        self._start: float | torch.cuda.Event = 0.0

    def __enter__(self) -> StepTimer:
        if self.cuda:
            self._start = torch.cuda.Event(enable_timing=True)
            self._start.record()
        else:
            self._start = time.perf_counter()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.cuda:
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            self.events.append((self._start, end))  # type: ignore[arg-type]
        else:
            self.seconds.append(time.perf_counter() - self._start)  # type: ignore[operator]

    def median_ms(self) -> float:
        """Median block time in milliseconds (NaN before any block); syncs once on CUDA."""
        if self.cuda and self.events:
            self.events[-1][1].synchronize()
            times = [start.elapsed_time(end) for start, end in self.events]
        else:
            times = [s * 1e3 for s in self.seconds]
        return statistics.median(times) if times else float("nan")


def runtime_versions(device: torch.device) -> dict[str, str]:
    """``env/torch``, ``env/cuda``, ``env/cudnn``, ``env/gpu`` of this process (``"none"`` where a
    CPU run has none): reported with a trial's results, tagged on its MLflow run."""
    cuda = device.type == "cuda"
    return {
        "env/torch": torch.__version__,
        "env/cuda": str(torch.version.cuda) if cuda else "none",
        "env/cudnn": str(torch.backends.cudnn.version()) if cuda else "none",
        "env/gpu": torch.cuda.get_device_name(device) if cuda else "none",
    }
