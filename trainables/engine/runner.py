"""One trial: build everything from a :class:`TrialConfig` and run it epoch by epoch.

:class:`TrialRunner` is what both ``ablate train`` and the Ray Tune Trainable drive: ``run_epoch``
returns the epoch's metrics (with ``best/epoch`` and ``best/<metric>`` of the :class:`BestEpoch`
it keeps; the last epoch also evaluates the best epoch's weights once on the split's test cases,
:mod:`trainables.engine.held_out`), ``state_dict``/``load_state_dict`` are its training state
and ``save``/``restore`` write and read it with the best model
(:mod:`trainables.engine.checkpoint`). Every epoch reseeds the RNGs from (seed, epoch) and draws
its samples from (seed, epoch, index), so an epoch after a restore is identical to the same
epoch of an uninterrupted run.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from trainables.config.postprocess import PostprocessConfig
from trainables.config.trial import TrialConfig
from trainables.data.augment import augment_sources
from trainables.data.loader import DevicePrefetcher, PatchDataset, make_train_loader
from trainables.data.sources import SourceBatch
from trainables.engine.best import DEFAULT_METRIC, DEFAULT_MODE, BestEpoch
from trainables.engine.checkpoint import (
    BEST_MODEL_FILE,
    TRAINING_STATE_FILE,
    load_checkpoint,
    make_checkpoint,
    save_checkpoint,
)
from trainables.engine.data import TrialData, applied_config, prepare_trial_data
from trainables.engine.held_out import (
    TEST_PER_CASE_FILE,
    TestResult,
    evaluate_cases,
    read_test_csv,
    split_test_cases,
    weights_loaded,
)
from trainables.engine.memory import allocation_figure, is_out_of_memory
from trainables.engine.per_case import PER_CASE_FILE, read_per_case_csv, write_per_case_csv
from trainables.engine.postprocess import region_codes, with_postprocess
from trainables.engine.postprocess_decide import Decision, decide_on_validation
from trainables.engine.precision import StepTimer, autocast_context, peak_memory_gib
from trainables.engine.step import TrainStep, build_train_step
from trainables.engine.validation import ValidationResult, validate

Progress = Callable[[str], None]


class TrialDiverged(RuntimeError):
    """The training loss became NaN or infinite; the trial stops instead of logging NaN metrics."""


class TrialOutOfMemory(RuntimeError):
    """The configuration does not fit in the device's memory (tagged ``infeasible`` by sweeps)."""


