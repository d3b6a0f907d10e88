"""MLflow helpers against a real SQLite store: URIs, parent/child lookup, params, summaries."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import pytest
import yaml
from ablate_sweep_helpers import TINY_TRIAL, mlflow_uri

from orchestrator import tracking
from orchestrator.callbacks import TrackingCallback
from orchestrator.trial_events import finished_outcome
from trainables.errors import InputError


@pytest.fixture
def client(tmp_path: Path):  # -> MlflowClient
    return tracking.connect(mlflow_uri(tmp_path))


def _one_cell_trial(base: dict, sample: dict | None = None) -> dict:
    """The config Tune hands a trial of a one-cell sweep over the trial config ``base``."""
    return {
        "ablate": {"cells": [{"label": "base", "config": base}]},
        "cell": 0,
        "sample": sample or {},
    }


def _sweep_parent(client, name: str) -> tuple[str, str]:  # client: MlflowClient
    """A sweep's experiment ``name`` and its parent run: (experiment id, parent run id)."""
    experiment = tracking.ensure_experiment(client, name)
    return experiment, client.create_run(experiment, run_name=name).info.run_id


def test_default_uri_is_an_sqlite_file_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    assert tracking.default_tracking_uri() == f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    assert tracking.default_tracking_uri() == "http://mlflow.example:5000"


def test_connect_rejects_an_unknown_store() -> None:
    with pytest.raises(InputError, match="cannot use MLflow tracking URI 'nosuch://x'"):
        tracking.connect("nosuch://x")


def test_a_server_address_without_scheme_is_refused_with_the_fix() -> None:
    for uri in ("127.0.0.1:15123", "mlflow-head:5000"):
        with pytest.raises(InputError, match=rf"'{uri}' has no scheme; .* write http://{uri},"):
            tracking.connect(uri)


