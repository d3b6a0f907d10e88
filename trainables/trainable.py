"""The Ray Tune Trainable that drives the engine: the only module of ``trainables`` importing ray.

One Tune iteration is one epoch of :class:`TrialRunner`. Out-of-memory and divergence are
outcomes of a configuration, not failures of the machinery: the Trainable reports them as a final
result (``outcome`` and ``error``, ``done=True``) so Tune neither retries them nor stops the
sweep, and the tracking layer records the run as FAILED (tagged ``infeasible`` for memory). Any
other exception propagates, so Tune's retries (``max_failures``) and error handling apply.

The engine's runner tracks the best epoch by the sweep's metric; every result carries its
``best/epoch`` and ``best/<metric>``, and every Tune checkpoint directory holds the runner's
files (training state ``state.pt``, best model ``best.pt``, the best epoch's per-case
validation metrics ``per_case_val.csv``, and after the last epoch the held-out test of the best
weights ``per_case_test.csv``) plus the best epoch's ``preview.png`` and ``trial.json``. The last
epoch's result carries the test means (``test/dice_mean``..., ``test/cases``: 0 when the split
has no test cases). A trial stopped early (ASHA) is not tested: ``ablate test`` does it later.

Actors are reused across trials (``reset_config``); the prepared data of the previous trial is
kept when the next trial reads the same data config, which is most of a tiny trial's start-up.

Tune config layout (built by :mod:`orchestrator.sweep`)::

    {"ablate": {"metric", "mode", "cells"?},
     "trial": {"key", "cell", "seed", "config"}}        # grid search: one resolved trial
     or "cell": index, "sample": {dotted: value}, "__trial_index__": seed   # Optuna
"""

from __future__ import annotations

import functools
import gc
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from ray import tune

from trainables.config.dotted import apply_overrides, format_value
from trainables.config.trial import TrialConfig, parse_trial_config
from trainables.data.splits import KFoldSplit
from trainables.engine.checkpoint import BEST_MODEL_FILE, TRAINING_STATE_FILE
from trainables.engine.data import TrialData
from trainables.engine.memory import allocation_figure, is_out_of_memory
from trainables.engine.per_case import PER_CASE_FILE
from trainables.engine.precision import runtime_versions
from trainables.engine.preview import preview_png
from trainables.engine.runner import TrialDiverged, TrialOutOfMemory, TrialRunner
from trainables.engine.smoke import smoke_config

PREVIEW_FILE = "preview.png"  # the best epoch's preview, in each Tune checkpoint directory
TRIAL_META_FILE = "trial.json"  # the trial's failure (if any), in each Tune checkpoint dir
__all__ = ["BEST_MODEL_FILE", "PER_CASE_FILE", "TRAINING_STATE_FILE", "AblateTrainable"]
_log = functools.partial(print, flush=True)  # worker output: the trial's log, not the console


@dataclass(frozen=True)
class TrialSpec:
    """What one Tune trial trains.

    Attributes:
        key: unique and stable across resumes (``<cell>/seed<i>``, ``<cell>/fold<k>/seed<i>``
            with folds; Optuna adds the trial id).
        cell: the results-table row the trial belongs to (seeds and folds pooled).
        seed: the repeat index, also the config's ``seed``.
        config: the validated trial config.
    """

    key: str
    cell: str
    seed: int
    config: TrialConfig

    @property
    def fold(self) -> int | None:
        """The cross-validation fold the trial validates on; None for a hold-out split."""
        split = self.config.data.split
        return split.fold if isinstance(split, KFoldSplit) else None


@dataclass(frozen=True)
class TrialIdentity:
    """Who a Tune trial is, read from its config without validating it (so a trial whose
    sampled config is invalid can still be named and tracked).

    Attributes:
        key, cell, seed: as in :class:`TrialSpec`.
        config: the unvalidated trial config dict (overrides and seed applied).
        source: how errors name the trial (``trial <key>`` or ``sampled trial <id>``).
    """

    key: str
    cell: str
    seed: int
    config: dict[str, Any]
    source: str
    smoke: bool = False

    def validate(self) -> TrialSpec:
        """The validated trial (shrunk by ``smoke_config`` for a ``--smoke`` Optuna sweep, as
        the driver shrinks grid trials). Raises InputError naming the trial when its config is
        invalid."""
        cfg = parse_trial_config(self.config, source=self.source)
        if self.smoke:
            cfg = smoke_config(cfg)
        return TrialSpec(self.key, self.cell, self.seed, cfg)


def trial_identity(tune_config: dict[str, Any], trial_id: str) -> TrialIdentity:
    """The key, cell, seed and raw config a Tune config describes."""
    if "trial" in tune_config:  # grid search: resolved and validated in the driver
        t = tune_config["trial"]
        return TrialIdentity(t["key"], t["cell"], int(t["seed"]), t["config"], f"trial {t['key']}")
    meta = tune_config["ablate"]
    cell = meta["cells"][int(tune_config.get("cell", 0))]
    seed = int(tune_config.get("__trial_index__", 0))
    sampled: dict[str, Any] = tune_config.get("sample", {})
    # onto the cell as written (no defaults filled in), as the grid applies its overrides
    data = apply_overrides(cell["config"], {**sampled, "seed": seed})
    names = [f"{p.rsplit('.', 1)[-1]}={format_value(v)}" for p, v in sampled.items()]
    label = ",".join([cell["label"], *names])
    key, source = f"{label}/seed{seed}#{trial_id}", f"sampled trial {trial_id}"
    return TrialIdentity(key, label, seed, data, source, bool(meta.get("smoke")))


