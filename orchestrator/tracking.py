"""MLflow structure of a sweep: one parent run, one child run per trial.

Runs are found by tags, never by remembering ids in memory only, so the trial -> run mapping
survives ``--resume`` and retries: the parent carries ``ablate.sweep_path`` (the Tune experiment
directory) and each child carries ``mlflow.parentRunId`` and ``ablate.trial_key``. Before a
child run is created it is looked up by those tags.

Tags used (``ablate.*``): kind (sweep|trial), space_file, space_hash, left_out_cases (--data
cases no trial could use), git_commit (the study
file's folder), code_commit and version (ablate's own), split_hash,
ray_version, torch_version, metric, mode, trial_key, cell, seed, fold (k-fold trials),
tune_trial_id, outcome
(running|finished|stopped_early|failed|infeasible|diverged|killed), error; plus ``infeasible``
(the out-of-memory message with its memory figure) and ``winner``.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from orchestrator.preflight import check_sqlite_store
from orchestrator.tracking_errors import no_parent_message, restore_command
from trainables.errors import InputError
from trainables.metrics import names

# MLflow draws a progress bar for every artifact download (winners and report read a few small
# JSON files per run), burying the table the user asked for. Set it to "true" to see them.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
# MLflow retries a failed request 7 times with doubling waits: about 4 minutes before a command,
# or the sweep's writer, learns that the server is gone (measured: 248 s against a closed port).
# 3 retries (about 14 s) still ride out a blip; the sweep's writer waits out longer outages
# itself (orchestrator/tracking_writer.py). The user's setting wins.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

PARENT_TAG = "mlflow.parentRunId"
MAX_TAG = 4000  # MLflow caps tag values; errors are cut to this many characters
BATCH = 100  # MLflow's limit of params per log_batch call
SUMMARY_KEYS = names.dice_names("val")  # val/dice_<region>..., val/dice_mean


def default_tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI``, else an SQLite file ``mlflow.db`` in the working directory."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def connect(uri: str, timeout_s: float = 5.0, existing: bool = False) -> MlflowClient:
    """A client for ``uri`` after checking it answers; InputError naming the URI otherwise.

    Remote servers are probed with one short HTTP request first, because MLflow's own client
    retries for minutes before giving up. ``existing``: the verb reads a sweep, so an SQLite
    file that is not there is a wrong folder or a typo, not a store to create.
    """
    import logging

    from mlflow.tracking import MlflowClient

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)  # raised anyway
    origin = " (from MLFLOW_TRACKING_URI)" if os.environ.get("MLFLOW_TRACKING_URI") == uri else ""
    if re.fullmatch(r"[\w.-]+:\d+(/.*)?", uri):  # MLflow would take it for a folder name
        raise InputError(
            f"MLflow tracking URI {uri!r}{origin} has no scheme; for a tracking server write "
            f"http://{uri}, for a local store sqlite:///path/to/mlflow.db"
        )
    scheme = urlparse(uri).scheme
    if scheme == "" and (Path(uri).expanduser().is_file() or uri.endswith(".db")):
        path = Path(uri).expanduser().absolute()
        raise InputError(
            f"MLflow tracking URI {uri!r}{origin} is a file path without a scheme: write "
            f"sqlite:///{path} for this SQLite store"
        )
    if scheme in ("", "file"):  # MLflow's file store: in maintenance mode, never ablate's
        raise InputError(
            f"MLflow tracking URI {uri!r}{origin} is a folder, not a store ablate uses: write "
            "sqlite:///path/to/mlflow.db for a local store, http://host:port for a server"
        )
    if scheme in ("http", "https"):
        _probe_http(uri, timeout_s)
    elif scheme == "sqlite":
        check_sqlite_store(uri, existing)
    try:
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)  # models live in the store
        client.search_experiments(max_results=1)
    except Exception as err:  # MLflow raises many types for a bad store
        message = f"cannot use MLflow tracking URI {uri!r}{origin}: {_one_line(err)}"
        raise InputError(message) from None
    return client


def _probe_http(uri: str, timeout_s: float) -> None:
    url = uri.rstrip("/") + "/health"
    try:
        urllib.request.urlopen(url, timeout=timeout_s).close()
    except urllib.error.HTTPError:
        return  # the server answered: reachable (the store check follows)
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise InputError(
            f"MLflow tracking URI {uri!r} is unreachable ({reason}); start the server or pass "
            "--tracking-uri / MLFLOW_TRACKING_URI"
        ) from None


def answers(uri: str, timeout_s: float = 5.0) -> bool:
    """Whether a tracking server answers at all (any HTTP status); a local store always does.

    Used mid-sweep to tell an outage (wait for the server) from a call MLflow refused.
    """
    if urlparse(uri).scheme not in ("http", "https"):
        return True
    try:
        _probe_http(uri, timeout_s)
    except InputError:
        return False
    return True


def ensure_experiment(client: MlflowClient, name: str) -> str:
    """The id of MLflow experiment ``name``, created (or restored from deleted) as needed.

    With an SQLite store, artifacts go to ``mlartifacts/`` beside the database file rather
    than into whatever directory the command runs from.
    """
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        if experiment.lifecycle_stage == "deleted":
            client.restore_experiment(experiment.experiment_id)
        return experiment.experiment_id
    uri = client.tracking_uri
    location = None
    if uri.startswith("sqlite:///") and ":memory:" not in uri:
        location = str(Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts" / name)
    return client.create_experiment(name, artifact_location=location)


def open_parent_run(
    client: MlflowClient, experiment_id: str, name: str, sweep_path: str, tags: dict[str, str]
) -> str:
    """The parent run of the sweep stored at ``sweep_path``: found by tag, else created."""
    found = search(client, experiment_id, {"ablate.sweep_path": sweep_path, "ablate.kind": "sweep"})
    if found:
        run_id = found[0].info.run_id
        client.update_run(run_id, status="RUNNING")
        return run_id
    tags = {**tags, "ablate.kind": "sweep", "ablate.sweep_path": sweep_path}
    run = client.create_run(experiment_id, tags=tags, run_name=name)
    return run.info.run_id


def open_child_run(
    client: MlflowClient, experiment_id: str, parent_id: str, key: str, tags: dict[str, str]
) -> tuple[str, bool]:
    """(run id, created) of the trial ``key`` under ``parent_id``: found by tag, else created."""
    found = find_child_run(client, experiment_id, parent_id, key)
    if found:
        run_id = found.info.run_id
        client.update_run(run_id, status="RUNNING")
        return run_id, False
    tags = {**tags, PARENT_TAG: parent_id, "ablate.kind": "trial", "ablate.trial_key": key}
    return client.create_run(experiment_id, tags=tags, run_name=key).info.run_id, True


def find_child_run(
    client: MlflowClient, experiment_id: str, parent_id: str, key: str
) -> Run | None:
    """The run of the trial ``key`` under ``parent_id``, if there is one."""
    found = search(client, experiment_id, {PARENT_TAG: parent_id, "ablate.trial_key": key})
    return found[0] if found else None


def search(client: MlflowClient, experiment_id: str, tags: dict[str, str]) -> list[Run]:
    """Every run of the experiment whose tags equal ``tags`` (all pages), oldest first."""
    query = " and ".join(f"tags.`{k}` = {_quote(v)}" for k, v in tags.items())
    runs: list[Run] = []
    token = None
    while True:
        page = client.search_runs(
            [experiment_id], query, max_results=1000, page_token=token, order_by=["start_time ASC"]
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Dotted params from a nested config: ``{"model.filters": "[32, 64]", "seed": "0"}``."""
    out: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, prefix=f"{name}."))
        elif isinstance(value, str):
            out[name] = value
        else:
            out[name] = json.dumps(value)
    return out


