"""What ``ablate predict``'s MODEL names, and the winner as a registered MLflow model.

MODEL is one of (tried in this order):

==========================  ==================================================================
``models:/NAME@ALIAS``      a registered model version (``ablate winners --register``); also
                            ``models:/NAME/VERSION``
a ``.pt`` file              the engine's checkpoint (``best.pt``, trial config inside), or
                            a folder holding ``best.pt`` (``ablate train --checkpoint-dir``)
``SWEEP:CELL``              every finished run of that cell of the sweep, ensembled
a run id                    a trial run's ``checkpoint/best.pt`` artifact (a sweep's parent
                            run id stands for the sweep)
a sweep name                its winner: the run tagged ``winner=true``, else the best run of
                            :func:`orchestrator.winners.find_winners`
==========================  ==================================================================

Each resolves to ``(source, checkpoint dict)`` pairs for
:func:`trainables.engine.predict.build_predictor`. Registration logs the winner's network in
MLflow's pytorch flavour into the winning run, with two extra files - the resolved trial config
``trial_config.json`` and the weights as a plain state dict ``weights.pt`` - and an input example
of one patch, registers a version and points the alias ``champion`` at it. ``ablate predict``
reads the two extra files (``torch.load(weights_only=True)``), so it never unpickles the
flavour's pickled module: it works where ``MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false``.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path
from typing import Any

from orchestrator import tracking
from orchestrator.tracking_errors import restore_command
from trainables.engine.checkpoint import (
    BEST_MODEL_FILE,
    load_checkpoint,
    make_checkpoint,
    read_torch_file,
)
from trainables.errors import InputError

CHECKPOINT_ARTIFACT = "checkpoint/best.pt"
CONFIG_FILE = "trial_config.json"  # the logged model's extra file: the resolved trial config
WEIGHTS_FILE = "weights.pt"  # its other extra file: the state dict, loadable without pickle
MODEL_NAME = "model"  # the logged model's name in the run
CHAMPION = "champion"
_RUN_ID = re.compile(r"[0-9a-f]{32}")

Checkpoint = tuple[str, dict[str, Any]]


def resolve_model(spec: str, tracking_uri: str | None = None) -> list[Checkpoint]:
    """The checkpoints MODEL names (one, or a cell's ensemble); InputError when it names none."""
    if spec.startswith("models:/"):
        return [load_registered(spec, tracking_uri)]
    path = Path(spec).expanduser()
    if path.is_dir() and (path / BEST_MODEL_FILE).is_file():  # an `ablate train --checkpoint-dir`
        path = path / BEST_MODEL_FILE
    if path.is_file() or path.suffix == ".pt":
        return [(str(path), load_checkpoint(path))]
    try:
        return _tracked_model(spec, tracking_uri)
    except InputError as err:
        if not path.is_dir():
            raise
        raise InputError(  # a checkpoint folder was meant, most likely: say what it lacks
            f"{spec} is a folder without {BEST_MODEL_FILE} (an `ablate train --checkpoint-dir` "
            f"folder holds one), and as a sweep or run name: {err}"
        ) from None


def _tracked_model(spec: str, tracking_uri: str | None) -> list[Checkpoint]:
    """A run id, a sweep (its winner) or ``SWEEP:CELL`` (the cell's finished runs)."""
    client = tracking.connect(tracking_uri or tracking.default_tracking_uri(), existing=True)
    if ":" in spec:
        sweep, cell = spec.split(":", 1)
        return [run_checkpoint(client, run) for run in cell_runs(client, sweep, cell)]
    run = _trial_run(client, spec)
    return [run_checkpoint(client, run or winner_run(client, spec))]


def _trial_run(client: Any, spec: str) -> Any | None:
    """The trial run whose id is ``spec``; None for a sweep's parent run or a non-id.

    InputError for a run in MLflow's trash (it would predict from a run the user deleted) and
    for a run id the store does not hold (not a sweep name either: said as a run id).
    """
    if not _RUN_ID.fullmatch(spec):
        return None
    try:
        run = client.get_run(spec)
    except Exception:  # MLflow raises MlflowException for an unknown id
        if client.get_experiment_by_name(spec) is not None:
            return None  # a sweep named like a run id
        raise InputError(f"no run with id {spec} in {client.tracking_uri}") from None
    if run.data.tags.get("ablate.kind") == "sweep":
        return None  # the sweep stands for its winner (find_sweep refuses a deleted one)
    if run.info.lifecycle_stage == "deleted":
        raise InputError(
            f"run {spec} ({run.info.run_name}) was deleted in MLflow; restore it with "
            f"{restore_command(client, spec)} to predict with it"
        )
    return run


def run_checkpoint(client: Any, run: Any) -> Checkpoint:
    """A run's ``checkpoint/best.pt`` artifact, loaded; InputError naming the run without one."""
    run_id, name = run.info.run_id, run.info.run_name
    if CHECKPOINT_ARTIFACT not in {a.path for a in client.list_artifacts(run_id, "checkpoint")}:
        outcome = run.data.tags.get("ablate.outcome", run.info.status.lower())
        raise InputError(
            f"run {run_id} ({name}, {outcome}) has no {CHECKPOINT_ARTIFACT} artifact: it ended "
            "before an epoch with a finite metric, or was logged without its checkpoint"
        )
    with tempfile.TemporaryDirectory() as tmp:
        path = client.download_artifacts(run_id, CHECKPOINT_ARTIFACT, tmp)
        return f"run {run_id} ({name})", load_checkpoint(path)


def winner_run(client: Any, sweep: str) -> Any:
    """The sweep's run tagged ``winner=true``, else its best run by the ablation table."""
    from orchestrator.winners import find_winners

    parent = tracking.find_sweep(client, sweep)
    tagged = [r for r in tracking.child_runs(client, parent) if r.data.tags.get("winner") == "true"]
    if tagged:
        return tagged[-1]
    table = find_winners(client, parent.info.run_id, tag=False)
    if table.winner_run_id is None:
        raise InputError(
            f"sweep {sweep!r} has no winner: no run finished with {table.ranked_metric}"
        )
    return client.get_run(table.winner_run_id)


def cell_runs(client: Any, sweep: str, cell: str) -> list[Any]:
    """Every FINISHED run of ``cell`` in the sweep; InputError for an unknown or empty cell."""
    runs = tracking.child_runs(client, tracking.find_sweep(client, sweep))
    labels = list(dict.fromkeys(r.data.tags.get("ablate.cell", r.info.run_name) for r in runs))
    if cell not in labels:
        known = ", ".join(labels) or "none"
        raise InputError(f"sweep {sweep!r} has no cell {cell!r} (cells: {known})")
    mine = [r for r in runs if r.data.tags.get("ablate.cell", r.info.run_name) == cell]
    finished = [r for r in mine if r.info.status == "FINISHED"]
    if not finished:
        states = ", ".join(sorted({r.data.tags.get("ablate.outcome", r.info.status) for r in mine}))
        raise InputError(f"cell {cell!r} of sweep {sweep!r} has no finished runs ({states})")
    return finished


def use_store(uri: str) -> None:
    """Point MLflow's process-wide tracking and registry URIs at ``uri``: its fluent calls
    (``log_model``, a ``models:/`` download) ignore the client and use them, and the registry
    otherwise stays the current folder's ``mlflow.db`` or ``MLFLOW_REGISTRY_URI``, so a model of
    the same name elsewhere was registered to or loaded instead, silently."""
    import mlflow

    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)


