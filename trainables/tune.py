"""The Ray Tune Trainable that drives the engine: the only module of ``trainables`` importing ray.

One Tune iteration is one epoch of :class:`TrialRunner`. Out-of-memory and divergence are
outcomes of a configuration, not failures of the machinery: the Trainable reports them as a final
result (``outcome`` and ``error``, ``done=True``) so Tune neither retries them nor stops the
sweep, and the tracking layer records the run as FAILED (tagged ``infeasible`` for memory). Any
other exception propagates, so Tune's retries (``max_failures``) and error handling apply.

Actors are reused across trials (``reset_config``); the prepared data of the previous trial is
kept when the next trial reads the same data config, which is most of a tiny trial's start-up.

Tune config layout (built by :mod:`orchestrator.sweep`)::

    {"ablate": {"metric", "mode", "faults", "cells"?},
     "trial": {"key", "cell", "seed", "config"}}        # grid search: one resolved trial
     or "cell": index, "sample": {dotted: value}, "__trial_index__": seed   # Optuna
"""

from __future__ import annotations

import contextlib
import functools
import gc
import json
import math
import resource
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from ray import tune

from trainables.config.dotted import apply_overrides, format_value
from trainables.engine.checkpoint import load_checkpoint, save_checkpoint
from trainables.engine.config import TrialConfig, parse_trial_config
from trainables.engine.data import TrialData
from trainables.engine.memory import allocation_figure, is_out_of_memory
from trainables.engine.preview import preview_png
from trainables.engine.runner import TrialDiverged, TrialOutOfMemory, TrialRunner

STATE_FILE, BEST_FILE, PREVIEW_FILE, META_FILE = "state.pt", "best.pt", "preview.png", "trial.json"
_log = functools.partial(print, flush=True)  # worker output: the trial's log, not the console


@dataclass(frozen=True)
class TrialSpec:
    """What one Tune trial trains.

    Attributes:
        key: unique and stable across resumes (``<cell>/seed<i>``; Optuna adds the trial id).
        cell: the results-table row the trial belongs to (seeds pooled).
        seed: the repeat index, also the config's ``seed``.
        config: the validated trial config.
        fault: test-only fault injection (``{"kind": "oom", "headroom_mib": N}``) or None.
    """

    key: str
    cell: str
    seed: int
    config: TrialConfig
    fault: dict[str, Any] | None = None


def resolve_trial(tune_config: dict[str, Any], trial_id: str) -> TrialSpec:
    """The trial a Tune config describes (used by the worker and by the driver's callbacks)."""
    meta = tune_config["ablate"]
    faults = meta.get("faults") or {}
    if "trial" in tune_config:  # grid search: resolved and validated in the driver
        t = tune_config["trial"]
        cfg = parse_trial_config(t["config"], source=f"trial {t['key']}")
        return TrialSpec(t["key"], t["cell"], int(t["seed"]), cfg, faults.get(t["key"]))
    cell = meta["cells"][int(tune_config.get("cell", 0))]
    seed = int(tune_config.get("__trial_index__", 0))
    sampled: dict[str, Any] = tune_config.get("sample", {})
    data = apply_overrides(cell["config"], {**sampled, "seed": seed})
    cfg = parse_trial_config(data, source=f"sampled trial {trial_id}")
    names = [f"{p.rsplit('.', 1)[-1]}={format_value(v)}" for p, v in sampled.items()]
    label = ",".join([cell["label"], *names])
    key = f"{label}/seed{seed}#{trial_id}"
    return TrialSpec(key, label, seed, cfg, faults.get(key))


