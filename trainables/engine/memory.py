"""Recognising out-of-memory failures, on the GPU and on the host, with the figure involved."""

from __future__ import annotations

import torch

CPU_ALLOC_FAILURE = "DefaultCPUAllocator: can't allocate memory"


def is_out_of_memory(err: BaseException) -> bool:
    """CUDA out of memory, a failed host allocation in torch's CPU allocator, or MemoryError."""
    if isinstance(err, torch.OutOfMemoryError | MemoryError):
        return True
    return isinstance(err, RuntimeError) and CPU_ALLOC_FAILURE in str(err)


def allocation_figure(err: BaseException) -> str:
    """``tried to allocate 12.5 MiB on the host`` from torch's CPU allocator message, or the
    error's last line when it carries no figure (CUDA's message names its own)."""
    message = str(err)
    words = message.split("you tried to allocate ")
    if len(words) < 2 or not words[1].split(" ")[0].isdigit():
        return (message.strip().splitlines() or [type(err).__name__])[-1]
    size = int(words[1].split(" ")[0])
    text = f"{size / 2**30:.2f} GiB" if size >= 2**30 else f"{size / 2**20:.1f} MiB"
    return f"tried to allocate {text} on the host"
