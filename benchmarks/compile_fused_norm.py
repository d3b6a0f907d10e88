"""The fused-norm Triton kernels compiled for a GPU architecture on a machine without a GPU.

Usage::

    python benchmarks/compile_fused_norm.py [--arch 90] [--dtypes float16 bfloat16 float32]
        [--formats contiguous channels_last] [--stages nnunet|toy] [--json OUT]

Triton compiles without a device: Python AST -> TTIR -> TTGIR -> LLVM IR -> PTX -> cubin through
the ``ptxas`` its wheel ships. This script records the kernel launches that
:func:`trainables.models.fused_norm.fused_instance_norm_act` makes, forward and backward, for
each nnU-Net BraTS stage shape (batch 2, ``(2, 32, 128^3)`` ... ``(2, 320, 4^3)``), dtype and
memory format (the tensors are allocated, never filled: nothing runs), and compiles every
distinct launch the way triton's JIT would at that call: the same binder specialises the
arguments (integers equal to 1 become constants, 16-divisible ones and aligned pointers get
divisibility hints), with the same constexpr tile sizes and warps, for a target
``cuda:<arch>`` instead of the current device's. It reports each kernel's registers per thread,
stack, local memory (spills) and shared memory, read with the ``cuobjdump`` triton ships.

A compile error, a register spill or a kernel over 128 registers per thread (which once
flagged an unrolled loop at ptxas's cap of 255) shows here before any device time is spent;
the speed itself needs the GPU (``bench_fused_norm.py``). The JIT's binder is a private
triton API: checked on triton 3.6 (torch 2.11) and 3.9 (torch 2.13).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # runnable as a plain script from a checkout

import torch  # noqa: E402

from benchmarks.bench_fused_norm import NNUNET_STAGES, TOY_STAGES  # noqa: E402

REGISTERS_PER_SM = 65536  # sm_70 ... sm_100: 64K 32-bit registers per multiprocessor
# At most 128 per thread keeps two blocks of 8 warps resident per SM; 255 is ptxas's cap, where
# an unrolled loop first landed (then spills follow).
MAX_HEALTHY_REGISTERS = 128


@dataclass(frozen=True)
class Launch:
    """One recorded kernel launch: which kernel, its positional args and its keyword options."""

    kernel: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]

    def key(self) -> tuple[Any, ...]:
        """What makes triton compile a separate binary: argument types, constants, options."""
        kinds = tuple(
            (str(a.dtype), a.data_ptr() % 16 == 0) if isinstance(a, torch.Tensor)
            else ("int", a == 1, a % 16 == 0) if isinstance(a, int)
            else type(a).__name__
            for a in self.args
        )  # fmt: skip
        return (self.kernel, kinds, tuple(sorted(self.kwargs.items())))


@dataclass(frozen=True)
class Compiled:
    """One compiled kernel: where it came from and its resource use on the target."""

    kernel: str
    stage: str
    dtype: str
    layout: str
    constexprs: dict[str, int]
    num_warps: int
    registers: int
    stack_bytes: int
    local_bytes: int
    shared_bytes: int

    @property
    def spills(self) -> bool:
        return self.local_bytes > 0

    @property
    def fits(self) -> bool:
        """Whether one block of ``num_warps`` warps can hold its registers on one SM."""
        return self.registers * 32 * self.num_warps <= REGISTERS_PER_SM

    @property
    def healthy(self) -> bool:
        """No spills and at most ``MAX_HEALTHY_REGISTERS`` registers per thread."""
        return not self.spills and self.fits and self.registers <= MAX_HEALTHY_REGISTERS


class _Recorder:
    """Stands in for one ``triton.jit`` kernel: ``kernel[grid](*args, **kwargs)`` records."""

    def __init__(self, name: str, launches: list[Launch]) -> None:
        self.name, self.launches = name, launches

    def __getitem__(self, grid: tuple[int, ...]):
        def launch(*args: Any, **kwargs: Any) -> None:
            self.launches.append(Launch(self.name, args, kwargs))

        return launch


@contextmanager
def _recording() -> Iterator[list[Launch]]:
    """Swaps the kernels for recorders while the block runs; yields the launches made."""
    from trainables.models import _fused_norm_kernels as module

    launches: list[Launch] = []
    real = module.kernels
    module.kernels = lambda: {name: _Recorder(name, launches) for name in module._FUNCTIONS}
    try:
        yield launches
    finally:
        module.kernels = real


def record_launches(
    shape: tuple[int, ...], dtype: torch.dtype, channels_last: bool
) -> list[Launch]:
    """The launches of one forward + backward on a ``shape`` tensor (allocated, never read)."""
    from trainables.models.fused_norm import fused_instance_norm_act

    fmt = torch.channels_last_3d if channels_last else torch.contiguous_format
    x = torch.empty(shape, dtype=dtype).contiguous(memory_format=fmt).requires_grad_()
    weight = torch.ones(shape[1], requires_grad=True)  # float32 parameters, as under autocast
    bias = torch.zeros(shape[1], requires_grad=True)
    with _recording() as launches:
        out = fused_instance_norm_act(x, weight, bias, interpret=False)
        out.backward(torch.empty_like(out))
    return launches


def compile_launch(launch: Launch, arch: int) -> Any:
    """``launch`` compiled for ``cuda:<arch>`` exactly as triton's JIT specialises it."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, make_backend
    from triton.runtime.jit import create_function_from_signature

    from trainables.models._fused_norm_kernels import _FUNCTIONS

    fn = triton.jit(_FUNCTIONS[launch.kernel])
    target = GPUTarget("cuda", arch, 32)
    backend = make_backend(target)
    binder = create_function_from_signature(fn.signature, fn.params, backend)
    bound, specialization, options = binder(*launch.args, **launch.kwargs)
    options, signature, constexprs, attrs = fn._pack_args(
        backend, launch.kwargs, bound, specialization, options
    )
    return triton.compile(
        ASTSource(fn, signature, constexprs, attrs), target=target, options=options.__dict__
    )


