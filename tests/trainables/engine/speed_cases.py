"""Shared toy step for the ``train.speed`` numerics tests (also run by ``benchmarks/gpu_check.py``
on CUDA, and in a subprocess with triton's CPU interpreter for the fused norm)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

import torch
from torch import Tensor

from trainables.config.trial import TrialConfig, parse_trial_config
from trainables.engine import step as step_module
from trainables.engine.bench import build_bench_step

OPTIMIZERS = {
    "sgd": {"kind": "sgd", "lr": 0.01, "momentum": 0.99, "nesterov": True},
    "adamw": {"kind": "adamw", "lr": 1e-3},
    "nadam": {"kind": "nadam", "lr": 1e-3},  # no fused kernel in torch: the foreach path
}


def toy_config(
    precision: str, optimizer: str = "sgd", device: str = "cpu", **speed: bool
) -> TrialConfig:
    """nnU-Net's plain U-Net at toy size (instance norm, LeakyReLU 0.01, deep supervision):
    3 stages of 4..16 features, batch 2 of 16^3 patches, 4 modalities, Dice + BCE regions."""
    return parse_trial_config(
        {
            "device": device,
            "sampling": {"patch_size": [16, 16, 16]},
            "model": {"kind": "plain_unet", "base_filters": 4, "num_stages": 3, "max_filters": 16},
            "loss": {"kind": "dice_bce"},
            "optimizer": OPTIMIZERS[optimizer],
            "train": {"batch_size": 2, "precision": precision, "speed": speed},
        }
    )


def run_steps(cfg: TrialConfig, steps: int, prepare: Any = None) -> dict[str, Any]:
    """``steps`` optimizer steps on the seeded random batch; the first loss, the first step's
    gradients and every parameter's total update (all float64 on the CPU).

    ``prepare(model)`` runs after building (the fused-norm subprocess forces its backend).
    The step runs the precision the config asks for, fp16 on a CPU too (see
    :func:`literal_precision`); ``precision`` and ``grad_scaler`` say what it ran.
    """
    with literal_precision():
        bench = build_bench_step(cfg)
    if prepare is not None:
        prepare(bench.train.model)
    start = {k: v.detach().double().cpu().clone() for k, v in _params(bench.train.model)}
    grads: dict[str, Tensor] = {}
    losses = []
    for i in range(steps):
        losses.append(float(bench.step()))
        if i == 0:  # scaled (fp16) gradients are unscaled in place before the optimizer step
            grads = {k: _grad(p) for k, p in _params(bench.train.model) if p.grad is not None}
    update = {k: v.detach().double().cpu() - start[k] for k, v in _params(bench.train.model)}
    return {
        "losses": losses,
        "grads": grads,
        "update": update,
        "precision": bench.train.precision,
        "grad_scaler": bench.train.scaler.is_enabled(),
    }


@contextmanager
def literal_precision() -> Iterator[None]:
    """Steps built here run the precision their config asks for. Training maps fp16 on a CPU
    to fp32 (CPU float16 is slow at real sizes); at toy size the CPU runs true float16 autocast
    with the GradScaler, so every switch's fp16 numerics are checked without a GPU."""
    with mock.patch.object(step_module, "effective_precision", lambda requested, device: requested):
        yield


def _params(model: torch.nn.Module) -> list[tuple[str, Tensor]]:
    return list(model.named_parameters())


def _grad(p: Tensor) -> Tensor:
    assert p.grad is not None
    return p.grad.detach().double().cpu().clone()


def max_rel(a: dict[str, Tensor], b: dict[str, Tensor]) -> float:
    """``max |a - b| / max |b|`` over all tensors of two same-keyed dicts (max-norm relative)."""
    assert a.keys() == b.keys(), (sorted(a), sorted(b))
    diff = max(float((a[k] - b[k]).abs().max()) for k in a)
    scale = max(float(b[k].abs().max()) for k in b)
    return diff / scale


def compare(on: dict[str, Any], off: dict[str, Any]) -> dict[str, float]:
    """Errors of the switched-on run against the plain one: first loss, gradients, updates."""
    first_loss = abs(on["losses"][0] - off["losses"][0]) / abs(off["losses"][0])
    return {
        "loss": first_loss,
        "grads": max_rel(on["grads"], off["grads"]),
        "update": max_rel(on["update"], off["update"]),
    }