def test_a_folder_uri_and_a_missing_store_to_read_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reading verb does not create an empty store in the wrong folder (winners, test,
    report, predict pass existing=True); a folder is MLflow's file store, which ablate never
    uses; a URI from the environment says so."""
    missing = tmp_path / "mlfow.db"  # a typo
    with pytest.raises(InputError, match=f"no MLflow store at {missing}: run ablate in the"):
        tracking.connect(f"sqlite:///{missing}", existing=True)
    assert not missing.exists()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "garbage")
    with pytest.raises(InputError) as err:
        tracking.connect("garbage")
    assert str(err.value) == (
        "MLflow tracking URI 'garbage' (from MLFLOW_TRACKING_URI) is a folder, not a store "
        "ablate uses: write sqlite:///path/to/mlflow.db for a local store, http://host:port "
        "for a server"
    )


def test_a_store_file_without_a_scheme_gets_the_uri_to_write(tmp_path: Path) -> None:
    """An existing mlflow.db given as a plain path was called "a folder" (audit)."""
    store = Path(mlflow_uri(tmp_path).removeprefix("sqlite:///"))
    assert store.is_file()
    with pytest.raises(InputError) as err:
        tracking.connect(str(store), existing=True)
    assert str(err.value) == (
        f"MLflow tracking URI {str(store)!r} is a file path without a scheme: write "
        f"sqlite:///{store} for this SQLite store"
    )
    assert tracking.connect(f"sqlite:///{store}", existing=True) is not None


def test_a_deleted_sweep_parent_is_named_with_the_way_back(tmp_path: Path) -> None:
    client = tracking.connect(mlflow_uri(tmp_path))
    experiment, _ = _sweep_parent(client, "empty")  # an experiment without a sweep parent
    with pytest.raises(InputError, match="sweep 'empty': MLflow experiment 'empty' holds no"):
        tracking.find_sweep(client, "empty")
    experiment = tracking.ensure_experiment(client, "gone")
    parent = tracking.open_parent_run(client, experiment, "gone", "/r", {})
    client.delete_run(parent)
    with pytest.raises(InputError) as err:
        tracking.find_sweep(client, "gone")
    assert str(err.value) == (
        f"sweep 'gone': its parent run {parent} was deleted in MLflow; restore it with "
        f"`MLFLOW_TRACKING_URI={client.tracking_uri} mlflow runs restore --run-id {parent}` to "
        "read the sweep again"
    )


def test_a_write_to_a_read_only_store_is_named(tmp_path: Path) -> None:
    """A real sqlite3 refusal, wrapped as MLflow wraps it, becomes one line."""
    import sqlite3

    from mlflow.exceptions import MlflowException

    from orchestrator.tracking_errors import read_only_store_message

    sqlite3.connect(tmp_path / "s.db").execute("create table t (x)").connection.commit()
    read_only = sqlite3.connect(f"file:{tmp_path / 's.db'}?mode=ro", uri=True)
    with pytest.raises(sqlite3.OperationalError) as refused:
        read_only.execute("insert into t values (1)")
    try:
        raise MlflowException("(sqlite3.OperationalError) ...") from refused.value
    except MlflowException as wrapped:
        assert read_only_store_message(wrapped).startswith(
            "the MLflow store (its SQLite file) is read-only here, and this command writes"
        )
    assert read_only_store_message(MlflowException("another problem")) is None


def test_experiment_artifacts_live_beside_the_sqlite_file(client, tmp_path: Path) -> None:
    first = tracking.ensure_experiment(client, "study")
    assert tracking.ensure_experiment(client, "study") == first
    location = client.get_experiment(first).artifact_location
    assert Path(location.removeprefix("file://")) == tmp_path / "mlartifacts" / "study"


def test_parent_and_child_runs_are_found_again_not_duplicated(client) -> None:
    experiment = tracking.ensure_experiment(client, "study")
    parent = tracking.open_parent_run(
        client, experiment, "study", "/ray/study", {"ablate.metric": "m"}
    )
    assert tracking.open_parent_run(client, experiment, "study", "/ray/study", {}) == parent
    other = tracking.open_parent_run(client, experiment, "study", "/ray/other", {})
    assert other != parent
    child, created = tracking.open_child_run(
        client, experiment, parent, "a/seed0", {"ablate.cell": "a"}
    )
    client.set_terminated(child, status="KILLED")
    again, created_again = tracking.open_child_run(client, experiment, parent, "a/seed0", {})
    assert (created, created_again, again) == (True, False, child)
    assert client.get_run(child).info.status == "RUNNING"  # reopened for the resumed trial
    tags = client.get_run(child).data.tags
    assert tags[tracking.PARENT_TAG] == parent and tags["ablate.trial_key"] == "a/seed0"
    assert [r.info.run_id for r in tracking.child_runs(client, client.get_run(parent))] == [child]


def test_flattened_params_in_batches_and_only_once(client) -> None:
    config = {"model": {"kind": "unet", "filters": [4, 8]}, "data": {"root": None}, "seed": 0}
    params = tracking.flatten(config)
    assert params == {
        "model.kind": "unet",
        "model.filters": "[4, 8]",
        "data.root": "null",
        "seed": "0",
    }
    experiment = tracking.ensure_experiment(client, "p")
    run = client.create_run(experiment).info.run_id
    many = {f"p{i:03d}": str(i) for i in range(250)}
    tracking.log_params(client, run, many)
    tracking.log_params(client, run, many)  # logging again (a resumed trial) is not an error
    assert client.get_run(run).data.params == many


def test_summary_takes_every_dice_at_the_best_epoch(client) -> None:
    experiment = tracking.ensure_experiment(client, "s")
    run = client.create_run(experiment).info.run_id
    rows = [(1, 0.3, 0.4, 12.0), (2, 0.6, 0.7, 10.0), (3, 0.5, 0.9, 11.0)]
    for epoch, mean, wt, seconds in rows:
        metrics = {"val/dice_mean": mean, "val/dice_wt": wt, "perf/epoch_s": seconds}
        tracking.log_metrics(client, run, metrics | {"val/hd95_wt": math.nan}, epoch)
    summary = tracking.summarize(client, run, "val/dice_mean", "max")
    assert summary == {
        "best/epoch": 2.0,
        "best/val/dice_mean": 0.6,
        "best/val/dice_wt": 0.7,
        "summary/epoch_s": 11.0,
    }
    assert tracking.summarize(client, run, "val/dice_mean", "min")["best/epoch"] == 1.0
    assert "val/hd95_wt" not in client.get_run(run).data.metrics  # NaN is not logged


def test_summary_uses_the_best_epoch_the_engine_reported(client) -> None:
    """The runner's ``best/epoch`` wins over a recomputation (here the engine picked epoch 1,
    e.g. its metric tie rule, though the history alone would say 2)."""
    experiment = tracking.ensure_experiment(client, "s")
    run = client.create_run(experiment).info.run_id
    for epoch, mean in ((1, 0.6), (2, 0.6), (3, 0.5)):
        metrics = {"val/dice_mean": mean, "val/dice_wt": 0.1 * epoch, "best/epoch": 1.0}
        tracking.log_metrics(client, run, metrics, epoch)
    summary = tracking.summarize(client, run, "val/dice_mean", "min")  # mode ignored: reported
    assert summary["best/epoch"] == 1.0 and summary["best/val/dice_wt"] == pytest.approx(0.1)
    tracking.log_metrics(client, run, summary, step=0)  # the summary at step 0 is not a report
    assert tracking.summarize(client, run, "val/dice_mean", "max")["best/epoch"] == 1.0


def test_find_sweep_by_name_or_run_id(client) -> None:
    experiment = tracking.ensure_experiment(client, "study")
    old = tracking.open_parent_run(client, experiment, "study", "/ray/a", {"ablate.kind": "sweep"})
    new = tracking.open_parent_run(client, experiment, "study", "/ray/b", {"ablate.kind": "sweep"})
    assert tracking.find_sweep(client, "study").info.run_id == new  # the latest sweep
    assert tracking.find_sweep(client, old).info.run_id == old
    with pytest.raises(InputError, match=r"no sweep named 'stduy' in sqlite:.*\(sweeps: study\)"):
        tracking.find_sweep(client, "stduy")


def test_tracking_callback_pickles_its_settings_only(client) -> None:
    callback = TrackingCallback("sqlite:///x.db", "1", "parent", metric="val/dice_mean", mode="max")
    callback.runs["t1"] = "run"
    clone = pickle.loads(pickle.dumps(callback))
    assert clone.settings == callback.settings and clone.metric == "val/dice_mean"
    assert clone.runs == {} and clone.client is None and clone.writer is None


def test_outcome_of_a_trial_ended_before_its_epochs() -> None:
    assert finished_outcome({"epoch": 2.0}, planned=2) == "finished"
    assert finished_outcome({"epoch": 1.0}, planned=3) == "stopped_early"


def test_a_sampled_trial_whose_config_is_invalid_still_gets_its_failed_run(client) -> None:
    base = yaml.safe_load(TINY_TRIAL.read_text())
    base["schedule"] = {"kind": "cosine", "min_lr": 1e-5}
    sample = {"optimizer.lr": 1e-4, "schedule.min_lr": 2e-3}  # min_lr above lr: invalid
    config = _one_cell_trial(base, sample)
    experiment, parent = _sweep_parent(client, "joint")
    callback = TrackingCallback(client.tracking_uri, experiment, parent, "val/dice_mean", "max")
    callback.setup()
    error = "InputError: sampled trial t1: schedule.min_lr: 0.002 must not exceed optimizer.lr"
    callback._finish_run("t1", config, {}, error, None)  # what on_trial_error queues

    (run,) = tracking.child_runs(client, client.get_run(parent))
    assert run.info.run_name == "base,lr=0.0001,min_lr=0.002/seed0#t1"
    assert run.info.status == "FAILED" and run.data.tags["ablate.outcome"] == "failed"
    assert (
        run.data.tags["ablate.error"] == error
        and run.data.tags["ablate.cell"] == "base,lr=0.0001,min_lr=0.002"
    )
    assert run.data.params["optimizer.lr"] == "0.0001"  # the params as sampled


def test_an_epoch_trained_again_after_a_restore_is_logged_once(client) -> None:
    """A driver killed after epoch 2's result but before its checkpoint: the resumed driver's
    callback finds the run again, the trial retrains epoch 2 from epoch 1's checkpoint, and the
    run keeps one point per epoch (the first epoch 2), not two."""
    base = yaml.safe_load(TINY_TRIAL.read_text())
    config = _one_cell_trial(base)
    experiment, parent = _sweep_parent(client, "restored")
    first = TrackingCallback(client.tracking_uri, experiment, parent, "val/dice_mean", "max")
    first.client = client
    first._start_run("t1", config)
    for epoch, loss in ((1, 0.9), (2, 0.8)):
        first._log_epoch("t1", {"train/loss": loss, "val/dice_mean": 1 - loss}, epoch, None)

    resumed = TrackingCallback(client.tracking_uri, experiment, parent, "val/dice_mean", "max")
    resumed.client = client
    resumed._start_run("t1", config)  # found again, with its two epochs
    for epoch, loss in ((2, 0.7), (3, 0.6)):  # epoch 2 again, from epoch 1's checkpoint
        resumed._log_epoch("t1", {"train/loss": loss, "val/dice_mean": 1 - loss}, epoch, None)

    run_id = resumed.runs["t1"]
    assert first.runs["t1"] == run_id
    history = client.get_metric_history(run_id, "train/loss")
    assert sorted((m.step, m.value) for m in history) == [(1, 0.9), (2, 0.8), (3, 0.6)]
    assert [m.step for m in client.get_metric_history(run_id, "val/dice_mean")] == [1, 2, 3]


def test_ctrl_c_while_a_trial_actor_starts_leaves_the_parent_killed(client) -> None:
    """On Ctrl-C Tune marks live trials TERMINATED without a completion hook; a trial whose
    actor was still starting (no run yet) must not make the interrupted sweep look FINISHED."""
    from ray.tune.experiment import Trial

    base = yaml.safe_load(TINY_TRIAL.read_text())
    config = _one_cell_trial(base)
    experiment, parent = _sweep_parent(client, "interrupted")
    done, starting = (Trial("ablate", config=config, trial_id=i, stub=True) for i in ("t0", "t1"))
    done.set_status(Trial.RUNNING)
    starting.set_status(Trial.PENDING)
    callback = TrackingCallback(client.tracking_uri, experiment, parent, "val/dice_mean", "max")
    callback.setup()
    callback.on_step_end(iteration=1, trials=[done, starting])
    done.set_status(Trial.TERMINATED)
    callback.on_trial_complete(iteration=2, trials=[done, starting], trial=done)
    starting.set_status(Trial.TERMINATED)  # what Tune's cleanup does after Ctrl-C
    callback.on_experiment_end(trials=[done, starting])
    assert client.get_run(parent).info.status == "KILLED"

    finished = TrackingCallback(client.tracking_uri, experiment, parent, "val/dice_mean", "max")
    finished.setup()
    finished.on_step_end(iteration=1, trials=[done])  # every trial concluded: a finished sweep
    finished.on_experiment_end(trials=[done])
    assert client.get_run(parent).info.status == "FINISHED"


def test_a_run_the_server_lost_right_after_creating_gets_its_params_when_found_again(
    client,
) -> None:
    """The server went away between creating the child run and logging its params: the call
    is sent again (the writer) or replayed (``--resume``), finds the run by its key and fills
    in what it lacks instead of leaving it without params."""
    from trainables.trainable import trial_identity

    base = yaml.safe_load(TINY_TRIAL.read_text())
    config = _one_cell_trial(base)
    experiment, parent = _sweep_parent(client, "halfmade")
    key = trial_identity(config, "t1").key
    run_id, created = tracking.open_child_run(client, experiment, parent, key, {})
    assert created and not client.get_run(run_id).data.params  # what the server kept

    callback = TrackingCallback(client.tracking_uri, experiment, parent, "val/dice_mean", "max")
    callback.client = client
    callback._start_run("t1", config)
    assert callback.runs["t1"] == run_id  # the same run, not a second one
    run = client.get_run(run_id)
    assert run.data.params["optimizer.lr"] == str(base["optimizer"]["lr"])
    assert [a.path for a in client.list_artifacts(run_id, "config")] == ["config/trial.yaml"]
    assert run.data.tags["ablate.outcome"] == "running"


def test_a_finish_half_sent_before_a_resume_leaves_one_point_per_summary_key(client) -> None:
    """The first driver sent a trial's test metrics and summary (step 0) and then lost the
    server before the run was marked finished; ``--resume`` replays the saved epochs and the
    finish. The run ends FINISHED with one step-0 point per key, not two."""
    base = yaml.safe_load(TINY_TRIAL.read_text())
    base["train"]["epochs"] = 2
    config = _one_cell_trial(base)
    experiment, parent = _sweep_parent(client, "halfsent")
    epochs = [
        {"train/loss": 0.9, "val/dice_mean": 0.4, "best/epoch": 1.0, "perf/epoch_s": 2.0},
        {"train/loss": 0.8, "val/dice_mean": 0.5, "best/epoch": 2.0, "perf/epoch_s": 3.0},
    ]
    epochs[-1] |= {"test/dice_mean": 0.45, "test/cases": 2.0}  # the selected weights, tested
    epochs[-1] |= {"postprocess/largest_component": 1.0}  # as ``auto`` decided it for them

    def drive() -> TrackingCallback:
        callback = TrackingCallback(client.tracking_uri, experiment, parent, "val/dice_mean", "max")
        callback.client = client
        callback._start_run("t1", config)
        for step, metrics in enumerate(epochs, start=1):
            callback._log_epoch("t1", dict(metrics), step, None)
        callback._finish_run("t1", config, {"epoch": 2.0}, None, None)
        return callback

    run_id = drive().runs["t1"]
    client.update_run(run_id, "RUNNING")  # what the server kept: no final status
    assert drive().runs["t1"] == run_id  # the resumed driver finds it and finishes it

    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["ablate.outcome"] == "finished"
    summaries = ("test/dice_mean", "test/cases", "summary/epoch_s", "best/val/dice_mean")
    for key in (*summaries, "postprocess/largest_component"):
        assert [m.step for m in client.get_metric_history(run_id, key)] == [0], key
    history = client.get_metric_history(run_id, "best/epoch")  # per epoch, then the summary
    assert sorted(m.step for m in history) == [0, 1, 2]
    assert run.data.metrics["summary/epoch_s"] == 2.5 and run.data.metrics["best/epoch"] == 2
