"""Run with ``TRITON_INTERPRET=1``: the toy step with ``train.speed.fused_norm_act`` on, its
fused layers forced onto the Triton kernels (CPU: triton's interpreter), against the plain step.

Prints one JSON line: ``{precision: {"loss": .., "grads": .., "update": .., "fused_layers": n}}``.
"""

from __future__ import annotations

import json
import os
import sys

import torch

if os.environ.get("TRITON_INTERPRET") != "1":  # must be set before triton is imported
    sys.exit("set TRITON_INTERPRET=1")

from tests.trainables.engine.speed_cases import compare, run_steps, toy_config
from trainables.models.fused_norm import FusedInstanceNormAct

STEPS = 2


def force_triton(model: torch.nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, FusedInstanceNormAct):
            module.backend = "triton"


def count_fused(cfg: object) -> int:
    from trainables.engine.bench import build_bench_step

    model = build_bench_step(cfg).train.model  # type: ignore[arg-type]
    return sum(isinstance(m, FusedInstanceNormAct) for m in model.modules())


def main() -> None:
    torch.set_num_threads(1)
    result = {}
    for precision in ("fp32", "fp16", "bf16"):
        on_cfg = toy_config(precision, fused_norm_act=True)
        on = run_steps(on_cfg, STEPS, prepare=force_triton)
        off = run_steps(toy_config(precision), STEPS)
        result[precision] = {**compare(on, off), "fused_layers": count_fused(on_cfg)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
