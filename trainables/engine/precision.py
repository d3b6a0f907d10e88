"""Device and numeric-precision choices, kept in one place so every path agrees."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch

from trainables.errors import InputError


def resolve_device(requested: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU. Asking for CUDA without one is an input error."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("CUDA was requested but no GPU is visible to torch", where="device")
    return torch.device(requested)


def effective_precision(requested: str, device: torch.device) -> str:
    """The precision actually used: fp16 on CPU runs as fp32 (CPU fp16 autocast is slow)."""
    if device.type == "cpu" and requested == "fp16":
        return "fp32"
    return requested


def autocast_context(precision: str, device: torch.device) -> AbstractContextManager:
    """``torch.autocast`` for fp16/bf16, a no-op for fp32."""
    if precision == "fp32":
        return nullcontext()
    dtype = torch.float16 if precision == "fp16" else torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype)


def peak_memory_gib(device: torch.device) -> float | None:
    """Peak allocated GPU memory since the last reset, in GiB (None on CPU)."""
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**30