def load_registered(spec: str, tracking_uri: str | None = None) -> Checkpoint:
    """``models:/NAME@ALIAS`` (or ``/VERSION``): the logged network's weights and the trial
    config logged with it, as a checkpoint dict."""
    import mlflow

    uri = tracking_uri or tracking.default_tracking_uri()
    client = tracking.connect(uri, existing=True)
    version = registered_version(client, spec)
    use_store(uri)  # MLflow downloads a models:/ URI through the process-wide registry
    with tempfile.TemporaryDirectory() as tmp:
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{version.name}/{version.version}", dst_path=tmp, tracking_uri=uri
        )
        extra = Path(local) / "extra_files"
        if not (extra / CONFIG_FILE).is_file():
            raise InputError(f"the model has no {CONFIG_FILE}: not registered by ablate", spec)
        config = json.loads((extra / CONFIG_FILE).read_text())
        if (extra / WEIGHTS_FILE).is_file():
            weights = read_torch_file(extra / WEIGHTS_FILE)
        else:  # registered before the weights were stored beside the pickled module
            weights = _unpickled_weights(local, spec)
    checkpoint = make_checkpoint(config, weights, epoch=0, iteration=0)
    return f"{spec} (version {version.version})", checkpoint


def _unpickled_weights(local: str, spec: str) -> dict[str, Any]:
    """The state dict of a version that holds only MLflow's pickled module; where MLflow
    refuses to unpickle, an InputError that says how to go on."""
    import mlflow.pytorch
    from mlflow.exceptions import MlflowException

    try:
        return mlflow.pytorch.load_model(local, map_location="cpu").state_dict()
    except MlflowException as err:
        if "pickle" not in str(err):
            raise
        raise InputError(
            f"this version has no {WEIGHTS_FILE} (registered by an older ablate) and MLflow "
            "refuses to unpickle its module (MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false): "
            "register the run again with `ablate winners SWEEP --register NAME`, or set "
            "MLFLOW_ALLOW_PICKLE_DESERIALIZATION=true for this model if you trust its source",
            spec,
        ) from None


