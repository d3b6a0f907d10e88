"""Optimizer and schedule configs/builders: stepping, closed-form lrs, state round-trip."""

from __future__ import annotations

import io
import math

import pytest
import torch
from torch import nn

from trainables.config import Frozen, validate_config
from trainables.errors import InputError
from trainables.optim import (
    AdamConfig,
    AdamWConfig,
    ConstantSchedule,
    CosineSchedule,
    ExponentialSchedule,
    NAdamConfig,
    OptimizerConfig,
    PolySchedule,
    RAdamConfig,
    RMSpropConfig,
    ScheduleConfig,
    SGDConfig,
    StepSchedule,
    build_optimizer,
    build_scheduler,
)


class _OptimizerHolder(Frozen):
    optimizer: OptimizerConfig


class _ScheduleHolder(Frozen):
    schedule: ScheduleConfig


def _parse(**data: dict) -> Frozen:
    holder = _OptimizerHolder if "optimizer" in data else _ScheduleHolder
    return validate_config(holder, data, "trial.yaml")


def _lrs(cfg, epochs: int, total: int, lr: float = 1.0) -> list[float]:
    """lr used in each of ``epochs`` epochs (scheduler stepped after each)."""
    param = nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.SGD([param], lr=lr)
    scheduler = build_scheduler(cfg, optimizer, total)
    lrs = []
    for _ in range(epochs):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


@pytest.mark.parametrize(
    ("cfg", "cls"),
    [
        (AdamConfig(), torch.optim.Adam),
        (RAdamConfig(), torch.optim.RAdam),
        (NAdamConfig(), torch.optim.NAdam),
        (AdamWConfig(), torch.optim.AdamW),
        (SGDConfig(), torch.optim.SGD),
        (RMSpropConfig(momentum=0.5), torch.optim.RMSprop),
    ],
    ids=lambda v: getattr(v, "kind", ""),
)
def test_every_optimizer_builds_and_reduces_a_quadratic(cfg, cls) -> None:
    param = nn.Parameter(torch.tensor([1.0, -2.0]))
    optimizer = build_optimizer(cfg, [param])
    assert type(optimizer) is cls
    assert optimizer.param_groups[0]["lr"] == cfg.lr
    assert optimizer.param_groups[0]["weight_decay"] == cfg.weight_decay
    start = (param**2).sum().item()
    for _ in range(5):
        optimizer.zero_grad()
        (param**2).sum().backward()
        optimizer.step()
    assert (param**2).sum().item() < start


def test_paper_defaults_and_torch_arguments() -> None:
    assert (AdamConfig().lr, NAdamConfig().lr, SGDConfig().lr) == (5e-4, 3e-3, 0.01)
    assert (AdamWConfig().lr, AdamWConfig().weight_decay, RMSpropConfig().lr) == (1e-4, 1e-5, 1e-5)
    sgd = build_optimizer(SGDConfig(weight_decay=3e-5), nn.Linear(2, 1).parameters())
    group = sgd.param_groups[0]
    assert (group["momentum"], group["nesterov"], group["weight_decay"]) == (0.99, True, 3e-5)
    nadam = build_optimizer(NAdamConfig(betas=(0.8, 0.99)), nn.Linear(2, 1).parameters())
    assert nadam.param_groups[0]["betas"] == (0.8, 0.99)


def test_param_groups_are_accepted() -> None:
    a, b = nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1))
    optimizer = build_optimizer(AdamConfig(), [{"params": [a]}, {"params": [b], "lr": 1e-2}])
    assert [g["lr"] for g in optimizer.param_groups] == [5e-4, 1e-2]


def test_no_parameters_is_refused() -> None:
    with pytest.raises(ValueError, match="no parameters"):
        build_optimizer(AdamConfig(), [])


def test_optimizer_validation_messages() -> None:
    with pytest.raises(InputError, match=r"optimizer\.lr: Input should be greater than 0 \(got -1"):
        _parse(optimizer={"kind": "adam", "lr": -1})
    with pytest.raises(InputError, match=r"optimizer\.weight_decay: .*greater than or equal to 0"):
        _parse(optimizer={"kind": "sgd", "weight_decay": -0.1})
    with pytest.raises(InputError, match=r"optimizer\.betas\.1: Input should be less than 1"):
        _parse(optimizer={"kind": "nadam", "betas": [0.9, 1.5]})
    with pytest.raises(InputError, match="nesterov: true needs momentum > 0"):
        _parse(optimizer={"kind": "sgd", "momentum": 0})
    with pytest.raises(InputError, match=r"optimizer\.kind: 'adamm' is not one of .*'adam'"):
        _parse(optimizer={"kind": "adamm"})


def test_constant_and_exponential_lrs() -> None:
    assert _lrs(ConstantSchedule(), 3, 10) == [1.0, 1.0, 1.0]
    got = _lrs(ExponentialSchedule(), 5, 300, lr=5e-4)
    assert got == pytest.approx([5e-4 * 0.985**e for e in range(5)])


def test_poly_lrs_follow_nnunet() -> None:
    # lr_e = 0.01 * (1 - e / 10)**0.9, reaching 0 after the last epoch
    got = _lrs(PolySchedule(), 11, 10, lr=0.01)
    assert got == pytest.approx([0.01 * (1 - e / 10) ** 0.9 for e in range(11)])
    assert got[-1] == 0.0