def resource_usage(cubin: bytes) -> dict[str, int]:
    """REG, STACK, LOCAL and SHARED of a one-function cubin, from triton's ``cuobjdump``."""
    import triton

    tool = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "kernel.cubin"
        path.write_bytes(cubin)
        text = subprocess.run(
            [str(tool), "--dump-resource-usage", str(path)],
            capture_output=True, text=True, check=True, timeout=60,
        ).stdout  # fmt: skip
    fields = dict(re.findall(r"\b(REG|STACK|SHARED|LOCAL):(\d+)", text))
    if "REG" not in fields:
        raise RuntimeError(f"no resource usage in cuobjdump's output:\n{text}")
    return {name: int(value) for name, value in fields.items()}


def check(
    stages: list[tuple[int, int]], dtypes: list[str], layouts: list[str], arch: int
) -> list[Compiled]:
    """Every distinct launch of every stage, dtype and layout, compiled for ``arch``."""
    seen: set[tuple[Any, ...]] = set()
    results: list[Compiled] = []
    for channels, edge in stages:
        for dtype in dtypes:
            for layout in layouts:
                shape = (2, channels, edge, edge, edge)
                for launch in record_launches(shape, getattr(torch, dtype), layout != "contiguous"):
                    if launch.key() in seen:
                        continue
                    seen.add(launch.key())
                    usage = resource_usage(compile_launch(launch, arch).asm["cubin"])
                    results.append(_compiled(launch, f"{channels}x{edge}^3", dtype, layout, usage))
    return results


def _compiled(launch: Launch, stage: str, dtype: str, layout: str, usage: dict) -> Compiled:
    kwargs = dict(launch.kwargs)
    return Compiled(
        kernel=launch.kernel,
        stage=stage,
        dtype=dtype,
        layout=layout,
        num_warps=kwargs.pop("num_warps"),
        constexprs=kwargs,
        registers=usage["REG"],
        stack_bytes=usage.get("STACK", 0),
        local_bytes=usage.get("LOCAL", 0),
        shared_bytes=usage.get("SHARED", 0),
    )


def markdown(results: list[Compiled], arch: int) -> str:
    lines = [
        f"| kernel | first at | dtype | layout | tiles | warps | registers | stack | local | "
        f"shared (sm_{arch}) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        tiles = " ".join(f"{k}={v}" for k, v in r.constexprs.items())
        lines.append(
            f"| {r.kernel} | {r.stage} | {r.dtype} | {r.layout} | {tiles} | {r.num_warps} | "
            f"{r.registers} | {r.stack_bytes} | {r.local_bytes} | {r.shared_bytes} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", type=int, default=90, help="compute capability (90: H100/H200)")
    parser.add_argument("--dtypes", nargs="+", default=["float16", "bfloat16", "float32"])
    parser.add_argument("--formats", nargs="+", default=["contiguous", "channels_last"])
    parser.add_argument("--stages", choices=["nnunet", "toy"], default="nnunet")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET") == "1":
        parser.error("unset TRITON_INTERPRET: this compiles the kernels, it does not run them")
    stages = NNUNET_STAGES if args.stages == "nnunet" else TOY_STAGES
    results = check(stages, args.dtypes, args.formats, args.arch)
    print(markdown(results, args.arch))
    bad = [r for r in results if not r.healthy]
    print(f"\n{len(results)} distinct kernels compiled for sm_{args.arch}; spilling or over "
          f"{MAX_HEALTHY_REGISTERS} registers per thread: {len(bad)}")  # fmt: skip
    if args.json:
        import triton

        args.json.write_text(json.dumps({
            "arch": args.arch, "triton": triton.__version__, "torch": torch.__version__,
            "kernels": [asdict(r) | {"spills": r.spills, "healthy": r.healthy} for r in results],
        }, indent=2))  # fmt: skip
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