def registered_version(client: Any, spec: str) -> Any:
    """The ModelVersion ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` names."""
    body = spec.removeprefix("models:/")
    name, _, alias = body.partition("@") if "@" in body else body.rpartition("/")
    if not name or not alias:
        raise InputError("expected models:/NAME@ALIAS or models:/NAME/VERSION", spec)
    try:
        model = client.get_registered_model(name)
    except Exception:
        known = ", ".join(m.name for m in client.search_registered_models()) or "none"
        raise InputError(f"no registered model {name!r} (registered: {known})", spec) from None
    if "@" in body and alias not in model.aliases:
        known = ", ".join(sorted(model.aliases)) or "none"
        raise InputError(f"model {name!r} has no alias {alias!r} (aliases: {known})", spec)
    try:
        if "@" in body:
            return client.get_model_version_by_alias(name, alias)
        return client.get_model_version(name, alias)
    except Exception:
        raise InputError(f"model {name!r} has no version {alias!r}", spec) from None


def register_winner(client: Any, run_id: str, name: str, alias: str = CHAMPION) -> str:
    """Log ``run_id``'s best model in MLflow's pytorch flavour, register it as ``name`` and
    point ``alias`` at the new version; returns the version.

    The network is rebuilt from the checkpoint's config (weights loaded, eval mode, CPU) and
    logged into the run as ``model`` with ``trial_config.json``, ``weights.pt`` (its state
    dict, for loading without pickle) and an input example of one ``(1, C, *patch)`` float32
    patch (from which MLflow infers the signature).
    """
    import mlflow
    import mlflow.pytorch
    import numpy as np
    import torch

    from trainables.engine.predict import build_predictor

    source, checkpoint = run_checkpoint(client, client.get_run(run_id))
    member = build_predictor([(source, checkpoint)], device="cpu").members[0]
    cfg = member.cfg
    example = np.zeros((1, len(cfg.data.modalities), *cfg.sampling.patch_size), np.float32)
    use_store(client.tracking_uri)  # log_model registers in the process-wide registry
    with tempfile.TemporaryDirectory() as tmp:
        config_path, weights_path = Path(tmp) / CONFIG_FILE, Path(tmp) / WEIGHTS_FILE
        config_path.write_text(json.dumps(checkpoint["config"], indent=1))
        torch.save(member.model.state_dict(), weights_path)
        # start_run re-opens the finished run and its context manager would end it FAILED on
        # an error: a failed registration must leave the trial as it was, so restore it
        before = client.get_run(run_id).info
        mlflow.start_run(run_id=run_id)
        try:
            info = mlflow.pytorch.log_model(
                member.model,
                name=MODEL_NAME,
                registered_model_name=name,
                input_example=example,
                extra_files=[str(config_path), str(weights_path)],
                serialization_format="pickle",  # pt2 would fix the window batch size
                pip_requirements=[f"torch=={torch.__version__}"],  # no slow inference
            )
        finally:  # the run's status and end time as they were (MLflow's Duration column)
            mlflow.end_run(status=before.status)
            client.set_terminated(run_id, status=before.status, end_time=before.end_time)
    version = str(info.registered_model_version)
    client.set_registered_model_alias(name, alias, version)
    client.set_model_version_tag(name, version, "ablate.run_id", run_id)
    return version
