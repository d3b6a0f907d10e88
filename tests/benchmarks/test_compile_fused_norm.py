"""The fused-norm kernels compile for sm_90 (H100/H200) without a GPU, with no register spills."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import torch

from trainables.models.fused_norm import launch_plan


def _compiler_available() -> bool:
    if importlib.util.find_spec("triton") is None or os.environ.get("TRITON_INTERPRET") == "1":
        return False
    import triton

    bin_dir = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
    return (bin_dir / "ptxas").exists() and (bin_dir / "cuobjdump").exists()


pytestmark = pytest.mark.skipif(
    not _compiler_available(), reason="needs triton with its NVIDIA backend (ptxas, cuobjdump)"
)


def test_every_brats_launch_compiles_for_hopper_without_spills():
    from benchmarks.compile_fused_norm import NNUNET_STAGES, check

    results = check(NNUNET_STAGES, ["float16"], ["contiguous", "channels_last"], arch=90)

    compiled = {(r.kernel, r.layout) for r in results}
    kernels = {"stats_partial", "stats_combine", "fwd", "bwd_partial", "bwd_dx"}
    assert compiled == {(k, layout) for k in kernels for layout in ("contiguous", "channels_last")}
    assert [r for r in results if not r.healthy] == []  # no spills, <= 128 registers/thread
    assert all(r.registers > 0 for r in results)


def test_recorded_launches_follow_the_launch_plan():
    from benchmarks.compile_fused_norm import record_launches

    launches = record_launches((2, 32, 16, 16, 16), torch.float16, channels_last=False)

    assert [launch.kernel for launch in launches] == [
        "stats_partial", "stats_combine", "fwd", "bwd_partial", "bwd_dx",
    ]  # fmt: skip
    plan = launch_plan(2, 32, 16**3, channels_last=False)
    assert launches[0].kwargs == {
        "BLOCK_S": plan.block_s, "BLOCK_C": plan.block_c, "num_warps": plan.num_warps,
    }  # fmt: skip
    assert launches[1].kwargs["K_BLOCKS"] == plan.k_blocks == 1
    assert launches[0].args[6:9] == (16**3 * 32, 16**3, 1)  # NCDHW strides of (B, C, N)


def test_a_kernel_that_cannot_compile_fails_the_check():
    from benchmarks.compile_fused_norm import Launch, compile_launch, record_launches

    good = record_launches((2, 8, 8, 8, 8), torch.float16, channels_last=False)[0]
    bad = Launch(good.kernel, good.args, {**good.kwargs, "BLOCK_S": 3})  # arange needs 2^k

    with pytest.raises(Exception, match=r"power of (2|two)"):
        compile_launch(bad, arch=90)