class TrialRunner:
    """Owns the training step (model, optimizer, scheduler, scaler), the data and the best
    epoch of one trial.

    Args:
        cfg: the validated trial config (``self.cfg`` is it with the preprocessing the data
            applied, :func:`~trainables.engine.data.applied_config`).
        progress: optional callback for human-readable progress lines.
        data: prepared data to reuse (e.g. when a Tune actor is reused for another trial).
        metric, mode: what selects the best epoch (the sweep's metric and mode).
    """

    def __init__(
        self,
        cfg: TrialConfig,
        progress: Progress | None = None,
        data: TrialData | None = None,
        metric: str = DEFAULT_METRIC,
        mode: str = DEFAULT_MODE,
    ) -> None:
        self.progress = progress
        self.data = data or prepare_trial_data(cfg.data, progress)
        self.cfg = applied_config(cfg, self.data)  # what checkpoints record: the data's stats
        self.epoch = 0  # completed epochs
        self.trainer: TrainStep = build_train_step(
            cfg, self.data.scheme, len(self.data.modalities), progress=progress
        )
        self.best = BestEpoch(metric, mode)
        self._check_postprocess()
        self.dataset = self._make_dataset()
        self._loader: DataLoader | None = None
        self.test: TestResult | None = None  # the held-out test of the best epoch's weights

    def _check_postprocess(self) -> None:
        """Regions the labels lack are refused before training; a CT (binary) trial asking
        for the BraTS rule is told, not silently the same as 0."""
        for region in self.cfg.validation.test_postprocess.largest_component_regions:
            region_codes(self.data.scheme, region)
        min_et = self.cfg.validation.test_postprocess.min_et_voxels
        if min_et and "et" not in self.data.scheme.regions and self.progress:
            self.progress("validation.test_postprocess.min_et_voxels ignored: binary labels")

    # The step's parts, under the names the rest of the engine (and its tests) use.
    device = property(lambda self: self.trainer.device)
    precision = property(lambda self: self.trainer.precision)
    model = property(lambda self: self.trainer.model)
    step_model = property(lambda self: self.trainer.step_model)
    loss_fn = property(lambda self: self.trainer.loss_fn)
    optimizer = property(lambda self: self.trainer.optimizer)
    scheduler = property(lambda self: self.trainer.scheduler)

    @property
    def iteration(self) -> int:
        """Completed optimizer steps."""
        return self.trainer.iteration

    # ----------------------------------------------------------------------------- training
    def run_epoch(self) -> dict[str, float]:
        """Train one epoch, validate when due; return the metrics (DESIGN.md names)."""
        start = time.perf_counter()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        try:
            metrics = self.train_epoch()
            last = self.epoch + 1 == self.cfg.train.epochs
            per_case: list[dict[str, Any]] = []
            if (self.epoch + 1) % self.cfg.validation.every == 0 or last:
                val_start = time.perf_counter()
                result = self._validate()
                metrics.update(result.metrics)
                per_case = result.per_case
                metrics["perf/val_s"] = time.perf_counter() - val_start
        except Exception as err:
            if is_out_of_memory(err):
                raise TrialOutOfMemory(self._oom_message(err)) from err
            raise
        self.epoch += 1
        self.scheduler.step()
        self.best.update(metrics, self.epoch, self.iteration, self.model, per_case)
        metrics.update(self.best.metrics())
        if self.epoch == self.cfg.train.epochs:
            metrics.update(self._final_test())
        metrics["epoch"] = float(self.epoch)
        metrics["perf/epoch_s"] = time.perf_counter() - start
        peak = peak_memory_gib(self.device, self.trainer.hidden_memory_bytes())
        if peak is not None:
            metrics["perf/peak_gpu_mem_gib"] = peak
        return metrics

    def train_epoch(self) -> dict[str, float]:
        """One epoch of training steps without validation; returns train/ and perf/ metrics.

        ``perf/step_ms`` is the median step time without a host sync per step: CUDA events
        around each step, read once after the epoch (the device's time for the step alone), or
        the wall clock on a CPU. ``perf/data_wait_frac`` is the share of the epoch the host
        spent waiting for a batch (``perf/data_wait_s / perf/train_s``).
        """
        self._reseed(self.epoch)
        self.model.train()
        cfg = self.cfg.train
        # The transforms' parameters; which sample gets which transform comes with each sample
        # from the loader (host draws from (seed, epoch, index): reading a device draw back
        # would sync every step), so resumes reproduce both.
        generator = torch.Generator(self.device).manual_seed(_seed(self.cfg.seed, self.epoch, 1))
        patch = tuple(self.cfg.sampling.patch_size)
        labels = self.dataset.label_dtype  # the margin's labels arrive uint8 whatever it is
        loss_sum = torch.zeros((), device=self.device)  # on the device: no sync per step
        first_iteration = self.iteration + 1
        wait = 0.0
        timer = StepTimer(self.device)
        start = time.perf_counter()
        batches = self._batches()
        for _ in range(cfg.iterations_per_epoch):
            tick = time.perf_counter()
            batch = next(batches)
            wait += time.perf_counter() - tick
            image, label = augment_sources(batch, self.cfg.augment, patch, generator, labels)
            with timer:
                loss_sum += self.trainer.step(image, label)
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
            "perf/step_ms": timer.median_ms(),
            "perf/data_wait_s": wait,
            "perf/data_wait_frac": wait / elapsed,
        }

    def _validate(self) -> ValidationResult:
        def autocast() -> Any:
            return autocast_context(self.precision, self.device)

        return validate(self.model, self.loss_fn, self.cfg, self.data, self.device, autocast)

    def evaluate_test(self) -> TestResult | None:
        """The best epoch's weights on the split's test cases (whole volumes); None before any
        epoch had a finite metric. The model's current weights are left as they were."""
        if self.best.weights is None:
            return None
        with weights_loaded(self.model, self.best.weights) as model:
            self.test = evaluate_cases(
                model,
                self.cfg,
                split_test_cases(self.cfg, self.data),
                self.device,
                lambda: autocast_context(self.precision, self.device),
                progress=self.progress,
            )
        return self.test

    def decide_postprocess(self) -> Decision | None:
        """``largest_component: auto``: nnU-Net's rule on the validation cases with the best
        epoch's weights; ``self.cfg`` then carries the steps it chose (so the test pass, the
        saved model and ``ablate predict`` apply them). None when there is nothing to decide
        (already decided, or no epoch had a finite metric)."""
        if self.cfg.validation.test_postprocess.decided or self.best.weights is None:
            return None
        with weights_loaded(self.model, self.best.weights) as model:
            autocast = lambda: autocast_context(self.precision, self.device)  # noqa: E731
            decision = decide_on_validation(
                model, self.cfg, self.data, self.device, autocast, self.progress
            )
        self.cfg = with_postprocess(self.cfg, decision.config)
        return decision

    def _final_test(self) -> dict[str, float]:
        """``postprocess/...`` and ``perf/postprocess_s`` (when ``auto`` decides), ``test/...``
        means, ``test/cases`` and ``perf/test_s``, once, after the last epoch."""
        start = time.perf_counter()
        decision = self._out_of_memory_named("post-processing decision", self.decide_postprocess)
        decided = decision.metrics() if decision else {}
        if decision:
            decided["perf/postprocess_s"] = time.perf_counter() - start
        start = time.perf_counter()
        result = self._out_of_memory_named("test evaluation", self.evaluate_test)
        if result is None:
            return decided
        return {**decided, **result.metrics, "perf/test_s": time.perf_counter() - start}

    def _out_of_memory_named(self, what: str, work: Callable[[], Any]) -> Any:
        """``work()``; running out of memory is a :class:`TrialOutOfMemory` naming ``what``."""
        try:
            return work()
        except Exception as err:
            if is_out_of_memory(err):
                raise TrialOutOfMemory(f"{what}: {self._oom_message(err)}") from err
            raise

    # ------------------------------------------------------------------------------ data
    def _make_dataset(self) -> PatchDataset:
        train_ids = list(self.data.split.train)
        loads = [self.data.load(case_id) for case_id in train_ids]  # memmaps: cheap to hold
        return PatchDataset(
            load=loads.__getitem__,
            num_cases=len(loads),
            samples_per_epoch=self.cfg.train.iterations_per_epoch * self.cfg.train.batch_size,
            cfg=self.cfg.sampling,
            seed=self.cfg.seed,
            batch_size=self.cfg.train.batch_size,
            augment=self.cfg.augment,
            augment_in_workers=not self.cfg.train.gpu_augmentation,
            label_dtype=torch.uint8 if self.cfg.train.speed.uint8_labels else torch.int64,
        )

    def _batches(self) -> Iterator[SourceBatch]:
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
            peak = peak_memory_gib(self.device, self.trainer.hidden_memory_bytes()) or 0.0
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
        """The training state: everything needed to continue exactly where this trial is
        (RNG state is not needed: every epoch reseeds from (seed, epoch))."""
        return make_checkpoint(
            self.cfg.model_dump(mode="json"),
            self.model.state_dict(),
            self.epoch,
            self.iteration,
            self.best.summary(),
            **self.trainer.training_states(),
        )

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`state_dict` (best weights and rows: :meth:`restore`)."""
        self.trainer.load_training_states(state)
        self.epoch = int(state["epoch"])
        self.best.load_summary(state["best"])

    def best_model(self) -> dict[str, Any] | None:
        """The best model: the checkpoint format with the best epoch's weights and no
        optimizer state; None before any epoch had a finite metric."""
        if self.best.weights is None:
            return None
        config = self.cfg.model_dump(mode="json")
        return make_checkpoint(
            config, self.best.weights, self.best.epoch, self.best.iteration, self.best.summary()
        )

    def save(self, folder: str | Path) -> Path:
        """Write the training state, the best model, the best epoch's per-case validation
        metrics and, after the test pass, its per-case test metrics into ``folder``
        (``state.pt``, ``best.pt``, ``per_case_val.csv``, ``per_case_test.csv``)."""
        folder = Path(folder)
        save_checkpoint(self.state_dict(), folder / TRAINING_STATE_FILE)
        best = self.best_model()
        if best is not None:
            save_checkpoint(best, folder / BEST_MODEL_FILE)
        if self.best.per_case:
            write_per_case_csv(self.best.per_case, folder / PER_CASE_FILE)
        if self.test is not None and self.test.per_case:
            write_per_case_csv(self.test.per_case, folder / TEST_PER_CASE_FILE)
        return folder

    def restore(self, folder: str | Path) -> None:
        """Inverse of :meth:`save`; files that :meth:`save` did not write are skipped."""
        folder = Path(folder)
        self.load_state_dict(load_checkpoint(folder / TRAINING_STATE_FILE))
        if (folder / BEST_MODEL_FILE).is_file() and self.best.epoch > 0:
            best = load_checkpoint(folder / BEST_MODEL_FILE)
            self.best.weights, self.best.iteration = best["model"], int(best["iteration"])
            self._adopt_decided_postprocess(best["config"])
        if (folder / PER_CASE_FILE).is_file() and self.best.epoch > 0:
            self.best.per_case = read_per_case_csv(folder / PER_CASE_FILE)
        if (folder / TEST_PER_CASE_FILE).is_file():
            self.test = read_test_csv(folder / TEST_PER_CASE_FILE)

    def _adopt_decided_postprocess(self, saved: dict[str, Any]) -> None:
        """A best model saved after ``auto`` decided carries the steps: keep them, so a trial
        restored after its last epoch saves and tests what it decided."""
        given = self.cfg.validation.test_postprocess
        stored = saved.get("validation", {}).get("test_postprocess", {})
        if not given.decided and stored.get("largest_component", "auto") != "auto":
            self.cfg = with_postprocess(self.cfg, PostprocessConfig.model_validate(stored))


def _seed(*parts: int) -> int:
    """A 63-bit seed derived from several integers (stable across runs and platforms)."""
    return int(np.random.SeedSequence(list(parts)).generate_state(2, np.uint64)[0] >> 1)
