"""The training step, built once: what ``TrialRunner`` trains with and ``ablate bench`` times.

:func:`build_train_step` creates the model (seeded, warm-started from ``train.init``, compiled
when ``train.compile``), the loss, optimizer, lr schedule and GradScaler, and settles the device,
the effective precision and cuDNN; :meth:`TrainStep.step` is one optimizer step. Because the
benchmark and the epoch loop call the same object, a benchmark times exactly what training runs.
The speed switches of ``train.speed`` (:class:`~trainables.config.trial.SpeedConfig`) are applied
here and only here: fused norm + activation (in the model), channels-last, CUDA graphs
(:mod:`trainables.engine.graphs`), fused optimizer steps, uint8 labels (cast at the loss).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from trainables.config.trial import TrialConfig
from trainables.data.labels import LabelScheme
from trainables.engine.checkpoint import apply_init
from trainables.engine.graphs import CapturedStep
from trainables.engine.precision import autocast_context, effective_precision, resolve_device
from trainables.losses import build_loss, output_channels
from trainables.models import build_model
from trainables.models.fused_norm import FusedInstanceNormAct
from trainables.optim import build_optimizer, build_scheduler


@dataclass(frozen=True)
class StepOptions:
    """Benchmark-only switches (the trial's own are ``train.speed``). Defaults: the plain step.

    Attributes:
        compile_loss: ``torch.compile`` the loss as well (``cfg.train.compile`` is the model).
    """

    compile_loss: bool = False


@dataclass
class TrainStep:
    """Model, loss, optimizer, schedule and scaler of one trial, and its optimizer step.

    Attributes:
        model: the eager module (validation, checkpoints); ``step_model`` may compile it.
        loss_fn: the eager loss (deep-supervision wrapper); ``step_loss`` may compile it.
        precision: the effective precision (``fp32``, ``fp16`` or ``bf16``) on ``device``.
        memory_format: ``channels_last(_3d)`` the input is converted to, or None.
        captured: the CUDA-graphed forward/backward (``train.speed.cuda_graphs`` on CUDA).
        iteration: completed optimizer steps (drives ``train.freeze``).
    """

    cfg: TrialConfig
    model: nn.Module
    step_model: nn.Module
    loss_fn: nn.Module
    step_loss: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    device: torch.device
    precision: str
    memory_format: torch.memory_format | None = None
    captured: CapturedStep | None = None
    iteration: int = 0

    def step(self, image: Tensor, label: Tensor) -> Tensor:
        """One optimizer step on ``image`` ``(B, C, *S)`` float32 and ``label`` ``(B, *S)``
        int64 or uint8 internal codes, both on ``device``; returns the detached scalar loss
        (on the device: no host sync per step)."""
        self._apply_freeze()
        if self.memory_format is not None:
            image = image.contiguous(memory_format=self.memory_format)
        if self.captured is not None:
            loss = self.captured.run(self._forward_backward, image, label)
        else:
            self.optimizer.zero_grad(set_to_none=True)
            loss = self._forward_backward(image, label)
        self._optimizer_step()
        self.iteration += 1
        return loss.detach()

    def hidden_memory_bytes(self) -> int:
        """GPU memory the step holds that ``max_memory_allocated`` misses: a CUDA graph's pool
        space for its activations (0 without a captured graph)."""
        return self.captured.pool_free_bytes if self.captured is not None else 0

    def _forward_backward(self, image: Tensor, label: Tensor) -> Tensor:
        """Forward under autocast, the float32 loss, the scaled backward; returns the loss."""
        cache = self.captured is None  # autocast's weight cache must not span a graph capture
        with autocast_context(self.precision, self.device, cache_enabled=cache):
            output = self.step_model(image)
        loss = self.step_loss(output, label.long())  # uint8 labels become int64 here only
        self.scaler.scale(loss).backward()
        return loss

    def _optimizer_step(self) -> None:
        """Unscale and clip (when configured), step the optimizer and update the scaler."""
        if self.cfg.train.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.train.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()

    def _apply_freeze(self) -> None:
        """Two-stage training: the named sub-module stays frozen for its first iterations."""
        freeze = self.cfg.train.freeze
        if freeze is None:
            return
        frozen = self.iteration < freeze.iterations
        module = self.model.get_submodule(freeze.module)
        module.train(not frozen)  # frozen also means fixed batch-norm statistics
        for p in module.parameters():
            p.requires_grad_(not frozen)

    def training_states(self) -> dict[str, dict[str, Any]]:
        """``optimizer``, ``scheduler`` and ``scaler`` state dicts (a training state's extras)."""
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
        }

    def load_training_states(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`training_states` plus the model weights and iteration count."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.iteration = int(state["iteration"])


def build_train_step(
    cfg: TrialConfig,
    scheme: LabelScheme,
    in_channels: int,
    options: StepOptions | None = None,
    progress: Callable[[str], None] | None = None,
) -> TrainStep:
    """Everything one optimizer step needs, on ``cfg.device``, from ``torch.manual_seed(cfg.seed)``.

    Args:
        scheme: the internal label scheme (output channels of the model and the loss).
        in_channels: input modalities.
        progress: told how many warm-start keys were skipped, if any.
    """
    options, speed = options or StepOptions(), cfg.train.speed
    device = resolve_device(cfg.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed patch shapes: autotune once (nnU-Net)
    precision = effective_precision(cfg.train.precision, device)
    if precision != cfg.train.precision and progress is not None:
        progress(f"train.precision {cfg.train.precision} runs as {precision} on the CPU")
    model = _build_model(cfg, scheme, in_channels, device, progress)
    memory_format = _memory_format(cfg) if speed.channels_last else None
    if memory_format is not None:
        model = model.to(memory_format=memory_format)
    loss_fn = build_loss(cfg.loss, scheme).to(device)
    optimizer = build_optimizer(cfg.optimizer, model.parameters(), fused=speed.fused_optimizer)
    train = TrainStep(
        cfg=cfg,
        model=model,
        step_model=torch.compile(model) if cfg.train.compile else model,
        loss_fn=loss_fn,
        step_loss=torch.compile(loss_fn) if options.compile_loss else loss_fn,
        optimizer=optimizer,
        scheduler=build_scheduler(cfg.schedule, optimizer, cfg.train.epochs),
        scaler=torch.amp.GradScaler(device.type, enabled=precision == "fp16"),
        device=device,
        precision=precision,
        memory_format=memory_format,
    )
    if speed.cuda_graphs and device.type == "cuda":
        params = [p for group in optimizer.param_groups for p in group["params"]]
        train.captured = CapturedStep(params, lambda: optimizer.zero_grad(set_to_none=True))
    elif speed.cuda_graphs and progress:
        progress(f"train.speed.cuda_graphs ignored: the device is {device}, not CUDA")
    return train


def _build_model(
    cfg: TrialConfig,
    scheme: LabelScheme,
    in_channels: int,
    device: torch.device,
    progress: Callable[[str], None] | None,
) -> nn.Module:
    """The seeded model on ``device``, warm-started from ``train.init`` when set."""
    torch.manual_seed(cfg.seed)
    out_channels = output_channels(cfg.loss, scheme)
    fused = cfg.train.speed.fused_norm_act
    model = build_model(cfg.model, in_channels, out_channels, fused_norm_act=fused).to(device)
    if fused and progress and not any(isinstance(m, FusedInstanceNormAct) for m in model.modules()):
        # Only instance norm + (Leaky)ReLU blocks fuse: say so, or a timing row would claim it.
        norm = getattr(cfg.model, "norm", None)
        which = f"model.kind {cfg.model.kind}" + (f" with norm {norm}" if norm else "")
        progress(
            f"train.speed.fused_norm_act ignored: {which} has no block it fuses "
            "(instance norm + LeakyReLU, in the U-Nets with norm: instance)"
        )
    if cfg.train.init is not None:
        skipped = apply_init(model, cfg.train.init)
        if skipped and progress:
            progress(f"warm start: {len(skipped)} keys not loaded (e.g. {skipped[:3]})")
    return model


def _memory_format(cfg: TrialConfig) -> torch.memory_format:
    """``channels_last_3d`` for volumes, ``channels_last`` for 2-D slices."""
    return torch.channels_last_3d if cfg.model.input_dims == 3 else torch.channels_last