def test_cosine_lrs_with_min_lr_and_period() -> None:
    # T = total = 4: lr_e = 0.1 + 0.9 * (1 + cos(pi e / 4)) / 2, held at 0.1 after e = 4
    got = _lrs(CosineSchedule(min_lr=0.1), 6, 4)
    want = [0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * e / 4)) for e in range(5)] + [0.1]
    assert got == pytest.approx(want)
    # paper 003: T_max = 100 while training 30 epochs
    got = _lrs(CosineSchedule(period_epochs=100), 30, 30, lr=0.1)
    assert got == pytest.approx([0.1 * 0.5 * (1 + math.cos(math.pi * e / 100)) for e in range(30)])


def test_step_lrs_follow_paper_003() -> None:
    got = _lrs(StepSchedule(step_size=3, gamma=0.8), 7, 20, lr=0.05)
    assert got == pytest.approx([0.05, 0.05, 0.05, 0.04, 0.04, 0.04, 0.032])


def test_linear_warmup_then_schedule_over_the_remaining_epochs() -> None:
    # W = 3: ramp (e + 1) / 4 for e < 3, then poly over the remaining 5 epochs: (1 - t / 5)**0.9
    got = _lrs(PolySchedule(warmup_epochs=3), 8, 8)
    want = [0.25, 0.5, 0.75] + [(1 - t / 5) ** 0.9 for t in range(5)]
    assert got == pytest.approx(want)


def test_schedule_state_round_trips_through_a_checkpoint() -> None:
    cfg = CosineSchedule(warmup_epochs=2, min_lr=1e-4)

    def fresh() -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
        torch.manual_seed(0)
        optimizer = build_optimizer(SGDConfig(lr=0.1), nn.Linear(3, 1).parameters())
        return optimizer, build_scheduler(cfg, optimizer, total_epochs=10)

    optimizer, scheduler = fresh()
    for _ in range(4):
        optimizer.step()
        scheduler.step()
    buffer = io.BytesIO()
    torch.save({"opt": optimizer.state_dict(), "sched": scheduler.state_dict()}, buffer)
    continued = [scheduler.get_last_lr()[0]]
    for _ in range(3):
        optimizer.step()
        scheduler.step()
        continued.append(optimizer.param_groups[0]["lr"])

    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)  # only plain numbers in the scheduler state
    optimizer, scheduler = fresh()
    optimizer.load_state_dict(state["opt"])
    scheduler.load_state_dict(state["sched"])
    resumed = [scheduler.get_last_lr()[0]]
    for _ in range(3):
        optimizer.step()
        scheduler.step()
        resumed.append(optimizer.param_groups[0]["lr"])
    assert resumed == pytest.approx(continued)
    assert resumed[0] == pytest.approx(1e-4 + (0.1 - 1e-4) * 0.5 * (1 + math.cos(math.pi * 2 / 8)))


def test_schedule_validation_messages() -> None:
    with pytest.raises(InputError, match=r"schedule\.gamma: Input should be greater than 0"):
        _parse(schedule={"kind": "exponential", "gamma": 0})
    with pytest.raises(InputError, match=r"schedule\.step_size: required field is missing"):
        _parse(schedule={"kind": "step"})
    with pytest.raises(InputError, match=r"schedule\.warmup_epochs: .*greater than or equal to 0"):
        _parse(schedule={"kind": "constant", "warmup_epochs": -1})
    # Warm-up vs train.epochs and cosine min_lr vs optimizer.lr span components: they are
    # trial-config rules (tests/trainables/engine/test_rules.py), not the builder's.


def test_an_unhandled_schedule_kind_raises_instead_of_running_constant() -> None:
    class _Cyclic(Frozen):
        kind: str = "cyclic"
        warmup_epochs: int = 0

    with pytest.raises(AssertionError, match=r"kind='cyclic'"):
        _lrs(_Cyclic(), 2, 2)


def test_fused_sgd_survives_a_first_step_skipped_by_the_grad_scaler() -> None:
    """GradScaler hands fused optimizers ``found_inf`` and the kernel skips the update; the
    momentum it leaves must be zeros (torch's own first step would leave ``empty_like``), so the
    next step equals a first step of unfused SGD."""
    cfg = SGDConfig(lr=0.01, momentum=0.99, nesterov=True)
    junk = torch.full((4096,), float("nan"))  # freed memory that empty_like could hand back
    del junk
    fused_param = torch.nn.Parameter(torch.ones(4096))
    fused = build_optimizer(cfg, [fused_param], fused=True)
    fused_param.grad = torch.full_like(fused_param, float("inf"))
    fused.grad_scale, fused.found_inf = None, torch.tensor(1.0)  # as GradScaler.step passes them
    fused.step()
    del fused.grad_scale, fused.found_inf
    assert torch.equal(fused_param.detach(), torch.ones(4096))  # skipped
    assert torch.equal(fused.state[fused_param]["momentum_buffer"], torch.zeros(4096))

    plain_param = torch.nn.Parameter(torch.ones(4096))
    plain = build_optimizer(cfg, [plain_param])
    for param, optimizer in ((fused_param, fused), (plain_param, plain)):
        param.grad = torch.full_like(param, 0.1)
        optimizer.step()

    torch.testing.assert_close(fused_param.detach(), plain_param.detach())
    torch.testing.assert_close(
        fused.state[fused_param]["momentum_buffer"], plain.state[plain_param]["momentum_buffer"]
    )


def test_fused_sgd_without_momentum_keeps_no_buffers() -> None:
    param = torch.nn.Parameter(torch.ones(3))
    optimizer = build_optimizer(SGDConfig(momentum=0.0, nesterov=False), [param], fused=True)

    assert "momentum_buffer" not in optimizer.state[param]
