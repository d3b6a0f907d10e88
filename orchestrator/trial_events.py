"""Trial events as the console shows them: one line per event, and the helpers that name a
trial, read its error and tell a finished trial from one stopped early (used by the tracking
callback, the tuner and the live view too)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ray import tune

from orchestrator import tracking
from orchestrator.commands.common import progress


class ProgressCallback(tune.Callback):
    """One stderr line per trial event: started, epoch with the metric, finished, failed."""

    def __init__(self, metric: str, mode: str = "max") -> None:
        self.metric, self.mode = metric, mode
        self.trials: dict[str, tuple[str, int]] = {}  # trial id -> (key, planned epochs)
        self.best: dict[str, tuple[float, int]] = {}  # trial id -> reported (metric, epoch)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        key, epochs = trial_label(trial)
        self.trials[trial.trial_id] = (key, int(epochs or 0))
        progress(f"started   {key} ({epochs or '?'} epochs, trial {trial.trial_id})")

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        if result.get("outcome"):
            return  # reported by on_trial_complete
        epoch = int(result.get("epoch", 0))
        parts = [f"epoch {epoch}"]
        for key in (self.metric, "train/loss"):
            if isinstance(result.get(key), int | float):
                parts.append(f"{key} {result[key]:.4f}")
        value, best_epoch = result.get(f"best/{self.metric}"), result.get("best/epoch")
        if isinstance(value, int | float) and isinstance(best_epoch, int | float):
            self.best[trial.trial_id] = (float(value), int(best_epoch))  # the engine's record
        seconds = result.get("perf/epoch_s", result.get("time_this_iter_s", math.nan))
        progress(f"epoch     {self._key(trial)}  {'  '.join(parts)}  {seconds:.1f} s")

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        last = trial.last_result or {}
        if last.get("outcome"):
            progress(f"{last['outcome']:<9} {self._key(trial)}: {last.get('error', '')}")
            return
        planned = self.trials.get(trial.trial_id, ("", 0))[1]
        outcome = finished_outcome(last, planned)
        best = self.best.get(trial.trial_id)
        text = f"best {self.metric} {best[0]:.4f} at epoch {best[1]}" if best else "no metric"
        done = f"after {int(last.get('epoch', 0))} of {planned or '?'} epochs"
        word = "finished " if outcome == "finished" else "stopped  "
        progress(f"{word} {self._key(trial)}: {text}, {done}")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        progress(f"failed    {self._key(trial)}: {trial_error(trial)}")

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        progress(f"retrying  {self._key(trial)} after: {trial_error(trial)}")

    def _key(self, trial: Any) -> str:
        known = self.trials.get(trial.trial_id)
        return known[0] if known else trial_label(trial)[0]


def trial_label(trial: Any) -> tuple[str, int | None]:
    """The trial's key (``<cell>/seed<i>``) and epochs; Tune's trial id if it cannot resolve."""
    try:
        from trainables.trainable import resolve_trial

        spec = resolve_trial(trial.config, trial.trial_id)
    except Exception:  # a config the engine rejects: the failure line will say why
        return trial.trial_id, None
    return spec.key, spec.config.train.epochs


def trial_error(trial: Any) -> str:
    """``Type: message`` of a trial's latest exception.

    Read from the trial's local error files: Tune writes them before calling the callbacks,
    but syncs them to the storage path (where ``Trial.get_pickled_error`` looks) only later.
    """
    from ray import cloudpickle

    pickled, text = trial.pickled_error_file, trial.error_file
    if pickled and Path(pickled).is_file():
        message = _describe(cloudpickle.loads(Path(pickled).read_bytes()))
    elif text and Path(text).is_file():
        message = _last_line(Path(text).read_text())
    else:
        message = "unknown error (no error file was written)"
    return message[: tracking.MAX_TAG]


def _describe(err: BaseException) -> str:
    cause = getattr(err, "cause", None)
    if cause is not None:  # an exception raised in step(): Ray keeps the original
        return f"{type(cause).__name__}: {cause}"
    return _last_line(str(err))  # the actor died (e.g. in setup): its text ends with the error


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else text


def finished_outcome(last: dict[str, Any], planned: int) -> str:
    """``stopped_early`` when a scheduler (ASHA) or ``stop`` ended the trial before its epochs."""
    epoch = int(last.get("epoch", 0) or 0)
    return "stopped_early" if planned and epoch < planned else "finished"
