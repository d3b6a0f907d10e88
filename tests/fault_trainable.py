"""Test-only fault injection: a real out-of-memory inside a trial on a CPU machine.

:func:`memory_fault` caps the process's address space so a real allocation fails;
:func:`oom_trainable` makes an :class:`~trainables.trainable.AblateTrainable` subclass whose
epochs of the named trials run under that cap. Sweeps use it through their documented test hook,
``run_sweep(SweepOptions(..., trainable=oom_trainable({"big/seed0"})))``; no production module
knows about faults.
"""

from __future__ import annotations

import contextlib
import importlib
import resource
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def memory_fault(headroom_mib: int | None = 64) -> Iterator[None]:
    """Cap this process's address space at its current size plus ``headroom_mib`` (None: no cap).

    A real allocation then fails (an out-of-memory trial on a CPU machine); the previous limit is
    restored afterwards, since the actor may be reused by another trial. oneDNN is off meanwhile:
    it reports a failed allocation only as "could not create a primitive", while torch's own CPU
    allocator names it.
    """
    if headroom_mib is None:
        yield
        return
    # Looked up by name: this module is pickled by value for Ray workers, and cloudpickle
    # cannot pickle torch's mkldnn module object it would find behind ``torch.backends.mkldnn``.
    mkldnn = importlib.import_module("torch.backends.mkldnn")
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = _address_space_bytes() + int(headroom_mib) * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (cap if hard < 0 else min(cap, hard), hard))
    onednn, mkldnn.enabled = mkldnn.enabled, False
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
        mkldnn.enabled = onednn


def _address_space_bytes() -> int:
    """Current virtual size of this process (Linux /proc), in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("memory fault injection needs Linux /proc/self/status")


def oom_trainable(keys: set[str], headroom_mib: int = 64) -> type:
    """An AblateTrainable subclass whose trials ``keys`` run each epoch under
    :func:`memory_fault`; their outcome's error says the shortage was injected."""
    from ray import cloudpickle

    from trainables.engine.memory import allocation_figure, is_out_of_memory
    from trainables.engine.runner import TrialOutOfMemory
    from trainables.trainable import AblateTrainable

    # Ray workers need not have tests/ on their path: ship this module by value.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])

    class OutOfMemoryTrainable(AblateTrainable):
        def run_epoch(self, runner: Any) -> dict[str, float]:
            if self.spec.key not in keys:
                return runner.run_epoch()
            try:
                with memory_fault(headroom_mib):
                    return runner.run_epoch()
            except Exception as err:  # say so: this shortage was injected by a test
                note = f" (injected: address space capped at +{headroom_mib} MiB)"
                if isinstance(err, TrialOutOfMemory):
                    raise TrialOutOfMemory(f"{err}{note}") from err
                if is_out_of_memory(err):  # outside the runner's own OOM translation
                    message = f"out of memory: {allocation_figure(err)}{note}"
                    raise TrialOutOfMemory(message) from err
                raise

    return OutOfMemoryTrainable
