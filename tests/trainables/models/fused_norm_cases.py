"""Numerics cases for the fused instance norm + LeakyReLU, run in triton's CPU interpreter.

Run as a script (``test_fused_norm.py`` does, in a subprocess) with ``TRITON_INTERPRET=1`` set
before triton is imported; it prints one JSON object: per case, the error of the Triton kernels
against :func:`reference_instance_norm_act` in float32, for the output and the gradients of x,
weight and bias. An error is ``max |fused - reference| / max |reference|`` (max-norm relative).

The reference always runs in float32 on the float32 copy of the same (possibly float16) input,
so a float16 case measures the kernels' total error against the exact-as-possible answer.
Shapes are tiny and ``tile`` small so each instance spans several tiles with a ragged last one
(the interpreter runs every program in Python: seconds per case).
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import torch

CASES: dict[str, dict[str, Any]] = {}


def _case(name: str, shape: tuple[int, ...], dtype: str, layout: str, **kw: Any) -> None:
    CASES[name] = {"shape": shape, "dtype": dtype, "layout": layout, **kw}


# 3-D: 5*7*3 = 105 voxels per instance; tile 32 -> 4 tiles of 32 (contiguous, 1 channel/tile)
# or tiles of 8 voxels x 4 channels (channels-last, channel 4 masked), last tile ragged.
for _dt in ("float32", "float16", "bfloat16"):
    for _layout in ("contiguous", "channels_last"):
        _case(f"3d-{_dt}-{_layout}", (2, 3, 5, 7, 3), _dt, _layout, tile=32)
# 2-D: 9*11 = 99 pixels, FM-Net's slope.
for _dt in ("float32", "float16"):
    for _layout in ("contiguous", "channels_last"):
        _case(f"2d-{_dt}-{_layout}", (2, 3, 9, 11), _dt, _layout, tile=32, slope=0.02)
# several channel blocks: channels-last caps a tile at 64 channels (66 -> 64 + 2 of 64, masked);
# contiguous packs small instances (12 voxels -> 16) several channels to a tile (5 -> 4 + 1 of 4).
_case("3d-float32-channels_last-66ch", (2, 66, 2, 3, 2), "float32", "channels_last", tile=4096)
_case("3d-float32-contiguous-4ch-tiles", (2, 5, 2, 3, 2), "float32", "contiguous", tile=64)
# the upstream gradient in the other memory format than x (read in place, no copy).
_case("3d-float32-dy-other-layout", (2, 3, 5, 7, 3), "float32", "contiguous", tile=32,
      dy_layout="channels_last")  # fmt: skip
# neither layout (a strided slice): copied once into contiguous.
_case("3d-float32-sliced", (2, 3, 5, 7, 6), "float32", "sliced", tile=32)
# one tile per instance (tile larger than the instance), ReLU (slope 0), large mean offset.
_case("3d-float32-one-tile-relu", (2, 3, 5, 7, 3), "float32", "contiguous", slope=0.0, tile=4096)
_case("3d-float32-offset", (2, 3, 5, 7, 3), "float32", "channels_last", tile=32, offset=1000.0)


def _format(dims: int, layout: str) -> torch.memory_format:
    if layout == "channels_last":
        return torch.channels_last_3d if dims == 5 else torch.channels_last
    return torch.contiguous_format


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def run_case(spec: dict[str, Any], seed: int = 0) -> dict[str, Any]:
    from trainables.models.fused_norm import fused_instance_norm_act, reference_instance_norm_act

    gen = torch.Generator().manual_seed(seed)
    shape, dtype = tuple(spec["shape"]), getattr(torch, spec["dtype"])
    slope, tile = spec.get("slope", 0.01), spec["tile"]
    c = shape[1]
    x32 = torch.randn(shape, generator=gen) * 2.0 + 0.5 + spec.get("offset", 0.0)
    weight = torch.rand(c, generator=gen) + 0.5
    bias = torch.randn(c, generator=gen) * 0.5
    dy32 = torch.randn(shape, generator=gen)
    fmt = _format(len(shape), spec["layout"])
    if spec["layout"] == "sliced":  # (B, C, D, H, W/2): neither contiguous nor channels-last
        leaf = x32.to(dtype).requires_grad_()
        x = leaf[..., ::2]
        fmt = torch.contiguous_format  # copied once into it
    else:
        leaf = x32.to(dtype).contiguous(memory_format=fmt).requires_grad_()
        x = leaf
    dy = dy32.to(dtype)[..., : x.shape[-1]]
    dy = dy.contiguous(memory_format=_format(len(shape), spec.get("dy_layout", spec["layout"])))

    wf, bf = weight.clone().requires_grad_(), bias.clone().requires_grad_()
    t0 = time.perf_counter()
    out = fused_instance_norm_act(x, wf, bf, slope, interpret=True, tile=tile)
    dx, dw, db = torch.autograd.grad(out, (x, wf, bf), dy)  # as the backward produced them
    seconds = time.perf_counter() - t0

    xr = x.detach().float().requires_grad_()
    wr, br = weight.clone().requires_grad_(), bias.clone().requires_grad_()
    ref = reference_instance_norm_act(xr, wr, br, slope)
    ref.backward(dy.float())
    # float64 ground truth: how far each float32 computation is from it (matters with an offset)
    x64 = x.detach().double().requires_grad_()
    w64, b64 = weight.double().requires_grad_(), bias.double().requires_grad_()
    ref64 = reference_instance_norm_act(x64, w64, b64, slope)
    ref64.backward(dy.double())
    exact = (ref64, x64.grad, w64.grad, b64.grad)
    return {
        "out": _rel(out, ref),
        "dx": _rel(dx, xr.grad),
        "dweight": _rel(dw, wr.grad),
        "dbias": _rel(db, br.grad),
        "vs_float64": [_rel(a, e) for a, e in zip((out, dx, dw, db), exact, strict=True)],
        "torch_vs_float64": [
            _rel(a, e) for a, e in zip((ref, xr.grad, wr.grad, br.grad), exact, strict=True)
        ],
        "dtype_ok": out.dtype == dtype and dx.dtype == dtype and dw.dtype == torch.float32,
        "layout_ok": out.is_contiguous(memory_format=fmt) and dx.is_contiguous(memory_format=fmt),
        "seconds": round(seconds, 2),
    }


def main(names: list[str]) -> None:
    if os.environ.get("TRITON_INTERPRET") != "1":
        raise SystemExit("run with TRITON_INTERPRET=1 (triton's CPU interpreter)")
    torch.set_num_threads(1)
    results = {name: run_case(CASES[name]) for name in names or CASES}
    print(json.dumps(results))


if __name__ == "__main__":
    main(sys.argv[1:])
