"""One trial: build everything from a :class:`TrialConfig` and run it epoch by epoch.

:class:`TrialRunner` is what both ``ablate train`` and the Ray Tune Trainable drive: ``run_epoch``
returns the epoch's metrics, ``state_dict``/``load_state_dict`` checkpoint it. Every epoch reseeds
the RNGs from (seed, epoch) and draws its samples from (seed, epoch, index), so an epoch after a
restore is identical to the same epoch of an uninterrupted run.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from trainables.data.augment import augment_batch
from trainables.data.loader import DevicePrefetcher, PatchDataset, make_train_loader
from trainables.engine.checkpoint import apply_init, restore_state, trial_state
from trainables.engine.config import TrialConfig
from trainables.engine.data import TrialData, prepare_trial_data
from trainables.engine.memory import allocation_figure, is_out_of_memory
from trainables.engine.precision import (
    autocast_context,
    effective_precision,
    peak_memory_gib,
    resolve_device,
)
from trainables.engine.validation import validate
from trainables.losses import build_loss, output_channels
from trainables.models import build_model
from trainables.optim import build_optimizer, build_scheduler

Progress = Callable[[str], None]


class TrialDiverged(RuntimeError):
    """The training loss became NaN or infinite; the trial stops instead of logging NaN metrics."""


class TrialOutOfMemory(RuntimeError):
    """The configuration does not fit in the device's memory (tagged ``infeasible`` by sweeps)."""