def resolve_trial(tune_config: dict[str, Any], trial_id: str) -> TrialSpec:
    """The trial a Tune config describes (used by the worker and by the driver's callbacks).

    Raises:
        InputError: the trial's config is invalid (a sampled combination no check foresaw).
    """
    return trial_identity(tune_config, trial_id).validate()


class AblateTrainable(tune.Trainable):
    """Adapts :class:`TrialRunner` to Tune: one ``step`` is one epoch.

    Results are the engine's metrics (``train/loss``, ``val/dice_mean``, ``perf/epoch_s``,
    ``best/epoch``, ``best/<metric>``...) plus ``trial_key``, ``cell``, ``split_hash``, the
    ``env/`` versions (torch, CUDA, cuDNN, GPU) and, on the last epoch, ``done``. When the
    runner's best epoch improves, its preview PNG is drawn.
    Subclasses may wrap :meth:`run_epoch` (the test suite's fault injection does).
    """

    def setup(self, config: dict[str, Any]) -> None:
        self._data: tuple[str, TrialData] | None = None
        self._start(config)

    def _start(self, config: dict[str, Any]) -> None:
        meta = config["ablate"]
        self.spec = resolve_trial(config, self.trial_id)
        self.metric: str = meta["metric"]
        self.preview: bytes | None = None  # of the best epoch
        self.failure: dict[str, str] | None = None
        self.runner: TrialRunner | None = None
        try:
            self.runner = TrialRunner(
                self.spec.config,
                progress=_log,
                data=self._reusable_data(),
                metric=self.metric,
                mode=meta["mode"],
            )
        except Exception as err:  # out of memory while building: an outcome, reported by step()
            self.failure = _outcome(err)
            if self.failure is None:
                raise
        if self.runner is not None:
            self._data = (_data_key(self.spec.config), self.runner.data)

    def _reusable_data(self) -> TrialData | None:
        """The previous trial's prepared data when this trial reads the same data config."""
        if self._data is not None and self._data[0] == _data_key(self.spec.config):
            return self._data[1]
        return None

    def step(self) -> dict[str, Any]:
        if self.failure is not None or self.runner is None:
            return self._final_failure()
        try:
            metrics = self.run_epoch(self.runner)
        except Exception as err:
            self.failure = _outcome(err)
            if self.failure is None:
                raise
            return self._final_failure()
        if self.runner.best.epoch == self.runner.epoch:  # this epoch is the new best
            self.preview = _safe_preview(self.runner)
        done = self.runner.epoch >= self.spec.config.train.epochs
        versions = runtime_versions(self.runner.device)  # env/...: tagged on the MLflow run
        versions["env/precision"] = self.runner.precision  # as trained: fp16 is fp32 on a CPU
        return {**metrics, **self._identity(), **versions, "done": done}

    def run_epoch(self, runner: TrialRunner) -> dict[str, float]:
        """One epoch of the engine (the hook a test subclass wraps to inject faults)."""
        return runner.run_epoch()

    def _identity(self) -> dict[str, Any]:
        split = self.runner.data.split.hash if self.runner is not None else ""
        return {"trial_key": self.spec.key, "cell": self.spec.cell, "split_hash": split}

    def _final_failure(self) -> dict[str, Any]:
        assert self.failure is not None
        epoch = float(self.runner.epoch) if self.runner is not None else 0.0
        return {**self.failure, **self._identity(), "epoch": epoch, "done": True}

    def save_checkpoint(self, checkpoint_dir: str) -> None:
        """Into Tune's checkpoint directory: the runner's files (training state, best model,
        per-case metrics), the best epoch's preview and the trial's failure, if any."""
        out = Path(checkpoint_dir)
        if self.runner is not None:
            self.runner.save(out)
        if self.preview is not None:
            (out / PREVIEW_FILE).write_bytes(self.preview)
        (out / TRIAL_META_FILE).write_text(json.dumps({"failure": self.failure}))

    def load_checkpoint(self, checkpoint: str | dict[str, Any]) -> None:
        folder = Path(str(checkpoint))
        self.failure = json.loads((folder / TRIAL_META_FILE).read_text())["failure"]
        if self.runner is not None and (folder / TRAINING_STATE_FILE).is_file():
            self.runner.restore(folder)
        preview = folder / PREVIEW_FILE
        self.preview = preview.read_bytes() if preview.is_file() else None

    def reset_config(self, new_config: dict[str, Any]) -> bool:
        """Reuse this actor (and its prepared data) for another trial.

        Errors propagate: Tune treats a failed reset as a failure of the new trial (retries,
        callbacks), whereas returning False would abort that trial without either.
        """
        self._release()
        self._start(new_config)
        return True

    def cleanup(self) -> None:
        self._release()

    def _release(self) -> None:
        self.runner = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _data_key(cfg: TrialConfig) -> str:
    return json.dumps(cfg.data.model_dump(mode="json"), sort_keys=True)


def _outcome(err: BaseException) -> dict[str, str] | None:
    """``{"outcome": "infeasible"|"diverged", "error": message}``, or None for real failures."""
    if isinstance(err, TrialDiverged):
        return {"outcome": "diverged", "error": str(err)}
    if isinstance(err, TrialOutOfMemory):
        return {"outcome": "infeasible", "error": str(err)}
    if is_out_of_memory(err):  # outside an epoch, e.g. while the model moves to the device
        return {"outcome": "infeasible", "error": f"out of memory: {allocation_figure(err)}"}
    return None


def _safe_preview(runner: TrialRunner) -> bytes | None:
    """The preview PNG of the current model; None (with a note) if it cannot be drawn."""
    try:
        return preview_png(runner)
    except Exception as err:  # a missing preview must never fail the trial
        _log(f"preview skipped: {type(err).__name__}: {err}")
        return None