class AblateTrainable(tune.Trainable):
    """Adapts :class:`TrialRunner` to Tune: one ``step`` is one epoch.

    Results are the engine's metrics (``train/loss``, ``val/dice_mean``, ``perf/epoch_s``...)
    plus ``trial_key``, ``cell``, ``split_hash`` and, on the last epoch, ``done``. The best
    epoch by the sweep's metric is kept in memory (weights on CPU and a preview PNG) and written
    into every checkpoint, so the driver can log the best checkpoint when the trial ends.
    """

    def setup(self, config: dict[str, Any]) -> None:
        self._data: tuple[str, TrialData] | None = None
        self._start(config)

    def _start(self, config: dict[str, Any]) -> None:
        meta = config["ablate"]
        self.spec = resolve_trial(config, self.trial_id)
        self.metric: str = meta["metric"]
        self.sign = 1.0 if meta["mode"] == "max" else -1.0
        self.best: dict[str, Any] = dict.fromkeys(("weights", "preview"), None)
        self.best.update(value=-math.inf, epoch=0)
        self.failure: dict[str, str] | None = None
        self.runner: TrialRunner | None = None
        try:
            self.runner = TrialRunner(self.spec.config, progress=_log, data=self._reusable_data())
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
            with memory_fault(self.spec.fault):
                metrics = self.runner.run_epoch()
        except Exception as err:
            self.failure = _outcome(err)
            if self.failure is None:
                raise
            if self.spec.fault:  # say so: this shortage was injected by a test
                headroom = self.spec.fault.get("headroom_mib", 64)
                self.failure["error"] += f" (injected: address space capped at +{headroom} MiB)"
            return self._final_failure()
        self._track_best(metrics)
        done = self.runner.epoch >= self.spec.config.train.epochs
        return {**metrics, **self._identity(), "done": done}

    def _identity(self) -> dict[str, Any]:
        split = self.runner.data.split.hash if self.runner is not None else ""
        return {"trial_key": self.spec.key, "cell": self.spec.cell, "split_hash": split}

    def _final_failure(self) -> dict[str, Any]:
        assert self.failure is not None
        epoch = float(self.runner.epoch) if self.runner is not None else 0.0
        return {**self.failure, **self._identity(), "epoch": epoch, "done": True}

    def _track_best(self, metrics: dict[str, float]) -> None:
        """Keep the best epoch's weights (CPU copy) and preview when the metric improves."""
        value = metrics.get(self.metric)
        if value is None or not math.isfinite(value) or self.sign * value <= self.best["value"]:
            return
        assert self.runner is not None
        state = self.runner.model.state_dict()
        weights = {k: v.detach().to("cpu", copy=True) for k, v in state.items()}
        self.best = {
            "value": self.sign * value,
            "epoch": self.runner.epoch,
            "weights": weights,
            "preview": _safe_preview(self.runner),
        }

    def save_checkpoint(self, checkpoint_dir: str) -> None:
        out = Path(checkpoint_dir)
        if self.runner is not None:
            save_checkpoint(self.runner, out / STATE_FILE)
        if self.best["weights"] is not None:
            best = {"version": 1, "config": self.spec.config.model_dump(mode="json")}
            best.update(model=self.best["weights"], epoch=self.best["epoch"])
            best["metric"] = {self.metric: self.sign * self.best["value"]}
            torch.save(best, out / BEST_FILE)
        if self.best["preview"] is not None:
            (out / PREVIEW_FILE).write_bytes(self.best["preview"])
        meta = {"best_value": self.best["value"], "best_epoch": self.best["epoch"]}
        (out / META_FILE).write_text(json.dumps({**meta, "failure": self.failure}))

    def load_checkpoint(self, checkpoint: str | dict[str, Any]) -> None:
        folder = Path(str(checkpoint))
        meta = json.loads((folder / META_FILE).read_text())
        self.failure = meta["failure"]
        if self.runner is not None and (folder / STATE_FILE).is_file():
            self.runner.load_state_dict(load_checkpoint(folder / STATE_FILE))
        self.best = {"value": meta["best_value"], "epoch": meta["best_epoch"], "weights": None}
        preview = folder / PREVIEW_FILE
        self.best["preview"] = preview.read_bytes() if preview.is_file() else None
        if (folder / BEST_FILE).is_file():
            self.best["weights"] = load_checkpoint(folder / BEST_FILE)["model"]

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


@contextlib.contextmanager
def memory_fault(fault: dict[str, Any] | None) -> Iterator[None]:
    """Test-only: cap this process's address space at its current size plus ``headroom_mib``.

    A real allocation in the epoch then fails (an out-of-memory trial on a CPU machine); the
    previous limit is restored afterwards, since the actor may be reused by another trial.
    oneDNN is off meanwhile: it reports a failed allocation only as "could not create a
    primitive", while torch's own CPU allocator names it.
    """
    if not fault or fault.get("kind") != "oom":
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = _address_space_bytes() + int(fault.get("headroom_mib", 64)) * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (cap if hard < 0 else min(cap, hard), hard))
    onednn, torch.backends.mkldnn.enabled = torch.backends.mkldnn.enabled, False
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
        torch.backends.mkldnn.enabled = onednn


def _address_space_bytes() -> int:
    """Current virtual size of this process (Linux /proc), in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("memory fault injection needs Linux /proc/self/status")


def _safe_preview(runner: TrialRunner) -> bytes | None:
    """The preview PNG of the current model; None (with a note) if it cannot be drawn."""
    try:
        return preview_png(runner)
    except Exception as err:  # a missing preview must never fail the trial
        _log(f"preview skipped: {type(err).__name__}: {err}")
        return None
