"""The fused instance norm + LeakyReLU: Triton kernels against the torch reference, and the opt-in.

The kernels run in triton's CPU interpreter, which must be chosen before triton is imported, so
they run in one subprocess (``fused_norm_cases.py`` with ``TRITON_INTERPRET=1``) and each case's
errors are checked here. Errors are max-norm relative: ``max |fused - ref| / max |ref|`` against
the float32 reference on the same input (the float16/bfloat16 input upcast).

Measured with the cases as committed (triton 3.9.0 interpreter, torch 2.13.0+cpu): float32 all
<= 4e-7; float16 output and dx <= 2.2e-4 (fp16 rounding of the result), weight/bias grads
<= 5e-7; bfloat16 output and dx <= 5e-3. Tolerances below leave ~5x (fp32: 25x) headroom.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from tests.trainables.models.fused_norm_cases import CASES
from trainables.models.blocks import ConvNormAct, ConvOps, ResidualBlock, StackedConvs
from trainables.models.fused_norm import (
    FusedInstanceNormAct,
    fused_instance_norm_act,
    reference_instance_norm_act,
    triton_available,
)

REPO = Path(__file__).resolve().parents[3]
CASES_SCRIPT = Path(__file__).with_name("fused_norm_cases.py")

# max-norm relative error against the float32 reference: (output and dx, weight and bias grads)
TOLERANCE = {"float32": (1e-5, 1e-5), "float16": (1e-3, 1e-5), "bfloat16": (1e-2, 1e-5)}
# with a mean of 1000 and a std of 2 the float32 mean itself is off by ~ulp(1000) = 6e-5, so
# both float32 paths are ~3e-5 from float64 there: check the kernels against float64 instead.
OFFSET_TOLERANCE = 1e-4

needs_triton = pytest.mark.skipif(
    not triton_available(),
    reason="triton is not installed (pip install triton; CUDA builds of torch ship it): "
    "the Triton kernels are tested in its CPU interpreter",
)


@pytest.fixture(scope="module")
def interpreted() -> dict[str, Any]:
    """All cases, run once in a subprocess with triton's CPU interpreter."""
    env = {
        **os.environ,
        "TRITON_INTERPRET": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "OMP_NUM_THREADS": "1",
    }
    proc = subprocess.run(
        [sys.executable, str(CASES_SCRIPT)],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@needs_triton
@pytest.mark.parametrize("name", list(CASES))
def test_triton_kernels_match_the_reference(interpreted: dict[str, Any], name: str) -> None:
    got = interpreted[name]
    assert got["dtype_ok"], "output/dx keep the input dtype, weight/bias grads float32"
    assert got["layout_ok"], "output and dx keep the input's memory format"
    if "offset" in CASES[name]:
        assert max(got["vs_float64"]) < OFFSET_TOLERANCE, got
        return
    tol_x, tol_w = TOLERANCE[CASES[name]["dtype"]]
    assert got["out"] < tol_x and got["dx"] < tol_x, got
    assert got["dweight"] < tol_w and got["dbias"] < tol_w, got


# ----------------------------------------------------------------------- module, no kernels
def _unfused(channels: int, slope: float, dims: int) -> nn.Sequential:
    norm = nn.InstanceNorm3d if dims == 3 else nn.InstanceNorm2d
    return nn.Sequential(norm(channels, affine=True), nn.LeakyReLU(slope))


@pytest.mark.parametrize(("dims", "slope"), [(3, 0.01), (2, 0.02)])
def test_module_on_cpu_is_exactly_instance_norm_then_leaky_relu(dims: int, slope: float) -> None:
    torch.manual_seed(0)
    fused = FusedInstanceNormAct(5, slope, dims)
    unfused = _unfused(5, slope, dims)
    with torch.no_grad():
        for p in (fused.weight, fused.bias):
            p.normal_()
    unfused[0].load_state_dict(fused.state_dict())
    assert not fused.uses_triton(torch.zeros(1))  # CPU tensor, backend "auto": the reference
    x = torch.randn(2, 5, *[6] * dims) * 3 + 1
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = fused(xa), unfused(xb)
    assert torch.equal(ya, yb)
    dy = torch.randn_like(ya)
    ya.backward(dy)
    yb.backward(dy)
    assert torch.equal(xa.grad, xb.grad)
    assert torch.equal(fused.weight.grad, unfused[0].weight.grad)
    assert torch.equal(fused.bias.grad, unfused[0].bias.grad)


def test_module_has_the_instance_norm_parameters_and_checks_its_input() -> None:
    fused = FusedInstanceNormAct(4, 0.01, 3)
    assert fused.state_dict().keys() == nn.InstanceNorm3d(4, affine=True).state_dict().keys()
    assert torch.equal(fused.weight, torch.ones(4)) and torch.equal(fused.bias, torch.zeros(4))
    with pytest.raises(ValueError, match="5-D"):
        fused(torch.zeros(2, 4, 3, 3))
    with pytest.raises(ValueError, match="spatial_dims"):
        FusedInstanceNormAct(4, 0.01, 1)
    with pytest.raises(ValueError, match="backend"):
        FusedInstanceNormAct(4, 0.01, 3, backend="cudnn")  # type: ignore[arg-type]
    assert torch.equal(
        FusedInstanceNormAct(4, 0.01, 3, backend="torch")(torch.ones(1, 4, 2, 2, 2)),
        reference_instance_norm_act(torch.ones(1, 4, 2, 2, 2), fused.weight, fused.bias),
    )


@needs_triton
def test_kernels_on_cpu_without_the_interpreter_say_how_to_enable_it() -> None:
    from trainables.models._fused_norm_kernels import interpreter_active

    if interpreter_active():
        pytest.skip("this process runs triton's interpreter (TRITON_INTERPRET=1)")
    x, w, b = torch.randn(1, 2, 3, 3, 3), torch.ones(2), torch.zeros(2)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        fused_instance_norm_act(x, w, b)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        FusedInstanceNormAct(2, backend="triton")(x)


# ----------------------------------------------------------------------- the blocks opt-in
@pytest.mark.parametrize("dims", [2, 3])
def test_blocks_opt_in_swaps_norm_and_act_for_the_fused_layer(dims: int) -> None:
    block = ConvNormAct(ConvOps(dims, "instance", 0.02, fused_norm_act=True), 2, 4)
    assert [type(m) for m in block] == [type(block[0]), FusedInstanceNormAct]
    assert block[1].negative_slope == 0.02 and block[1].spatial_dims == dims
    assert not ConvOps(dims).fused_norm_act  # off by default
    # only instance norm is fused; other norms keep norm -> act
    plain = ConvNormAct(ConvOps(dims, "batch", 0.01, fused_norm_act=True), 2, 4)
    assert not any(isinstance(m, FusedInstanceNormAct) for m in plain)


@pytest.mark.parametrize("block_kind", ["plain", "residual"])
def test_state_dict_saved_with_the_switch_off_loads_with_it_on(block_kind: str) -> None:
    torch.manual_seed(0)
    block_cls = StackedConvs if block_kind == "plain" else ResidualBlock
    off = block_cls(ConvOps(3, "instance", 0.01), 2, 4, stride=2)
    on = block_cls(ConvOps(3, "instance", 0.01, fused_norm_act=True), 2, 4, stride=2)
    assert any(isinstance(m, FusedInstanceNormAct) for m in on.modules())
    with torch.no_grad():  # non-default norm parameters, so loading them is visible
        for name, p in off.named_parameters():
            if name.endswith(("1.weight", "1.bias")):
                p.normal_()
    state = off.state_dict()
    assert on.state_dict().keys() == state.keys()
    on.load_state_dict(state)  # strict: same keys, same shapes
    off.load_state_dict(on.state_dict())  # and back
    x = torch.randn(2, 2, 6, 6, 6)
    assert torch.equal(on(x), off(x))  # CPU: the fused layer runs the same torch ops


@pytest.mark.parametrize("kind", ["plain", "attention"])
def test_whole_network_with_the_switch_on_loads_the_switch_off_checkpoint(kind: str) -> None:
    """What the config switch will do: ``ConvOps(..., fused_norm_act=True)`` in ``spec_for``."""
    from trainables.models.build import build_model, spec_for
    from trainables.models.config import AttentionUNetConfig, PlainUNetConfig
    from trainables.models.unet import UNet

    torch.manual_seed(0)
    cfg = (
        PlainUNetConfig(spatial_dims=3, base_filters=4, num_stages=3, deep_supervision=False)
        if kind == "plain"
        else AttentionUNetConfig(spatial_dims=3, filters=(4, 8, 16), deep_supervision=0)
    )
    off = build_model(cfg, 2, 3)
    spec = spec_for(cfg)
    on = UNet(
        dataclasses.replace(spec, ops=dataclasses.replace(spec.ops, fused_norm_act=True)), 2, 3
    )
    n_fused = sum(isinstance(m, FusedInstanceNormAct) for m in on.modules())
    assert n_fused >= 2 * len(spec.filters)  # every conv -> IN -> LeakyReLU of the blocks
    on.load_state_dict(off.state_dict())  # strict
    x = torch.randn(1, 2, 8, 8, 8)
    off.eval()
    on.eval()
    assert torch.equal(on(x), off(x))