class TrialRunner:
    """Owns the model, optimizer, scheduler, scaler and data of one trial.

    Args:
        cfg: the validated trial config.
        progress: optional callback for human-readable progress lines.
        data: prepared data to reuse (e.g. when a Tune actor is reused for another trial).
    """

    def __init__(
        self, cfg: TrialConfig, progress: Progress | None = None, data: TrialData | None = None
    ) -> None:
        self.cfg = cfg
        self.progress = progress
        self.device = resolve_device(cfg.device)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed patch shapes: autotune once (nnU-Net)
        self.precision = effective_precision(cfg.train.precision, self.device)
        self.data = data or prepare_trial_data(cfg.data, progress)
        self.epoch = 0  # completed epochs
        self.iteration = 0  # completed optimizer steps
        torch.manual_seed(cfg.seed)
        out_channels = output_channels(cfg.loss, self.data.scheme)
        self.model = build_model(cfg.model, len(self.data.modalities), out_channels).to(self.device)
        if cfg.train.init is not None:
            skipped = apply_init(self.model, cfg.train.init)
            if skipped and progress:
                progress(f"warm start: {len(skipped)} keys not loaded (e.g. {skipped[:3]})")
        self.step_model: nn.Module = torch.compile(self.model) if cfg.train.compile else self.model
        self.loss_fn = build_loss(cfg.loss, self.data.scheme).to(self.device)
        self.optimizer = build_optimizer(cfg.optimizer, self.model.parameters())
        self.scheduler = build_scheduler(cfg.schedule, self.optimizer, cfg.train.epochs)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        self.dataset = self._make_dataset()
        self._loader: DataLoader | None = None

    # ----------------------------------------------------------------------------- training
    def run_epoch(self) -> dict[str, float]:
        """Train one epoch, validate when due; return the metrics (DESIGN.md names)."""
        start = time.perf_counter()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        try:
            metrics = self.train_epoch()
            last = self.epoch + 1 == self.cfg.train.epochs
            if (self.epoch + 1) % self.cfg.validation.every == 0 or last:
                val_start = time.perf_counter()
                metrics.update(self._validate())
                metrics["perf/val_s"] = time.perf_counter() - val_start
        except Exception as err:
            if is_out_of_memory(err):
                raise TrialOutOfMemory(self._oom_message(err)) from err
            raise
        self.epoch += 1
        self.scheduler.step()
        metrics["epoch"] = float(self.epoch)
        metrics["perf/epoch_s"] = time.perf_counter() - start
        peak = peak_memory_gib(self.device)
        if peak is not None:
            metrics["perf/peak_gpu_mem_gib"] = peak
        return metrics

    def train_epoch(self) -> dict[str, float]:
        """One epoch of training steps without validation; returns train/ and perf/ metrics."""
        self._reseed(self.epoch)
        self.model.train()
        cfg = self.cfg.train
        generator = torch.Generator(self.device).manual_seed(_seed(self.cfg.seed, self.epoch, 1))
        loss_sum = torch.zeros((), device=self.device)  # on the device: no sync per step
        first_iteration = self.iteration + 1
        wait = 0.0
        start = time.perf_counter()
        batches = self._batches()
        for _ in range(cfg.iterations_per_epoch):
            tick = time.perf_counter()
            image, label = next(batches)
            wait += time.perf_counter() - tick
            if cfg.gpu_augmentation:
                image, label = augment_batch(image, label, self.cfg.augment, generator)
            loss_sum += self._step(image, label)
        mean_loss = loss_sum.item() / cfg.iterations_per_epoch  # the epoch's one host sync
        elapsed = time.perf_counter() - start
        if not math.isfinite(mean_loss):
            raise TrialDiverged(
                f"diverged: training loss is {mean_loss} in epoch {self.epoch + 1} (iterations "
                f"{first_iteration}-{self.iteration}); try a lower learning rate or fp32/bf16"
            )
        voxels = cfg.iterations_per_epoch * cfg.batch_size * math.prod(self.cfg.sampling.patch_size)
        return {
            "train/loss": mean_loss,
            "train/lr": self.optimizer.param_groups[0]["lr"],
            "perf/train_s": elapsed,
            "perf/voxels_per_s": voxels / elapsed,
            "perf/data_wait_s": wait,
        }

    def _step(self, image: Tensor, label: Tensor) -> Tensor:
        """One optimizer step; returns the detached loss, still on the device."""
        self._apply_freeze()
        self.optimizer.zero_grad(set_to_none=True)
        with autocast_context(self.precision, self.device):
            output = self.step_model(image)
        loss = self.loss_fn(output, label)  # losses reduce in float32 themselves
        self.scaler.scale(loss).backward()
        if self.cfg.train.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.train.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.iteration += 1
        return loss.detach()

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

    def _validate(self) -> dict[str, float]:
        def autocast() -> Any:
            return autocast_context(self.precision, self.device)

        return validate(self.model, self.loss_fn, self.cfg, self.data, self.device, autocast)

    # ------------------------------------------------------------------------------ data
    def _make_dataset(self) -> PatchDataset:
        train_ids = list(self.data.split.train)
        loads = [self.data.load(case_id) for case_id in train_ids]  # memmaps: cheap to hold
        augment = None if self.cfg.train.gpu_augmentation else self.cfg.augment
        return PatchDataset(
            load=loads.__getitem__,
            num_cases=len(loads),
            samples_per_epoch=self.cfg.train.iterations_per_epoch * self.cfg.train.batch_size,
            cfg=self.cfg.sampling,
            seed=self.cfg.seed,
            batch_size=self.cfg.train.batch_size,
            augment=augment,
        )

    def _batches(self) -> Iterator[tuple[Tensor, Tensor]]:
        """This epoch's batches on the device; the loader and its workers persist across epochs."""
        self.dataset.set_epoch(self.epoch)
        if self._loader is None:
            self._loader = make_train_loader(
                self.dataset,
                batch_size=self.cfg.train.batch_size,
                num_workers=self.cfg.train.num_workers,
                pin_memory=self.device.type == "cuda",
            )
        return iter(DevicePrefetcher(self._loader, self.device))

    def _reseed(self, epoch: int) -> None:
        torch.manual_seed(_seed(self.cfg.seed, epoch, 0))

    def _oom_message(self, err: BaseException) -> str:
        if self.device.type == "cuda":
            props = torch.cuda.get_device_properties(self.device)
            peak = peak_memory_gib(self.device) or 0.0
            peak_text = f"; peak {peak:.1f} GiB of {props.total_memory / 2**30:.1f} GiB"
        else:
            peak_text = f"; {allocation_figure(err)}"
        return (
            f"out of memory: model {self.cfg.model.kind} with batch {self.cfg.train.batch_size} "
            f"and patch {list(self.cfg.sampling.patch_size)} does not fit on "
            f"{self.device}{peak_text}"
        )

    # ------------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly where this trial is."""
        return trial_state(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        restore_state(self, state)


def _seed(*parts: int) -> int:
    """A 63-bit seed derived from several integers (stable across runs and platforms)."""
    return int(np.random.SeedSequence(list(parts)).generate_state(2, np.uint64)[0] >> 1)
