"""Optimizers and per-epoch learning-rate schedules: frozen configs and their builders.

Defaults follow the papers: Adam/RAdam lr 5e-4 (BTRSeg, 000), NAdam 3e-3 (FM-Net, 001), SGD
0.01 with Nesterov momentum 0.99 (nnU-Net, 002), AdamW 1e-4 with weight decay 1e-5 (paper 003's
SwinUNETR), RMSprop 1e-5 without momentum (paper 004). Weight decay defaults to 0 elsewhere: set
it per study (BTRSeg uses 1e-5, nnU-Net 3e-5). Optimizer field names are the keyword arguments of
the torch class, so a config maps onto its constructor one to one.

Schedules are stepped once per epoch: after ``e`` calls to ``scheduler.step()`` the lr of a
parameter group is ``base_lr * lr_factor(cfg, e, total_epochs, base_lr)``.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterable
from typing import Annotated, Any, Literal, assert_never

import torch
from pydantic import Field, model_validator
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LRScheduler

from trainables.config import Frozen

Beta = Annotated[float, Field(ge=0.0, lt=1.0)]


class _OptimizerBase(Frozen):
    """Fields every optimizer has: ``lr`` (> 0) and ``weight_decay`` (>= 0, L2 / decoupled).

    Attributes:
        lr: base learning rate, scaled each epoch by ``schedule`` (and its warm-up); each
            kind's default is its paper's (see the kind's heading).
        weight_decay: L2 penalty coefficient added to the gradient (torch's ``weight_decay``;
            decoupled, applied to the weights, for ``adamw``); 0: none. Default 0 except for
            ``adamw`` (1e-5): set it per study (BTRSeg: 1e-5, nnU-Net: 3e-5).
    """

    lr: float = Field(gt=0.0)
    weight_decay: float = Field(default=0.0, ge=0.0)


class _AdamFamily(_OptimizerBase):
    """Fields of Adam and its variants (torch's defaults).

    Attributes:
        betas: ``(beta1, beta2)``, decay rates of the running averages of the gradient and of
            its square, each in [0, 1) (torch's and FM-Net's (0.9, 0.999)).
        eps: term added to the denominator ``sqrt(v) + eps`` for numerical stability (torch's
            1e-8).
    """

    betas: tuple[Beta, Beta] = (0.9, 0.999)
    eps: float = Field(default=1e-8, gt=0.0)


class AdamConfig(_AdamFamily):
    """``torch.optim.Adam`` (BTRSeg: lr 5e-4, weight decay 1e-5)."""

    kind: Literal["adam"] = "adam"
    lr: float = Field(default=5e-4, gt=0.0)


class RAdamConfig(_AdamFamily):
    """``torch.optim.RAdam``, rectified Adam (BTRSeg's alternative optimizer)."""

    kind: Literal["radam"] = "radam"
    lr: float = Field(default=5e-4, gt=0.0)


class NAdamConfig(_AdamFamily):
    """``torch.optim.NAdam``, Nesterov Adam (FM-Net: lr 3e-3, betas (0.9, 0.999))."""

    kind: Literal["nadam"] = "nadam"
    lr: float = Field(default=3e-3, gt=0.0)


class AdamWConfig(_AdamFamily):
    """``torch.optim.AdamW`` with decoupled weight decay (paper 003: lr 1e-4, wd 1e-5).

    Attributes:
        weight_decay: decoupled weight decay: each step shrinks the weights by
            ``lr * weight_decay`` (not added to the gradient); paper 003: 1e-5.
    """

    kind: Literal["adamw"] = "adamw"
    lr: float = Field(default=1e-4, gt=0.0)
    weight_decay: float = Field(default=1e-5, ge=0.0)


class SGDConfig(_OptimizerBase):
    """``torch.optim.SGD`` (nnU-Net: lr 0.01, Nesterov momentum 0.99; paper 003: lr 0.1).

    Attributes:
        lr: base learning rate (nnU-Net's initial lr: 0.01).
        weight_decay: L2 penalty added to the gradient; default 0, nnU-Net uses 3e-5.
        momentum: momentum factor, in [0, 1) (nnU-Net: 0.99; no dampening).
        nesterov: Nesterov momentum (nnU-Net: true); needs ``momentum`` > 0.
    """

    kind: Literal["sgd"] = "sgd"
    lr: float = Field(default=0.01, gt=0.0)
    momentum: float = Field(default=0.99, ge=0.0, lt=1.0)
    nesterov: bool = True

    @model_validator(mode="after")
    def _nesterov_needs_momentum(self) -> SGDConfig:
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov: true needs momentum > 0")
        return self


class RMSpropConfig(_OptimizerBase):
    """``torch.optim.RMSprop`` (paper 004's C-LSTM stage: lr 1e-5, momentum 0).

    Attributes:
        alpha: smoothing constant of the running average of squared gradients, in (0, 1)
            (torch's 0.99).
        momentum: momentum factor, in [0, 1) (paper 004: 0, none).
        eps: term added to the denominator ``sqrt(v) + eps`` for numerical stability (torch's
            1e-8).
    """

    kind: Literal["rmsprop"] = "rmsprop"
    lr: float = Field(default=1e-5, gt=0.0)
    alpha: float = Field(default=0.99, gt=0.0, lt=1.0)
    momentum: float = Field(default=0.0, ge=0.0, lt=1.0)
    eps: float = Field(default=1e-8, gt=0.0)


OptimizerConfig = Annotated[
    AdamConfig | RAdamConfig | NAdamConfig | AdamWConfig | SGDConfig | RMSpropConfig,
    Field(discriminator="kind"),
]

_OPTIMIZERS: dict[str, type[Optimizer]] = {
    "adam": torch.optim.Adam,
    "radam": torch.optim.RAdam,
    "nadam": torch.optim.NAdam,
    "adamw": torch.optim.AdamW,
    "sgd": torch.optim.SGD,
    "rmsprop": torch.optim.RMSprop,
}


def build_optimizer(cfg: OptimizerConfig, params: Iterable[Any], fused: bool = False) -> Optimizer:
    """The torch optimizer for ``cfg``.

    Args:
        cfg: an optimizer config.
        params: tensors or param-group dicts, as for any torch optimizer (consumed once).
        fused: ``train.speed.fused_optimizer``: torch's fused kernel where the class has one
            (Adam, AdamW, SGD; CUDA and, since torch 2.4, CPU), else the multi-tensor
            ``foreach`` path. Off: torch picks its default implementation.
    """
    params = list(params)
    if not params:
        raise ValueError("build_optimizer got no parameters to optimise")
    cls = _OPTIMIZERS[cfg.kind]
    kwargs = cfg.model_dump(exclude={"kind"})
    if fused:
        kwargs.update(implementation(cls))
    optimizer = cls(params, **kwargs)
    if kwargs.get("fused") and cls is torch.optim.SGD:
        _zero_momentum_buffers(optimizer)
    return optimizer


def _zero_momentum_buffers(optimizer: Optimizer) -> None:
    """Zeros as fused SGD's momentum buffers before its first step.

    Why: torch's fused SGD allocates them with ``empty_like`` inside its first step; when the
    fp16 GradScaler finds inf/NaN gradients on that step (likely at its initial scale of 2^16)
    the kernel skips the update and leaves them uninitialised, yet keeps them, and every later
    step builds momentum on that garbage. Zeros give the same first update as the
    first-step rule (``buf = g``; dampening is 0 here): ``buf = momentum * 0 + g``.
    """
    for group in optimizer.param_groups:
        if group["momentum"] == 0:
            continue
        for param in group["params"]:
            optimizer.state[param].setdefault("momentum_buffer", torch.zeros_like(param))


def implementation(cls: type[Optimizer]) -> dict[str, bool]:
    """``{"fused": True}`` where the constructor takes ``fused``, else ``{"foreach": True}``."""
    if "fused" in inspect.signature(cls.__init__).parameters:
        return {"fused": True}
    return {"foreach": True}


class _ScheduleBase(Frozen):
    """``warmup_epochs``: linear warm-up, ``lr = base * (e + 1) / (W + 1)`` for epochs ``e < W``;
    the schedule proper then starts at epoch ``W`` over the remaining ``total - W`` epochs
    (``W < train.epochs``, checked with the trial config).

    Attributes:
        warmup_epochs: epochs ``W`` of linear warm-up: 0-based epoch ``e < W`` runs at
            ``lr * (e + 1) / (W + 1)``; epoch ``W`` starts the schedule at the full lr, its
            ``t`` counting epochs from there. 0: no warm-up; must be < ``train.epochs``.
    """

    warmup_epochs: int = Field(default=0, ge=0)


class ConstantSchedule(_ScheduleBase):
    """Constant lr (after the optional warm-up)."""

    kind: Literal["constant"] = "constant"


class ExponentialSchedule(_ScheduleBase):
    """``lr = base * gamma**t`` (BTRSeg: gamma 0.985 per epoch).

    Attributes:
        gamma: factor the lr is multiplied by after every epoch (BTRSeg: 0.985); 1: constant.
    """

    kind: Literal["exponential"] = "exponential"
    gamma: float = Field(default=0.985, gt=0.0, le=1.0)


class PolySchedule(_ScheduleBase):
    """nnU-Net's poly schedule: ``lr = base * (1 - t / T)**exponent`` over ``T`` epochs.

    Attributes:
        exponent: power of the decay (nnU-Net: 0.9); ``T`` is ``train.epochs`` minus the
            warm-up, so the lr falls towards 0 at the end of training.
    """

    kind: Literal["poly"] = "poly"
    exponent: float = Field(default=0.9, gt=0.0)


class CosineSchedule(_ScheduleBase):
    """Cosine annealing: ``lr = min_lr + (base - min_lr) (1 + cos(pi t / T)) / 2``.

    Attributes:
        min_lr: the lr reached at ``t = T`` (absolute, <= the optimizer's lr), held afterwards.
        period_epochs: ``T`` (torch's ``T_max``); None: the epochs after warm-up. Paper 003
            uses ``T_max = 100`` with 30 epochs, so the lr never reaches ``min_lr``.
    """

    kind: Literal["cosine"] = "cosine"
    min_lr: float = Field(default=0.0, ge=0.0)
    period_epochs: int | None = Field(default=None, ge=1)


class StepSchedule(_ScheduleBase):
    """``lr = base * gamma**(t // step_size)`` (paper 003: step_size 3, gamma 0.8).

    Attributes:
        step_size: epochs between two lr drops (required; paper 003: 3).
        gamma: factor the lr is multiplied by at each drop (default 0.1, torch's ``StepLR``
            default; paper 003: 0.8).
    """

    kind: Literal["step"] = "step"
    step_size: int = Field(ge=1)
    gamma: float = Field(default=0.1, gt=0.0, le=1.0)


ScheduleConfig = Annotated[
    ConstantSchedule | ExponentialSchedule | PolySchedule | CosineSchedule | StepSchedule,
    Field(discriminator="kind"),
]


def lr_factor(cfg: ScheduleConfig, epoch: int, total_epochs: int, base_lr: float) -> float:
    """Multiplier of ``base_lr`` for (0-based) ``epoch`` of ``total_epochs``.

    Warm-up epochs ramp linearly to 1; the schedule proper sees ``t = epoch - warmup_epochs``
    over ``T = total_epochs - warmup_epochs`` epochs.
    """
    warmup = cfg.warmup_epochs
    if epoch < warmup:
        return (epoch + 1) / (warmup + 1)
    return _decay(cfg, epoch - warmup, total_epochs - warmup, base_lr)


def _decay(cfg: ScheduleConfig, t: int, horizon: int, base_lr: float) -> float:
    match cfg:
        case ConstantSchedule():
            return 1.0
        case ExponentialSchedule():
            return cfg.gamma**t
        case PolySchedule():  # clamped so epochs past the horizon stay at 0, not NaN
            return max(0.0, 1.0 - t / horizon) ** cfg.exponent
        case CosineSchedule():
            progress = min(t / (cfg.period_epochs or horizon), 1.0)
            lr = cfg.min_lr + (base_lr - cfg.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
            return lr / base_lr
        case StepSchedule():
            return cfg.gamma ** (t // cfg.step_size)
        case _:  # a new schedule kind must say its factor here, not fall back to constant
            assert_never(cfg)


def build_scheduler(cfg: ScheduleConfig, optimizer: Optimizer, total_epochs: int) -> LRScheduler:
    """A per-epoch scheduler for ``optimizer``: call ``step()`` once after each epoch.

    It is a :class:`~torch.optim.lr_scheduler.LambdaLR` over plain functions, so its
    ``state_dict()`` holds only numbers (loadable with ``torch.load(weights_only=True)``);
    rebuilding from the same config and loading the optimizer's and the scheduler's state
    resumes the same lr sequence.

    The config is assumed valid for the trial (see :mod:`trainables.config.rules`): warm-up
    shorter than ``total_epochs``, a cosine ``min_lr`` not above the optimizer's lr.
    """
    base_lrs = [group.get("initial_lr", group["lr"]) for group in optimizer.param_groups]
    lambdas = [_factor_function(cfg, total_epochs, lr) for lr in base_lrs]
    return LambdaLR(optimizer, lr_lambda=lambdas)


def _factor_function(cfg: ScheduleConfig, total_epochs: int, base_lr: float) -> Callable:
    # A closure (a plain function), not a callable object: LambdaLR saves the __dict__ of
    # callable objects in state_dict(), which would put config objects into checkpoints.
    def factor(epoch: int) -> float:
        return lr_factor(cfg, epoch, total_epochs, base_lr)

    return factor
