"""Tune callbacks in the driver: MLflow tracking and one progress line per trial event.

Why the driver logs to MLflow rather than the workers: the driver sees every outcome, including
the ones a worker cannot report (a crashed or killed actor, an error raised in ``setup``), so the
FAILED status and the reason always reach MLflow; one writer keeps SQLite (the default store)
free of "database is locked" races between trial processes; and the trial -> run mapping lives
in one place. The cost on a multi-node cluster is that each trial's artifacts (the best weights,
two PNGs, a YAML file) pass through the driver, read from the storage Tune already syncs
checkpoints to; per-epoch metrics arrive with Tune's results anyway.

All MLflow calls run on one background thread (:mod:`orchestrator.tracking_writer`), so a slow
or absent tracking server never stalls Tune's event loop (the orchestration-overhead target);
calls wait out an outage, and ``on_experiment_end`` waits for the queue to drain (for a server
that stays down, a minute; what was not sent is counted in :data:`UNSENT_CALLS`, and ``--resume``
sends it from Tune's record).
Both callbacks are pickled into the Tune experiment (``tuner.pkl``) and come back on resume, so
they pickle their settings only and rebuild clients and threads in ``setup``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ray import tune

from orchestrator import test_tracking, tracking
from orchestrator.mlflow_ui import NOTE_TAG, trial_note
from orchestrator.tracking_writer import TrackingWriter
from orchestrator.trial_events import finished_outcome, trial_error

# best/: the engine's best epoch so far; test/: the last epoch's test pass and postprocess/:
# the post-processing it decided (``largest_component: auto``), both logged at step 0
LOGGED_PREFIXES = ("train/", "val/", "perf/", "best/", "test/", "postprocess/")
# The worker's versions (trainables.engine.precision.runtime_versions) -> child-run tags.
VERSION_TAGS = {
    "env/torch": "ablate.torch_version",
    "env/cuda": "ablate.cuda_version",
    "env/cudnn": "ablate.cudnn_version",
    "env/gpu": "ablate.gpu_name",
    "env/precision": "ablate.precision_trained",  # train.precision as run (fp16 on a CPU: fp32)
}


CONCLUDED = ("TERMINATED", "ERROR")  # Tune trial statuses that end a trial
# Parent run id -> tracking calls the sweep's writer could not send (the server stayed down at
# the end). Module-level because Tune may run a callback restored from its pickle, not ours.
UNSENT_CALLS: dict[str, int] = {}


class TrackingCallback(tune.Callback):
    """Mirrors the sweep into MLflow: child runs, per-epoch metrics, outcomes, artifacts.

    At the end it waits for MLflow ``CLOSE_GRACE_S`` seconds at most while the server is down.

    Args:
        uri: MLflow tracking URI.
        experiment_id: the sweep's MLflow experiment.
        parent_id: the sweep's parent run.
        metric, mode: the sweep's metric, for the per-trial summary (``best/...``).
    """

    CLOSE_GRACE_S = 60.0

    def __init__(
        self, uri: str, experiment_id: str, parent_id: str, metric: str, mode: str
    ) -> None:
        self.settings = {"uri": uri, "experiment_id": experiment_id, "parent_id": parent_id}
        self.metric, self.mode = metric, mode
        self._reset()

    def _reset(self) -> None:
        self.client: Any = None
        self.writer: TrackingWriter | None = None
        self.runs: dict[str, str] = {}  # Tune trial id -> MLflow run id
        self.epochs: dict[str, int] = {}  # Tune trial id -> planned epochs
        self.logged: dict[str, set[int]] = {}  # Tune trial id -> epoch steps its run holds
        self.open: set[str] = set()  # trials started and not yet concluded
        self.unconcluded: set[str] = set()  # trials live or pending at the last loop step
        self.split_hashes: set[str] = set()
        self.split_tagged: set[str] = set()  # trials whose run has its split hash tag
        self.versions_tagged: set[str] = set()  # trials whose run has its version tags

    def __getstate__(self) -> dict[str, Any]:
        return {"settings": self.settings, "metric": self.metric, "mode": self.mode}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset()

    @property
    def parent_id(self) -> str:
        return self.settings["parent_id"]

    # ------------------------------------------------------------------------ Tune hooks
    def setup(self, **info: Any) -> None:
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=self.settings["uri"])
        self.writer = TrackingWriter(self.settings["uri"])
        self.writer.submit(self.client.update_run, self.parent_id, "RUNNING")

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.open.add(trial.trial_id)
        self._submit(self._start_run, trial.trial_id, dict(trial.config))

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        metrics = {
            k: float(v)
            for k, v in result.items()
            if k.startswith(LOGGED_PREFIXES) and isinstance(v, int | float)
        }
        step = int(result.get("epoch", result.get("training_iteration", 0)))
        self._submit(self._log_epoch, trial.trial_id, metrics, step, result.get("split_hash"))
        versions = version_tags(result)
        if versions and trial.trial_id not in self.versions_tagged:  # from the first result
            self.versions_tagged.add(trial.trial_id)
            self._submit(self._tag, trial.trial_id, dict(trial.config), versions)

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        self.unconcluded = {t.trial_id for t in trials if t.status not in CONCLUDED}

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.open.discard(trial.trial_id)
        self.unconcluded.discard(trial.trial_id)
        last = dict(trial.last_result or {})
        args = (trial.trial_id, dict(trial.config), last, None, trial.checkpoint)
        self._submit(self._finish_run, *args)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.open.discard(trial.trial_id)
        self.unconcluded.discard(trial.trial_id)
        args = (trial.trial_id, dict(trial.config), {}, trial_error(trial), trial.checkpoint)
        self._submit(self._finish_run, *args)

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        tags = {"ablate.attempts": str(trial.run_metadata.num_failures + 1)}
        tags["ablate.last_error"] = trial_error(trial)
        self._submit(self._tag, trial.trial_id, dict(trial.config), tags)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        """Interrupted trials become KILLED (resumable); the parent FINISHED, or KILLED while any
        trial is unfinished (running, or still pending when Ctrl-C came).

        On Ctrl-C Tune marks its live trials TERMINATED without a completion hook, so a trial
        whose actor was still starting looks finished here; the trials the last loop step saw
        live or pending, and no hook concluded since, are unfinished too."""
        unfinished = any(t.status not in CONCLUDED for t in trials) or bool(self.unconcluded)
        self._submit(self._end, sorted(self.open), unfinished)
        if self.writer is not None:
            UNSENT_CALLS[self.parent_id] = self.writer.close(self.CLOSE_GRACE_S)
            self.writer = None

    # ------------------------------------------------------------------ resume repair
    def reconcile(self, path: str) -> tuple[int, int]:
        """``--resume`` after a killed driver, or a tracking server that was down at the end:
        replay what Tune saved into MLflow, synchronously. Returns (epochs, trial endings) sent.

        A killed driver loses whatever its writer thread had queued. Epochs missing from a
        child run are logged from Tune's saved results (steps MLflow already holds are skipped,
        so nothing is duplicated), and trials Tune had already ended get their summary,
        artifacts and final status; unfinished trials then continue through the usual hooks.
        """
        from mlflow.tracking import MlflowClient
        from ray.tune import ExperimentAnalysis

        self.client = MlflowClient(tracking_uri=self.settings["uri"])
        analysis = ExperimentAnalysis(path)
        frames = analysis.trial_dataframes
        epochs = endings = 0
        for trial in analysis.trials:
            config = dict(trial.config)
            ended = self._ended_run(trial.trial_id, config) if trial.status in CONCLUDED else None
            if ended is None:
                self._start_run(trial.trial_id, config)  # finds the existing child by its key
            run_id = self.runs[trial.trial_id]
            frame = frames.get(trial.trial_id)
            rows = frame.to_dict("records") if frame is not None else []
            held = len(self.logged[trial.trial_id])
            self._backfill(trial.trial_id, rows)
            epochs += len(self.logged[trial.trial_id]) - held
            run = self.client.get_run(run_id)  # once: its tags and its status
            versions = version_tags(rows[-1]) if rows else {}
            missing = {tag: v for tag, v in versions.items() if tag not in run.data.tags}
            if missing:  # the worker's versions, as on_trial_result tags them
                tracking.set_tags(self.client, run_id, missing)
            if run.info.status in ("FINISHED", "FAILED"):
                continue
            if trial.status in CONCLUDED:
                endings += 1
                last = dict(trial.last_result or {}) if trial.status == "TERMINATED" else {}
                error = trial_error(trial) if trial.status == "ERROR" else None
                self._finish_run(trial.trial_id, config, last, error, trial.checkpoint)
        return epochs, endings

    def _ended_run(self, trial_id: str, config: dict[str, Any]) -> str | None:
        """The trial's child run where it already ended (FINISHED or FAILED), noted as the
        trial's run without re-opening it: re-opened and ended again, its end time (MLflow's
        Duration column) would become the time of the resume."""
        from trainables.trainable import trial_identity

        key, s = trial_identity(config, trial_id).key, self.settings
        run = tracking.find_child_run(self.client, s["experiment_id"], s["parent_id"], key)
        if run is None or run.info.status not in ("FINISHED", "FAILED"):
            return None
        run_id = self.runs[trial_id] = run.info.run_id
        self.logged[trial_id] = logged_epochs(self.client, run_id)
        return run_id

    def _backfill(self, trial_id: str, rows: list[dict[str, Any]]) -> None:
        """Log the saved epochs whose step the run does not have yet (``_log_epoch`` skips
        the others)."""
        for row in rows:
            step = int(row.get("epoch", row.get("training_iteration", 0)) or 0)
            if "train/loss" not in row:
                continue
            metrics = {
                k: float(v)
                for k, v in row.items()
                if k.startswith(LOGGED_PREFIXES) and isinstance(v, int | float) and v == v
            }
            split = row.get("split_hash")
            self._log_epoch(trial_id, metrics, step, split if isinstance(split, str) else None)

    # -------------------------------------------------------------------- writer thread
    def _submit(self, fn: Callable[..., Any], *args: Any) -> None:
        if self.writer is None:  # hooks before setup (should not happen) still log
            self.setup()
        assert self.writer is not None
        self.writer.submit(fn, *args)

    def _ensure_run(self, trial_id: str, config: dict[str, Any]) -> str:
        """The trial's run; created here for trials that failed before they started."""
        if trial_id not in self.runs:
            self._start_run(trial_id, config)
        return self.runs[trial_id]

    def _start_run(self, trial_id: str, config: dict[str, Any]) -> None:
        """Open (or find again) the trial's child run, with its params and resolved config.

        A trial whose config does not validate (a sampled combination no check foresaw) still
        gets its run, with the params as sampled, so the failure is found where the others are.
        """
        from trainables.errors import InputError
        from trainables.trainable import trial_identity

        who = trial_identity(config, trial_id)
        try:
            spec = who.validate()
        except InputError:
            spec = None  # the trial itself fails with the message; on_trial_error logs it
        fold = spec.fold if spec is not None else None
        tags = {"ablate.cell": who.cell, "ablate.seed": str(who.seed)}
        tags |= {"ablate.tune_trial_id": trial_id, "ablate.outcome": "running"}
        if fold is not None:
            tags["ablate.fold"] = str(fold)
        tags[NOTE_TAG] = trial_note(who.cell, who.seed, fold, "running", self.metric)
        s = self.settings
        run_id, created = tracking.open_child_run(
            self.client, s["experiment_id"], s["parent_id"], who.key, tags
        )
        self.runs[trial_id] = run_id
        self.epochs[trial_id] = spec.config.train.epochs if spec is not None else 0
        self.logged[trial_id] = self.logged.get(trial_id, set()) | (
            set() if created else logged_epochs(self.client, run_id)
        )
        # a run found again may be half made: the server went away right after creating it
        if created or not self.client.get_run(run_id).data.params:
            params = spec.config.model_dump(mode="json") if spec is not None else who.config
            tracking.log_params(self.client, run_id, tracking.flatten(params))
            if spec is not None:
                resolved = spec.config.to_yaml().encode()
                tracking.log_bytes(self.client, run_id, resolved, "trial.yaml", "config")
        if not created:
            tracking.set_tags(
                self.client, run_id, {"ablate.outcome": "running", NOTE_TAG: tags[NOTE_TAG]}
            )

    def _log_epoch(
        self, trial_id: str, metrics: dict[str, float], step: int, split: str | None
    ) -> None:
        """One epoch's metrics at ``step``, once: an epoch the run already holds is not logged
        again. A trial restored from a checkpoint older than its last result (a retried trial,
        or a driver killed between a result and its checkpoint) trains that epoch a second
        time; MLflow cannot replace a logged point, and two points at one step would draw a
        zig-zag in every curve, so the first values stay."""
        run_id = self.runs[trial_id]
        metrics, test = test_tracking.split_test(metrics)
        logged = self.logged.setdefault(trial_id, set())
        if step not in logged:
            tracking.log_metrics(self.client, run_id, metrics, step)
            logged.add(step)
        if test and not self._holds_step_zero(run_id, test):  # summaries of the selected
            test_tracking.log_test(self.client, run_id, test)  # weights: step 0, like best/
        if split and trial_id not in self.split_tagged:
            self.split_tagged.add(trial_id)
            tracking.set_tags(self.client, run_id, {"ablate.split_hash": split})
        if split and split not in self.split_hashes:  # the parent lists every split seen
            self.split_hashes.add(split)
            tags = {"ablate.split_hash": ",".join(sorted(self.split_hashes))}
            tracking.set_tags(self.client, self.parent_id, tags)

    def _finish_run(
        self,
        trial_id: str,
        config: dict[str, Any],
        last: dict[str, Any],
        error: str | None,
        checkpoint: Any,
    ) -> None:
        """Summary metrics, artifacts, outcome tags and the final status of one trial."""
        run_id = self._ensure_run(trial_id, config)
        outcome = last.get("outcome") or finished_outcome(last, self.epochs.get(trial_id, 0))
        if error:  # raised: a real failure, whatever the last result said
            outcome = "failed"
        error = error or last.get("error")
        summary = tracking.summarize(self.client, run_id, self.metric, self.mode)
        if not self._holds_step_zero(run_id, summary):
            tracking.log_metrics(self.client, run_id, summary, step=0)
        self._log_artifacts(run_id, checkpoint)
        tags = {"ablate.outcome": outcome, NOTE_TAG: self._note(run_id, outcome, summary)}
        if error:
            tags["ablate.error"] = error
        if outcome == "infeasible":
            tags["infeasible"] = error or "out of memory"
        tracking.set_tags(self.client, run_id, tags)
        ok = outcome in ("finished", "stopped_early")
        self.client.set_terminated(run_id, status="FINISHED" if ok else "FAILED")

    def _holds_step_zero(self, run_id: str, metrics: dict[str, float]) -> bool:
        """Whether the run already has this step-0 batch (summary or test metrics): a finish
        half sent before the driver or the server went away is completed by ``--resume``
        without a second point per key."""
        finite = [k for k, v in metrics.items() if math.isfinite(v)]  # the ones logged
        return bool(finite) and tracking.holds_at_step(self.client, run_id, finite[0], 0)

    def _log_artifacts(self, run_id: str, checkpoint: Any) -> None:
        """From the trial's last Tune checkpoint: the best model (``checkpoint/best.pt``), its
        per-case validation and test metrics (``per_case/val.csv``, ``per_case/test.csv``) and
        preview; learning curves."""
        from orchestrator.plots import learning_curves_png
        from trainables.engine.held_out import TEST_PER_CASE_FILE
        from trainables.trainable import BEST_MODEL_FILE, PER_CASE_FILE, PREVIEW_FILE

        if checkpoint is not None:
            with checkpoint.as_directory() as folder:
                best, preview = Path(folder) / BEST_MODEL_FILE, Path(folder) / PREVIEW_FILE
                for path, where in ((best, "checkpoint"), (preview, None)):
                    if path.is_file():
                        self.client.log_artifact(run_id, str(path), where)
                for name, split in ((PER_CASE_FILE, "val"), (TEST_PER_CASE_FILE, "test")):
                    per_case = Path(folder) / name
                    if per_case.is_file():  # renamed on the way: per_case/<split>.csv
                        data = per_case.read_bytes()
                        tracking.log_bytes(self.client, run_id, data, f"{split}.csv", "per_case")
        keys = ("train/loss", "val/loss", self.metric)
        curves = tracking.histories(self.client, run_id, dict.fromkeys(keys))
        if curves:
            png = learning_curves_png(curves, self.metric)
            tracking.log_bytes(self.client, run_id, png, "learning_curves.png")

    def _note(self, run_id: str, outcome: str, summary: dict[str, float]) -> str:
        """The run's description once it ended: cell, seed, fold, outcome, best metric."""
        tags = self.client.get_run(run_id).data.tags
        fold = tags.get("ablate.fold")
        cell, seed = tags.get("ablate.cell", "?"), tags.get("ablate.seed", "?")
        best = summary.get(f"best/{self.metric}")
        return trial_note(cell, seed, int(fold) if fold else None, outcome, self.metric, best)

    def _tag(self, trial_id: str, config: dict[str, Any], tags: dict[str, str]) -> None:
        tracking.set_tags(self.client, self._ensure_run(trial_id, config), tags)

    def _end(self, interrupted: list[str], unfinished: bool = False) -> None:
        for trial_id in interrupted:
            if trial_id in self.runs:
                tracking.set_tags(self.client, self.runs[trial_id], {"ablate.outcome": "killed"})
                self.client.set_terminated(self.runs[trial_id], status="KILLED")
        killed = bool(interrupted) or unfinished
        self.client.set_terminated(self.parent_id, status="KILLED" if killed else "FINISHED")


def version_tags(result: dict[str, Any]) -> dict[str, str]:
    """The worker's torch/CUDA/cuDNN/GPU versions in a Tune result, as run tags."""
    return {tag: str(result[k]) for k, tag in VERSION_TAGS.items() if k in result}


def logged_epochs(client: Any, run_id: str) -> set[int]:
    """The epoch steps a run already holds (every epoch logs ``train/loss``)."""
    return {m.step for m in client.get_metric_history(run_id, "train/loss")}
