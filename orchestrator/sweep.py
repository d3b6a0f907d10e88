"""Launch, resume and follow a sweep: Ray Tune in the driver, MLflow through callbacks.

Everything that can be checked is checked before Ray starts: the space file and every trial
(:func:`orchestrator.expand.plan_sweep`), the Ray address and the storage folder
(:mod:`orchestrator.preflight`), the tracking URI (one short probe), the resume state and the
GPU request. The Tune experiment lives in ``<storage>/<name>`` with a small
``ablate_sweep.json`` beside Tune's own state: the space file's hash, the tracking URI and the
MLflow parent run, so ``--resume`` continues the same parent run with the same trials.

Ctrl-C stops Tune after it saved its state: finished trials stay finished, the others are
marked KILLED in MLflow and continue from their last checkpoint (one per epoch) on ``--resume``.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator import mlflow_ui, provenance, tracking
from orchestrator.checks import check_data_dir
from orchestrator.commands.common import progress
from orchestrator.expand import Plan, plan_sweep
from orchestrator.preflight import (
    check_no_earlier_runs,
    check_ray_to_join,
    check_storage,
    check_storage_answers,
    sweep_folder,
)
from orchestrator.ray_cluster import (
    check_cluster_resources,
    check_local_gpus,
    ray_running,
    start_ray,
)
from orchestrator.space import MAX_TRIALS, SWEEP_NAME, SWEEP_NAME_RULE
from orchestrator.sweep_data import check_config_roots, prepare_sweep_data
from orchestrator.tuner import TrackingSettings, TrialProblem, make_tuner, trial_outcomes
from orchestrator.winners import PAPER_FILE
from trainables.errors import InputError

SWEEP_META_FILE = "ablate_sweep.json"


@dataclass
class SweepOptions:
    """What ``ablate sweep`` was asked to do (paths as given; resolved by :func:`run_sweep`)."""

    space: Path
    data: Path | None = None
    tracking_uri: str | None = None
    storage: str = "ray_results"
    resume: bool = False
    smoke: bool = False
    address: str | None = None
    name: str | None = None
    verbose: bool = False
    max_trials: int = MAX_TRIALS
    callbacks: list[Any] = field(default_factory=list)  # extra Tune callbacks (tests)
    # Test hook: a Trainable class to run instead of AblateTrainable (a subclass; the test suite's
    # fault injection). None: AblateTrainable. Pass the same class again to resume.
    trainable: type | None = None


@dataclass
class SweepResult:
    """How a sweep ended: trial counts by outcome, and where its results are."""

    name: str
    path: str
    tracking_uri: str
    parent_run_id: str
    counts: dict[str, int]
    interrupted: bool
    experiment_id: str = ""
    problems: list[TrialProblem] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)  # cases of --data no trial could use
    unsent_calls: int = 0  # MLflow calls not sent: the server was down when the sweep ended
    restarted: int = 0  # trials Tune restarted after a failure (their runs: ablate.attempts)

    @property
    def exit_code(self) -> int:
        """0 when every trial gave a result (diverged trials are results of their config) on
        every case, 2 when a trial met bad input or ran out of memory, a case of the data was
        left out or MLflow missed results (its server stopped answering), 1 when a trial
        failed otherwise."""
        failed = [p for p in self.problems if p.outcome != "diverged"]
        if failed and not all(p.is_bad_input for p in failed):
            return 1
        return 2 if failed or self.left_out or self.unsent_calls else 0


def run_sweep(opts: SweepOptions) -> SweepResult:
    """Plan, check, launch (or resume) and wait for a sweep; see the module docstring."""
    data = opts.data.resolve() if opts.data else None
    plan = plan_sweep(opts.space, data, opts.smoke, opts.max_trials)
    address = opts.address or os.environ.get("RAY_ADDRESS")
    if not ray_running():  # before anything slow: a wrong address would hang ray.init
        check_ray_to_join(opts.address)
    data_lines: list[str] = []
    if data is not None:
        data_lines = check_data_dir(data, data_label_scheme(plan), joined=bool(address))
    else:  # the configs' own data.root, if any
        data_lines = check_config_roots(plan, joined=bool(address))
    for line in data_lines:
        progress(line)
    name = _sweep_name(opts, plan)
    path = _experiment_path(opts.storage, name)
    check_storage_answers(path)  # a URI without network would hang every read below
    meta = _check_resume(opts, plan, path, name)
    uri = opts.tracking_uri or meta.get("tracking_uri") or tracking.default_tracking_uri()
    if not (address or ray_running()):
        check_local_gpus(plan)  # a cluster's GPUs are checked once joined
    client = tracking.connect(uri)  # fails fast, before Ray starts
    if not opts.resume:
        check_no_earlier_runs(client, name, path)
    # Creates the sweep folder, so after the checks that refuse a sweep outright; before data
    # preparation (slow) because Tune's first write comes after Ray and the MLflow parent run.
    check_storage(path)
    left_out = prepare_sweep_data(plan, data_lines) if opts.data else []
    start_ray(address, opts.verbose)
    check_cluster_resources(plan, joined=bool(address))
    mlflow = _open_tracking(client, uri, plan, name, path, opts, left_out)
    meta = {"space_file": str(plan.source), "space_hash": plan.space_hash, "tracking_uri": uri}
    meta |= {"experiment_id": mlflow.experiment_id, "parent_run_id": mlflow.parent_id}
    meta |= {"data": _data(opts), "smoke": opts.smoke}
    _write_meta(path, meta)
    if opts.resume:  # a killed driver may have lost queued MLflow writes: replay Tune's record
        _replay_into_mlflow(mlflow, plan, name, path)
    tuner = make_tuner(
        plan, path, mlflow, opts.resume, opts.verbose, opts.callbacks, opts.trainable
    )
    tuner.fit()
    from orchestrator.callbacks import UNSENT_CALLS

    ended = trial_outcomes(path)
    return SweepResult(
        name,
        path,
        uri,
        mlflow.parent_id,
        ended.counts,
        interrupted=ended.unfinished,
        experiment_id=mlflow.experiment_id,
        problems=ended.problems,
        left_out=left_out,
        unsent_calls=UNSENT_CALLS.pop(mlflow.parent_id, 0),
        restarted=ended.restarted,
    )


def data_label_scheme(plan: Plan) -> str:
    """The label scheme the planned trials read their data with (the first cell's)."""
    configs = list(plan.cell_configs.values())
    data = (configs[0].get("data") or {}) if configs else {}
    return str(data.get("label_scheme", "auto"))


def _sweep_name(opts: SweepOptions, plan: Plan) -> str:
    """``--name``, checked, else the study's name (``-smoke`` added for a smoke run)."""
    if opts.name is not None and not re.fullmatch(SWEEP_NAME, opts.name):
        raise InputError(SWEEP_NAME_RULE.format(name=opts.name), where="--name")
    return opts.name or (f"{plan.name}-smoke" if opts.smoke else plan.name)


def _open_tracking(
    client: Any,
    uri: str,
    plan: Plan,
    name: str,
    path: str,
    opts: SweepOptions,
    left_out: list[str],
) -> TrackingSettings:
    """The sweep's experiment (with ablate's saved view) and parent run, and the link to them."""
    experiment_id = tracking.ensure_experiment(client, name)
    mlflow_ui.setup_experiment(client, experiment_id, plan)
    parent_id = _parent_run(client, experiment_id, plan, name, path, opts)
    if left_out:  # the case list the results are from is part of what they mean
        shown = "\n".join(left_out)[: tracking.MAX_TAG]
        tracking.set_tags(client, parent_id, {"ablate.left_out_cases": shown})
    for line in mlflow_ui.browse_lines(uri, experiment_id):
        progress(line)
    return TrackingSettings(uri, experiment_id, parent_id)


def _replay_into_mlflow(mlflow: TrackingSettings, plan: Plan, name: str, path: str) -> None:
    """``--resume``: send MLflow what Tune recorded and the server never got."""
    from orchestrator.callbacks import TrackingCallback  # imports ray: only when sweeping

    progress(f"resume: checking MLflow against Tune's record of sweep {name}")
    callback = TrackingCallback(
        mlflow.uri, mlflow.experiment_id, mlflow.parent_id, plan.space.metric, plan.space.mode
    )
    epochs, endings = callback.reconcile(path)
    if epochs or endings:
        progress(f"resume: sent MLflow {epochs} missing epochs and {endings} trial endings")


def _experiment_path(storage: str, name: str) -> str:
    """``<storage>/<name>``: an absolute local path, or a URI (``s3://bucket/ablate/<name>``)."""
    if not storage.strip():  # '' would silently mean the current folder
        raise InputError("empty: pass a folder or a storage URI", where="--storage")
    return sweep_folder(storage, name)


def _check_resume(opts: SweepOptions, plan: Plan, path: str, name: str) -> dict[str, Any]:
    """The stored sweep settings when resuming; refuse to overwrite or to mix two sweeps."""
    from ray.tune import Tuner

    try:
        exists = Tuner.can_restore(path)
    except (OSError, ValueError) as error:  # pyarrow: an unknown URI scheme, a refused path
        raise InputError(f"cannot read {path}: {error}", where="--storage") from None
    if not opts.resume:
        if exists:
            raise InputError(
                f"sweep {name!r} already exists in {path}: pass --resume to continue it, "
                "or --name to start another"
            )
        return {}
    if not exists:
        raise InputError(f"--resume: no sweep to resume in {path} (nothing was started there)")
    meta = _read_meta(path)
    if meta.get("space_hash") not in (None, plan.space_hash):
        raise InputError(
            f"--resume: {plan.source} changed since sweep {name!r} started; resume with the same "
            "file, or start a new sweep with --name"
        )
    stored = meta.get("tracking_uri")
    if opts.tracking_uri and stored and opts.tracking_uri != stored:
        raise InputError(f"--resume: sweep {name!r} logs to {stored}, not {opts.tracking_uri}")
    if meta.get("data") not in (None, _data(opts)):
        raise InputError(f"--resume: sweep {name!r} trains on {meta['data']}, not {_data(opts)}")
    if meta.get("smoke") not in (None, opts.smoke):  # shrunk trials and full ones do not mix
        given = "with" if meta["smoke"] else "without"
        raise InputError(f"--resume: sweep {name!r} was started {given} --smoke; resume it so")
    return meta


def _data(opts: SweepOptions) -> str:
    return str(opts.data.resolve()) if opts.data else "synthetic"


def _parent_run(
    client: Any, experiment_id: str, plan: Plan, name: str, path: str, opts: SweepOptions
) -> str:
    """Find (resume) or create the parent run, with its tags, params and the space file."""
    tags = {
        "ablate.space_file": str(plan.source),
        "ablate.space_hash": plan.space_hash,
        "ablate.git_commit": provenance.git_commit(plan.source.parent),
        "ablate.metric": plan.space.metric,
        "ablate.mode": plan.space.mode,
        "ablate.smoke": str(opts.smoke).lower(),
    }
    parent_id = tracking.open_parent_run(
        client, experiment_id, name, path, provenance.parent_tags(tags)
    )
    tracking.log_params(client, parent_id, _parent_params(plan, opts))
    if not client.list_artifacts(parent_id, "space"):
        client.log_artifact(parent_id, str(plan.source), "space")
        if plan.space.paper is not None:
            tracking.log_json(client, parent_id, paper_rows(plan), PAPER_FILE)
    return parent_id


def _parent_params(plan: Plan, opts: SweepOptions) -> dict[str, str]:
    """The sweep's shape: search, scheduler, seeds, cells, planned trials, data."""
    space = plan.space
    trials = len(plan.trials) or space.seeds * getattr(space.search, "num_samples", 1)
    return {
        "search": space.search.kind,
        "scheduler": space.effective_scheduler.kind,
        "seeds": str(space.seeds),
        "cells": str(len(plan.cells)),
        "trials": str(trials),
        "data": _data(opts),
        # what a trial holds, so `ablate winners` counts GPU-hours (or CPU-hours) correctly
        "resources.cpu": f"{space.resources.cpu:g}",
        "resources.gpu": f"{space.resources.gpu:g}",
    }


def paper_rows(plan: Plan) -> dict[str, Any]:
    """The paper's reported numbers per cell (a cell takes its own label's, else its variant's)."""
    paper = plan.space.paper
    assert paper is not None
    rows = {}
    for cell in plan.cells:
        reported = paper.reported.get(cell.label) or paper.reported.get(cell.variant or "")
        if reported:
            rows[cell.label] = reported
    return {"citation": paper.citation, "rows": rows}


def _read_meta(path: str) -> dict[str, Any]:
    """The sweep's ``ablate_sweep.json`` ({} if absent), from a local folder or a URI."""
    from pyarrow import fs

    filesystem, folder = fs.FileSystem.from_uri(path)
    target = f"{folder}/{SWEEP_META_FILE}"
    if filesystem.get_file_info(target).type != fs.FileType.File:
        return {}
    with filesystem.open_input_stream(target) as stream:
        return json.loads(stream.read())


def _write_meta(path: str, meta: dict[str, Any]) -> None:
    from pyarrow import fs

    filesystem, folder = fs.FileSystem.from_uri(path)
    filesystem.create_dir(folder, recursive=True)
    with filesystem.open_output_stream(f"{folder}/{SWEEP_META_FILE}") as stream:
        stream.write(json.dumps(meta, indent=2).encode())
