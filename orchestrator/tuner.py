"""Tune objects for a planned sweep: trainable, param space, scheduler, search, run config.

Grid sweeps hand Tune one resolved trial config per grid entry; Optuna sweeps hand it the cells
and the sampled ranges (see :mod:`trainables.trainable` for the layout the Trainable reads).
FIFO runs paper grids, ASHA stops bad suggestions early, and
:class:`~ray.tune.search.Repeater` runs each Optuna suggestion once per seed. Actors are always
reused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, assert_never

from orchestrator.expand import Plan
from orchestrator.preflight import split_sweep_folder
from orchestrator.space_search import AshaScheduler, FifoScheduler, GridSearch, OptunaSearch


@dataclass(frozen=True)
class TrackingSettings:
    """Where the sweep logs: MLflow URI, experiment id and parent run id."""

    uri: str
    experiment_id: str
    parent_id: str


def make_tuner(
    plan: Plan,
    path: str,
    mlflow: TrackingSettings,
    resume: bool,
    verbose: bool = False,
    callbacks: list[Any] | None = None,
    trainable: type | None = None,
) -> Any:
    """A new Tuner for the plan in ``path`` (local or a URI), or the stored one to resume.

    ``trainable`` is :class:`~trainables.trainable.AblateTrainable` unless given: the test hook
    through which the test suite runs a subclass that injects faults into chosen trials.
    """
    from ray import tune

    from trainables.trainable import AblateTrainable

    resources = {"cpu": plan.space.resources.cpu, "gpu": plan.space.resources.gpu}
    wrapped = tune.with_resources(trainable or AblateTrainable, resources)
    if resume:
        return tune.Tuner.restore(path, wrapped, resume_unfinished=True, resume_errored=False)
    return tune.Tuner(
        wrapped,
        param_space=param_space(plan),
        tune_config=tune_config(plan),
        run_config=run_config(plan, path, mlflow, verbose, callbacks or []),
    )


def run_config(
    plan: Plan, path: str, mlflow: TrackingSettings, verbose: bool, extra: list[Any]
) -> Any:
    """Storage, retries, a checkpoint per epoch (the latest kept), stop rules and callbacks."""
    from ray import tune

    from orchestrator.callbacks import TrackingCallback
    from orchestrator.live import console_callback

    space = plan.space
    total = len(plan.trials) or space.seeds * getattr(space.search, "num_samples", 1)
    callbacks = [
        console_callback(total, space.metric, space.mode),
        TrackingCallback(
            mlflow.uri, mlflow.experiment_id, mlflow.parent_id, space.metric, space.mode
        ),
        *extra,
    ]
    storage, name = split_sweep_folder(path)
    return tune.RunConfig(
        name=name,
        storage_path=storage,
        failure_config=tune.FailureConfig(max_failures=space.max_failures),
        # Two kept, not one: a driver killed between writing checkpoint N+1 and saving the
        # experiment state leaves that state pointing at N, which num_to_keep=1 would already
        # have deleted, so --resume could not restore the trial (ray-project/ray#27790).
        checkpoint_config=tune.CheckpointConfig(num_to_keep=2, checkpoint_frequency=1),
        stop=dict(space.stop) or None,
        callbacks=callbacks,
        verbose=2 if verbose else 0,
    )


def param_space(plan: Plan) -> dict[str, Any]:
    """Tune's config: one grid entry per planned trial, or Optuna ranges over the cells."""
    from ray import tune

    space = plan.space
    meta: dict[str, Any] = {"metric": space.metric, "mode": space.mode}
    if space.is_grid:
        trials = [
            {"key": t.key, "cell": t.cell, "seed": t.seed, "config": t.config} for t in plan.trials
        ]
        return {"ablate": meta, "trial": tune.grid_search(trials)}
    meta["cells"] = [{"label": c.label, "config": plan.cell_sources[c.label]} for c in plan.cells]
    meta["smoke"] = plan.smoke  # the worker shrinks each sampled trial as the grid's are
    cells = list(range(len(plan.cells)))
    sample = {path: _domain(rng) for path, rng in space.sample.items()}
    return {"ablate": meta, "cell": tune.choice(cells) if len(cells) > 1 else 0, "sample": sample}


def _domain(rng: Any) -> Any:
    """The Tune distribution of a :class:`~orchestrator.space.SampleRange`."""
    from ray import tune

    if rng.form == "loguniform":
        return tune.loguniform(*rng.loguniform)
    if rng.form == "uniform":
        return tune.uniform(*rng.uniform)
    if rng.form == "int":
        return tune.randint(rng.int_[0], rng.int_[1] + 1)  # the file's bounds are inclusive
    return tune.choice(rng.choice)


