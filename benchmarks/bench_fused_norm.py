"""Instance norm + LeakyReLU: the unfused torch pair vs the fused Triton kernels, side by side.

Usage::

    python benchmarks/bench_fused_norm.py [--steps 40] [--warmup 10] [--block 10]
        [--dtype float16] [--formats contiguous channels_last] [--json OUT]
    python benchmarks/bench_fused_norm.py --dry-run     # toy sizes, CPU, triton's interpreter

For each nnU-Net BraTS stage (batch 2, 4x128^3 patch, 6 stages 32..320: ``(2, 32, 128^3)``,
``(2, 64, 64^3)``, ... ``(2, 320, 4^3)``) and each memory format (contiguous NCDHW,
channels_last_3d NDHWC), it times forward + backward (``torch.autograd.grad`` of x, weight and
bias against a fixed upstream gradient) of

* reference: ``nn.InstanceNorm3d(C, affine=True)`` + ``nn.LeakyReLU(0.01, inplace=True)``, as
  nnU-Net builds them (cuDNN / ATen kernels, on the input in that memory format);
* fused: :class:`trainables.models.fused_norm.FusedInstanceNormAct` (the Triton kernels).

Both run in one process on the same input: after ``--warmup`` untimed iterations each, blocks of
``--block`` iterations alternate reference, fused, reference, ... (cancelling clock and thermal
drift); each block ends with a device synchronisation; ms/iteration is the median over blocks.
It prints ms for each side, the ratio reference/fused (> 1: fused is faster), the fused
output's max-norm relative error against the float32 reference, and a per-step estimate: each
stage's time times the number of norm layers at that stage in the BraTS network (2 encoder +
2 decoder convs per stage, 2 at the bottleneck), the part of the 74 ms nnU-Net step that the
switch can change.

``--dry-run`` runs the same code at toy sizes on the CPU through triton's interpreter (which it
enables before triton is imported): it checks that the benchmark runs, not a speed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # runnable as a plain script from a checkout

import torch  # noqa: E402
from torch import Tensor, nn  # noqa: E402

# (channels, edge) per stage of nnU-Net's BraTS 3d_fullres network, and norm layers at each
NNUNET_STAGES = [(32, 128), (64, 64), (128, 32), (256, 16), (320, 8), (320, 4)]
NORMS_PER_STAGE = [4, 4, 4, 4, 4, 2]
TOY_STAGES = [(4, 6), (8, 3)]
SLOPE = 0.01


def _format(name: str, dims: int) -> torch.memory_format:
    if name == "channels_last":
        return torch.channels_last_3d if dims == 5 else torch.channels_last
    return torch.contiguous_format


def _unfused(channels: int) -> nn.Module:
    return nn.Sequential(nn.InstanceNorm3d(channels, affine=True), nn.LeakyReLU(SLOPE, True))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _iteration(module: nn.Module, x: Tensor, dy: Tensor) -> Callable[[], None]:
    params = tuple(module.parameters())

    def run() -> None:
        out = module(x)
        torch.autograd.grad(out, (x, *params), dy)

    return run


def _max_rel_error(fused: nn.Module, x: Tensor, dy: Tensor) -> dict[str, float]:
    """Fused output and grads against the float32 reference on the same input."""
    from trainables.models.fused_norm import reference_instance_norm_act

    xf = x.detach().requires_grad_()
    out = fused(xf)
    got = (out, *torch.autograd.grad(out, (xf, fused.weight, fused.bias), dy))
    x32 = x.detach().float().requires_grad_()
    w32 = fused.weight.detach().float().requires_grad_()
    b32 = fused.bias.detach().float().requires_grad_()
    ref = reference_instance_norm_act(x32, w32, b32, SLOPE)
    want = (ref, *torch.autograd.grad(ref, (x32, w32, b32), dy.float()))
    names = ("out", "dx", "dweight", "dbias")
    return {
        n: ((a.float() - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()
        for n, a, b in zip(names, got, want, strict=True)
    }


def bench_case(
    channels: int,
    edge: int,
    fmt: str,
    *,
    batch: int,
    dtype: torch.dtype,
    device: torch.device,
    steps: int,
    warmup: int,
    block: int,
) -> dict[str, Any]:
    """Reference vs fused forward + backward at one shape and memory format, interleaved."""
    from trainables.models import fused_norm

    torch.manual_seed(0)
    shape = (batch, channels, edge, edge, edge)
    mf = _format(fmt, len(shape))
    x = (torch.randn(shape, device=device) * 2 + 0.5).to(dtype).contiguous(memory_format=mf)
    x.requires_grad_()
    dy = torch.randn(shape, device=device).to(dtype).contiguous(memory_format=mf)
    ref = _unfused(channels).to(device)
    fused = fused_norm.FusedInstanceNormAct(channels, SLOPE, 3, backend="triton").to(device)
    with torch.no_grad():
        fused.weight.uniform_(0.5, 1.5)
        fused.bias.normal_(0, 0.5)
        ref[0].load_state_dict(fused.state_dict())
    sides = {"reference": _iteration(ref, x, dy), "fused": _iteration(fused, x, dy)}
    for fn in sides.values():
        for _ in range(warmup):
            fn()
    _sync(device)
    blocks: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(max(1, steps // block)):
        for name, fn in sides.items():
            t0 = time.perf_counter()
            for _ in range(block):
                fn()
            _sync(device)
            blocks[name].append((time.perf_counter() - t0) * 1e3 / block)
    ms = {name: statistics.median(v) for name, v in blocks.items()}
    return {
        "shape": list(shape),
        "format": fmt,
        "reference_ms": ms["reference"],
        "fused_ms": ms["fused"],
        "ratio_reference_over_fused": ms["reference"] / ms["fused"],
        "block_ms": blocks,
        "error_vs_float32": _max_rel_error(fused, x, dy),
    }


def environment(device: torch.device) -> dict[str, Any]:
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "triton": _version("triton"),
        "device": str(device),
        "machine": platform.machine(),
        "interpreter": os.environ.get("TRITON_INTERPRET") == "1",
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        env["cuda"] = torch.version.cuda
        env["cudnn"] = torch.backends.cudnn.version()
    return env


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=40, help="timed iterations per side")
    parser.add_argument("--warmup", type=int, default=10, help="untimed iterations per side")
    parser.add_argument("--block", type=int, default=10, help="iterations per timed block")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"])
    parser.add_argument(
        "--formats", nargs="+", default=["contiguous", "channels_last"],
        choices=["contiguous", "channels_last"],
    )  # fmt: skip
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument(
        "--dry-run", action="store_true",
        help="toy sizes on the CPU through triton's interpreter (checks the code runs)",
    )  # fmt: skip
    return parser.parse_args(argv)


def _device_and_stages(args: argparse.Namespace) -> tuple[torch.device, tuple] | str:
    """Where to run and which (channels, edge) stages; a message when it cannot run here.
    ``--dry-run`` also shrinks the step counts."""
    if args.dry_run:
        if "triton" in sys.modules and os.environ.get("TRITON_INTERPRET") != "1":
            return "--dry-run needs triton's interpreter, chosen before triton is imported"
        os.environ["TRITON_INTERPRET"] = "1"
        args.steps, args.warmup, args.block = 2, 1, 1
        return torch.device("cpu"), TOY_STAGES
    if not torch.cuda.is_available():
        return "no CUDA device: use --dry-run to check the benchmark on the CPU"
    return torch.device("cuda"), NNUNET_STAGES


def _print_row(row: dict) -> None:
    err = row["error_vs_float32"]
    print(
        f"{row['shape']!s:24} {row['format']:13} reference {row['reference_ms']:8.3f} ms  "
        f"fused {row['fused_ms']:8.3f} ms  ratio {row['ratio_reference_over_fused']:5.2f}"
        f"  max rel err out {err['out']:.1e} dx {err['dx']:.1e}",
        flush=True,
    )


def _per_step(rows: list[dict], stages: tuple, formats: list[str]) -> dict[str, dict[str, float]]:
    """Per format, the reference and fused milliseconds of every norm layer of one step
    (fwd+bwd): each stage's time times the norm layers it has (:data:`NORMS_PER_STAGE`)."""
    per_step = {}
    counts = dict(zip(stages, NORMS_PER_STAGE, strict=False))
    for fmt in formats:
        fmt_rows = [r for r in rows if r["format"] == fmt]
        per_step[fmt] = {
            side: sum(r[f"{side}_ms"] * counts[(r["shape"][1], r["shape"][2])] for r in fmt_rows)
            for side in ("reference", "fused")
        }
        ref_ms, fused_ms = per_step[fmt]["reference"], per_step[fmt]["fused"]
        print(
            f"per-step estimate ({fmt}, all norm layers of the network, fwd+bwd): "
            f"reference {ref_ms:.2f} ms, fused {fused_ms:.2f} ms, ratio {ref_ms / fused_ms:.2f}"
        )
    return per_step


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    where = _device_and_stages(args)
    if isinstance(where, str):
        print(where)
        return 2
    device, stages = where
    from trainables.models.fused_norm import triton_available

    if not triton_available():
        print("triton is not installed (pip install triton; CUDA builds of torch ship it)")
        return 2
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as nnU-Net runs
    dtype = getattr(torch, args.dtype)
    env = environment(device)
    print("environment:", json.dumps(env))
    rows = []
    for channels, edge in stages:
        for fmt in args.formats:
            row = bench_case(
                channels, edge, fmt, batch=args.batch, dtype=dtype, device=device,
                steps=args.steps, warmup=args.warmup, block=args.block,
            )  # fmt: skip
            rows.append(row)
            _print_row(row)
    per_step = _per_step(rows, stages, args.formats)
    if args.json:
        result = {"environment": env, "dtype": args.dtype, "rows": rows, "per_step": per_step}
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