def log_params(client: MlflowClient, run_id: str, params: dict[str, str]) -> None:
    """Log params in batches of MLflow's maximum size; values already logged are skipped."""
    from mlflow.entities import Param

    known = client.get_run(run_id).data.params
    items = [Param(k, v[:6000]) for k, v in params.items() if k not in known]
    for start in range(0, len(items), BATCH):
        client.log_batch(run_id, params=items[start : start + BATCH])


def log_metrics(client: MlflowClient, run_id: str, metrics: dict[str, float], step: int) -> None:
    """Finite metrics at ``step`` in one batch (NaN marks undefined values: not logged)."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    batch = [Metric(k, float(v), now, step) for k, v in metrics.items() if math.isfinite(v)]
    if batch:
        client.log_batch(run_id, metrics=batch)


def mark_undefined(client: MlflowClient, run_id: str, keys: list[str], step: int) -> None:
    """Log NaN for ``keys`` at ``step``: MLflow cannot delete a metric, and a value an
    overwriting evaluation no longer defines (an RVD over an empty region) would otherwise
    stay, shown beside results it does not belong to."""
    from mlflow.entities import Metric

    if keys:
        now = int(time.time() * 1000)
        client.log_batch(run_id, metrics=[Metric(k, math.nan, now, step) for k in keys])


def holds_at_step(client: MlflowClient, run_id: str, key: str, step: int) -> bool:
    """Whether the run has a point of ``key`` at ``step``: a batch logged before (one
    ``log_batch`` is stored whole, so one of its keys answers for all of them)."""
    return any(m.step == step for m in client.get_metric_history(run_id, key))


def set_tags(client: MlflowClient, run_id: str, tags: dict[str, str]) -> None:
    from mlflow.entities import RunTag

    client.log_batch(run_id, tags=[RunTag(k, str(v)[:MAX_TAG]) for k, v in tags.items()])


def summarize(client: MlflowClient, run_id: str, metric: str, mode: str) -> dict[str, float]:
    """Summary metrics of a finished trial.

    The best epoch is the engine's: the last ``best/epoch`` the trial reported (the runner
    tracks it by ``metric``/``mode``); runs without it (older runs) fall back to the best of the
    ``metric`` history. Returns ``best/epoch``, ``best/<metric>`` and the Dice of every region at
    that epoch (``best/val/dice_wt``...), the mean epoch time ``summary/epoch_s`` and the peak
    GPU memory ``summary/peak_gpu_mem_gib`` over epochs.
    """
    out: dict[str, float] = {}
    best_step = _best_step(client, run_id, metric, mode)
    if best_step is not None:
        out["best/epoch"] = float(best_step)
        for key in dict.fromkeys([metric, *SUMMARY_KEYS]):
            at = {m.step: m.value for m in client.get_metric_history(run_id, key)}
            if best_step in at:
                out[f"best/{key}"] = at[best_step]
    # by step: an epoch logged twice (re-run after an interrupt) counts once
    times = {m.step: m.value for m in client.get_metric_history(run_id, "perf/epoch_s")}
    if times:
        out["summary/epoch_s"] = sum(times.values()) / len(times)
    peaks = [m.value for m in client.get_metric_history(run_id, "perf/peak_gpu_mem_gib")]
    if peaks:
        out["summary/peak_gpu_mem_gib"] = max(peaks)
    return out


def _best_step(client: MlflowClient, run_id: str, metric: str, mode: str) -> int | None:
    """The reported ``best/epoch`` at the last epoch logged (step > 0: the summary itself is
    logged at step 0), else the best step of the ``metric`` history, else None."""
    reported = [m for m in client.get_metric_history(run_id, "best/epoch") if m.step > 0]
    if reported:
        return int(max(reported, key=lambda m: (m.step, m.timestamp)).value)
    history = {m.step: m.value for m in client.get_metric_history(run_id, metric)}
    if not history:
        return None
    pick = max if mode == "max" else min
    return pick(history, key=lambda s: history[s])


def histories(
    client: MlflowClient, run_id: str, keys: Iterable[str]
) -> dict[str, list[tuple[int, float]]]:
    """``{key: [(step, value), ...]}`` sorted by step, for the keys the run has."""
    out = {}
    for key in keys:
        points = sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))
        if points:
            out[key] = points
    return out


def find_sweep(client: MlflowClient, sweep: str) -> Run:
    """The parent run named by ``sweep``: a parent run id, or an experiment name (latest sweep).

    Raises InputError listing the known sweeps when nothing matches.
    """
    experiment = client.get_experiment_by_name(sweep)
    if experiment is not None:
        parents = search(client, experiment.experiment_id, {"ablate.kind": "sweep"})
        if parents:
            return parents[-1]
        raise InputError(no_parent_message(client, sweep, experiment.experiment_id))
    try:
        run = client.get_run(sweep)
    except Exception:
        run = None
    if run is not None and run.data.tags.get("ablate.kind") == "sweep":
        if run.info.lifecycle_stage == "deleted":  # a parent in the trash, named by its id
            raise InputError(
                f"sweep parent run {sweep} was deleted in MLflow; restore it with "
                f"{restore_command(client, sweep)} to read the sweep again"
            )
        return run
    names = sorted(e.name for e in client.search_experiments() if e.name != "Default")
    known = ", ".join(names) or "none yet"
    raise InputError(f"no sweep named {sweep!r} in {client.tracking_uri} (sweeps: {known})")


def child_runs(client: MlflowClient, parent: Run) -> list[Run]:
    """The trial runs of a sweep, oldest first."""
    return search(client, parent.info.experiment_id, {PARENT_TAG: parent.info.run_id})


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"


def log_json(
    client: MlflowClient, run_id: str, payload: Any, name: str, where: str | None = None
) -> None:
    """Log ``payload`` as a JSON artifact file ``name``."""
    log_bytes(client, run_id, json.dumps(payload, indent=2).encode(), name, where)


def log_bytes(
    client: MlflowClient, run_id: str, data: bytes, name: str, where: str | None = None
) -> None:
    """Log ``data`` as the artifact file ``name`` (in folder ``where``)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(data)
        client.log_artifact(run_id, str(path), where)