def tune_config(plan: Plan) -> Any:
    """Metric, scheduler, search, trial names; actors reused across trials."""
    from ray import tune

    search_alg, num_samples, concurrent = _search(plan)
    return tune.TuneConfig(
        metric=plan.space.metric,
        mode=plan.space.mode,
        scheduler=_scheduler(plan),
        search_alg=search_alg,
        num_samples=num_samples,
        max_concurrent_trials=concurrent,  # Tune runs searchers one trial at a time otherwise
        reuse_actors=True,
        trial_name_creator=trial_name,
        trial_dirname_creator=trial_dirname,
    )


def _scheduler(plan: Plan) -> Any:
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    chosen = plan.space.effective_scheduler
    match chosen:
        case FifoScheduler():
            return FIFOScheduler()
        case AshaScheduler():
            return ASHAScheduler(
                max_t=chosen.max_t or plan.epochs,
                grace_period=chosen.grace_period,
                reduction_factor=chosen.reduction_factor,
            )
        case _:
            assert_never(chosen)


def _search(plan: Plan) -> tuple[Any, int, int | None]:
    """(search algorithm or None for the grid, num_samples, max concurrent trials or None)."""
    space, search = plan.space, plan.space.search
    match search:
        case GridSearch():
            return None, 1, None
        case OptunaSearch():
            return _optuna(search, space.seeds)
        case _:
            assert_never(search)


def _optuna(search: OptunaSearch, seeds: int) -> tuple[Any, int, int]:
    """Optuna's TPE, each suggestion repeated ``seeds`` times (Optuna sees their mean)."""
    import optuna
    from ray.tune.search import Repeater
    from ray.tune.search.optuna import OptunaSearch as TuneOptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no line per suggestion
    searcher = TuneOptunaSearch(seed=search.seed)
    search_alg = Repeater(searcher, repeat=seeds) if seeds > 1 else searcher
    concurrent = search.max_concurrent or max(4, seeds)
    return search_alg, search.num_samples * seeds, concurrent


def trial_name(trial: Any) -> str:
    """Tune's display name of a trial: its key."""
    from orchestrator.trial_events import trial_label

    return trial_label(trial)[0]


def trial_dirname(trial: Any) -> str:
    """A filesystem-safe directory name: trial id and the key, shortened."""
    safe = re.sub(r"[^A-Za-z0-9_.=-]+", "_", trial_name(trial))
    return f"{trial.trial_id}_{safe[:80]}"


@dataclass(frozen=True)
class TrialProblem:
    """A trial that ended without a result to rank: its key, outcome and message.

    ``outcome``: ``failed`` (an exception after every retry), ``infeasible`` (out of memory)
    or ``diverged`` (a non-finite loss).
    """

    key: str
    outcome: str
    message: str

    @property
    def is_bad_input(self) -> bool:
        """An input the user can fix (data, config, memory), not a fault of the machinery."""
        # "InputError: ..." from step(); "trainables.errors.InputError: ..." from a dead actor
        bad_input = re.match(r"(?:[\w.]+\.)?(?:InputError|CaseError): ", self.message)
        return self.outcome == "infeasible" or bad_input is not None


@dataclass(frozen=True)
class TrialOutcomes:
    """How the trials of a sweep ended, from Tune's saved state."""

    counts: dict[str, int]  # outcome -> trials
    unfinished: bool  # any trial still to run or resume
    problems: list[TrialProblem]  # failed, infeasible or diverged, in Tune's trial order
    restarted: int = 0  # trials Tune restarted at least once after a failure (a lost worker)


def trial_outcomes(path: str) -> TrialOutcomes:
    """Counts of trial outcomes from Tune's saved state, whether any trial is unfinished, the
    trials that failed, were infeasible or diverged, and how many were restarted."""
    from ray.tune import ExperimentAnalysis

    from orchestrator.trial_events import finished_outcome, trial_error, trial_label

    counts: dict[str, int] = {}
    problems: list[TrialProblem] = []
    unfinished, restarted = False, 0
    for trial in ExperimentAnalysis(path).trials:
        last = trial.last_result or {}
        key, epochs = trial_label(trial)
        # a trial that ended failed counts its last failure too: restarted means another before
        restarted += int(trial.run_metadata.num_failures > int(trial.status == "ERROR"))
        if trial.status == "ERROR":
            outcome = "failed"
            problems.append(TrialProblem(key, outcome, trial_error(trial)))
        elif trial.status == "TERMINATED":
            outcome = last.get("outcome") or finished_outcome(last, epochs or 0)
            if outcome in ("infeasible", "diverged"):
                problems.append(TrialProblem(key, outcome, str(last.get("error", ""))))
        else:
            outcome, unfinished = "unfinished", True
        counts[outcome] = counts.get(outcome, 0) + 1
    return TrialOutcomes(counts, unfinished, problems, restarted)
