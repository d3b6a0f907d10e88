"""MODEL names of ``ablate predict`` resolved against real MLflow stores, and the winner
registered in a real ``mlflow server``'s Model Registry, loaded back and predicting."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from ablate_sweep_helpers import mlflow_uri

from orchestrator import provenance, tracking
from orchestrator.cli import main
from orchestrator.models import load_registered, register_winner, resolve_model, use_store
from tests.cluster.cluster_harness import MlflowServer
from tests.trainables.engine.predict_helpers import random_checkpoint, write_image_case
from trainables.errors import InputError


def _sweep(uri: str, name: str = "abl") -> tuple[object, str, str]:
    client = tracking.connect(uri)
    experiment = tracking.ensure_experiment(client, name)
    tags = provenance.parent_tags({"ablate.metric": "val/dice_mean", "ablate.mode": "max"})
    return client, experiment, tracking.open_parent_run(client, experiment, name, "/r", tags)


def _trial(client, experiment, parent, cell, seed, dice, checkpoint=None, status="FINISHED"):
    """A child run with ``best/val/dice_mean`` and, if given, ``checkpoint/best.pt``."""
    tags = {"ablate.cell": cell, "ablate.seed": str(seed), "ablate.split_hash": "s1"}
    run_id, _ = tracking.open_child_run(client, experiment, parent, f"{cell}/{seed}", tags)
    tracking.log_metrics(client, run_id, {"best/val/dice_mean": dice, "summary/epoch_s": 1.0}, 0)
    if checkpoint is not None:
        client.log_artifact(run_id, str(checkpoint), "checkpoint")
    outcome = "finished" if status == "FINISHED" else "failed"
    tracking.set_tags(client, run_id, {"ablate.outcome": outcome})
    client.set_terminated(run_id, status=status)
    return run_id


def _checkpoint(folder: Path, seed: int) -> Path:
    path = folder / f"seed{seed}" / "best.pt"
    random_checkpoint(path, seed=seed)
    return path


def test_model_names_resolve_to_runs_cells_and_winners(tmp_path: Path, capsys) -> None:
    uri = mlflow_uri(tmp_path)
    client, exp, parent = _sweep(uri)
    a0 = _trial(client, exp, parent, "a", 0, 0.5, _checkpoint(tmp_path, 0))
    a1 = _trial(client, exp, parent, "a", 1, 0.6, _checkpoint(tmp_path, 1))
    best = _trial(client, exp, parent, "b", 0, 0.9, _checkpoint(tmp_path, 2))
    _trial(client, exp, parent, "b", 1, 0.85, _checkpoint(tmp_path, 3))  # two runs: an interval
    _trial(client, exp, parent, "c", 0, 0.1, None, status="FAILED")
    bare = _trial(client, exp, parent, "d", 0, 0.2, None)
    folder = tmp_path / "seed0"  # a --checkpoint-dir: its best.pt
    assert resolve_model(str(folder), uri)[0][0] == str(folder / "best.pt")
    cell = resolve_model("abl:a", uri)
    assert [source.split()[1] for source, _ in cell] == [a0, a1]
    assert resolve_model(best, uri)[0][0] == f"run {best} (b/0)"
    assert resolve_model("abl", uri)[0][0] == f"run {best} (b/0)"  # ranked: best cell's run
    client.set_tag(a1, "winner", "true")
    assert resolve_model("abl", uri)[0][0] == f"run {a1} (a/1)"  # the tag decides
    (tmp_path / "in").mkdir()
    for spec, message in [
        ("abl:c", "cell 'c' of sweep 'abl' has no finished runs (failed)"),
        ("abl:zz", "sweep 'abl' has no cell 'zz' (cells: a, b, c, d)"),
        (bare, f"run {bare} (d/0, finished) has no checkpoint/best.pt artifact"),
        ("nosweep", "no sweep named 'nosweep'"),
        (  # a checkpoint folder without its best.pt was reported as a missing sweep (audit)
            str(tmp_path / "in"),
            f"{tmp_path / 'in'} is a folder without best.pt (an `ablate train --checkpoint-dir` "
            f"folder holds one), and as a sweep or run name: no sweep named '{tmp_path / 'in'}'",
        ),
    ]:
        with pytest.raises(InputError) as err:
            resolve_model(spec, uri)
        assert message in str(err.value)
    write_image_case(tmp_path / "in", "c0")
    out = tmp_path / "out"
    args = ["predict", "abl:a", str(tmp_path / "in"), "--out", str(out), "--tracking-uri", uri]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "2-model ensemble of attention_unet" in err
    assert f"from run {a0} (a/0); run {a1} (a/1)" in err  # the runs used, named
    assert nib.load(out / "c0.nii.gz").shape == (30, 26, 22)
    args = ["predict", "abl", str(tmp_path / "in"), "--out", str(out), "--tracking-uri", uri]
    assert main([*args, "--overwrite", "--json"]) == 0
    captured = capsys.readouterr()
    assert f"from run {a1} (a/1)" in captured.err  # the sweep's winner, named
    assert json.loads(captured.out)["model"] == [f"run {a1} (a/1)"]
    # a full --out is refused before the model is looked up (a sweep that does not exist)
    assert main([*args[:1], "nosweep", *args[2:]]) == 2
    err = capsys.readouterr().err
    assert "the output folder already holds 1 files (c0.nii.gz)" in err and "nosweep" not in err
    (tmp_path / "empty").mkdir()  # nor an input folder that is no dataset (audit)
    assert main(["predict", "nosweep", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "dataset directory is empty" in err and "nosweep" not in err


def test_deleted_and_unknown_run_ids_are_refused(tmp_path: Path) -> None:
    """A run in MLflow's trash is not predicted from (nor a deleted sweep read by its parent
    id); an id the store does not hold is said to be a run id, not a sweep name."""
    uri = mlflow_uri(tmp_path)
    client, exp, parent = _sweep(uri)
    run = _trial(client, exp, parent, "a", 0, 0.5, _checkpoint(tmp_path, 0))
    client.delete_run(run)
    with pytest.raises(InputError) as err:
        resolve_model(run, uri)
    assert str(err.value) == (  # the store named: mlflow's CLI reads it from the environment
        f"run {run} (a/0) was deleted in MLflow; restore it with `MLFLOW_TRACKING_URI={uri} "
        f"mlflow runs restore --run-id {run}` to predict with it"
    )
    client.delete_run(parent)
    with pytest.raises(InputError, match=f"sweep parent run {parent} was deleted in MLflow"):
        resolve_model(parent, uri)
    unknown = "0" * 32
    with pytest.raises(InputError, match=f"no run with id {unknown} in "):
        resolve_model(unknown, uri)


def test_an_undecided_model_is_refused_by_name_unless_raw_maps_are_asked_for(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = tmp_path / "ckpt" / "best.pt"
    random_checkpoint(ckpt, validation__test_postprocess={"largest_component": "auto"})
    write_image_case(tmp_path / "in", "c0")
    args = ["predict", str(ckpt), str(tmp_path / "in"), "--out", str(tmp_path / "out")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"{ckpt}: validation.test_postprocess.largest_component is 'auto', but" in err
    assert main([*args, "--no-postprocess"]) == 0
    assert (tmp_path / "out" / "c0.nii.gz").is_file()


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real ``mlflow server`` on 127.0.0.1 (SQLite store, served artifacts), stopped after."""
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server"), dict(os.environ))
    server.start()
    try:
        yield server.uri
    finally:
        server.stop()


def test_a_registered_model_loads_without_unpickling(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The registered version carries the state dict as ``weights.pt``: ``ablate predict``
    reads it (and the trial config) where MLflow refuses pickle, with the winner's weights."""
    uri = mlflow_uri(tmp_path)
    client, exp, parent = _sweep(uri, "safe")
    run = _trial(client, exp, parent, "a", 0, 0.5, _checkpoint(tmp_path, 4))
    ended = client.get_run(run).info.end_time
    assert register_winner(client, run, "seg") == "1"
    info = client.get_run(run).info
    assert (info.status, info.end_time) == ("FINISHED", ended)  # its Duration is unchanged
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
    source, loaded = load_registered("models:/seg@champion", uri)
    assert source == "models:/seg@champion (version 1)"
    expected = resolve_model(str(tmp_path / "seed4" / "best.pt"))[0][1]
    assert loaded["config"] == expected["config"]
    assert loaded["model"].keys() == expected["model"].keys()
    for key, tensor in expected["model"].items():
        assert torch.equal(loaded["model"][key], tensor), key


def test_a_registered_model_is_read_from_the_store_named_not_the_default_one(
    tmp_path: Path,
) -> None:
    """``predict models:/seg@champion --tracking-uri A`` looked the version up in A and
    downloaded it through MLflow's default registry: from another store holding a ``seg`` too,
    another model was loaded silently (found by an audit)."""
    import mlflow

    stores = {}
    for name, seed in (("a", 5), ("b", 6)):
        (tmp_path / name).mkdir()
        uri = mlflow_uri(tmp_path / name)
        client, exp, parent = _sweep(uri, f"sweep-{name}")
        run = _trial(client, exp, parent, "x", 0, 0.5, _checkpoint(tmp_path / name, seed))
        assert register_winner(client, run, "seg") == "1"
        stores[name] = uri
    before = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    mlflow.set_tracking_uri(stores["b"])  # the process's default store: another "seg"
    mlflow.set_registry_uri(stores["b"])
    try:
        _, loaded = load_registered("models:/seg@champion", stores["a"])
    finally:
        mlflow.set_tracking_uri(before[0])
        mlflow.set_registry_uri(before[1])
    expected = resolve_model(str(tmp_path / "a" / "seed5" / "best.pt"))[0][1]
    for key, tensor in expected["model"].items():
        assert torch.equal(loaded["model"][key], tensor), key


def test_a_failed_registration_leaves_the_run_finished(tmp_path: Path, capsys) -> None:
    """A name MLflow refuses is refused by the CLI before anything is logged (exit 2); a
    registration that fails inside MLflow anyway leaves the winning run FINISHED, not FAILED
    (which would drop it from the table)."""
    from mlflow.exceptions import MlflowException

    uri = mlflow_uri(tmp_path)
    client, exp, parent = _sweep(uri, "keep")
    run = _trial(client, exp, parent, "a", 0, 0.5, _checkpoint(tmp_path, 6))
    for name, why in [("a/b", "'a/b' contains '/'"), ("", "needs a name, got an empty one")]:
        with pytest.raises(SystemExit) as exit_:
            main(["winners", "keep", "--register", name, "--tracking-uri", uri])
        assert exit_.value.code == 2 and why in capsys.readouterr().err
    with pytest.raises(MlflowException, match="Names cannot contain"):
        register_winner(client, run, "bad:name")
    assert client.get_run(run).info.status == "FINISHED"
    assert main(["winners", "keep", "--tracking-uri", uri]) == 0
    assert "winner run: " + run[:8] in capsys.readouterr().out


def test_a_pickle_only_version_names_the_way_on_where_pickle_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A version an older ablate registered (the pickled module and the config, no
    weights.pt) still loads where MLflow allows pickle; where it does not, the message says
    what to do instead of MLflow's exception."""
    import mlflow
    import mlflow.pytorch

    from trainables.engine.predict import build_predictor

    uri = mlflow_uri(tmp_path)
    checkpoint = resolve_model(str(_checkpoint(tmp_path, 5)))[0][1]
    model = build_predictor([("c", checkpoint)], device="cpu").members[0].model
    config = tmp_path / "trial_config.json"
    config.write_text(json.dumps(checkpoint["config"]))
    use_store(uri)  # tracking and registry: log_model registers through the process-wide one
    with mlflow.start_run():
        mlflow.pytorch.log_model(
            model,
            name="model",
            registered_model_name="old",
            extra_files=[str(config)],
            serialization_format="pickle",
            pip_requirements=["torch"],
        )
    tracking.connect(uri).set_registered_model_alias("old", "champion", "1")
    _, loaded = load_registered("models:/old@champion", uri)
    assert all(torch.equal(loaded["model"][k], v) for k, v in checkpoint["model"].items())
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
    with pytest.raises(InputError) as err:
        load_registered("models:/old@champion", uri)
    assert "models:/old@champion: this version has no weights.pt (registered by an older " in (
        str(err.value)
    )
    assert "register the run again with `ablate winners SWEEP --register NAME`" in str(err.value)


@pytest.mark.slow  # starting mlflow server alone takes 10-50 s on a shared 2-core machine
def test_the_winner_is_registered_loaded_and_predicts(
    mlflow_server: str, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = mlflow_server
    client, exp, parent = _sweep(uri, "reg")
    _trial(client, exp, parent, "a", 0, 0.5, _checkpoint(tmp_path, 0))
    ckpt = _checkpoint(tmp_path, 3)
    winner = _trial(client, exp, parent, "b", 0, 0.8, ckpt)
    assert main(["winners", "reg", "--register", "seg", "--tracking-uri", uri]) == 0
    assert "registered run" in capsys.readouterr().err
    version = client.get_model_version_by_alias("seg", "champion")
    assert version.version == "1" and version.tags["ablate.run_id"] == winner
    write_image_case(tmp_path / "in", "c0")
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")  # predict needs none
    for spec, out in (("models:/seg@champion", "reg"), (str(ckpt), "ckpt")):
        args = ["predict", spec, str(tmp_path / "in"), "--out", str(tmp_path / out)]
        assert main([*args, "--tracking-uri", uri]) == 0
    registered = np.asarray(nib.load(tmp_path / "reg" / "c0.nii.gz").dataobj)
    direct = np.asarray(nib.load(tmp_path / "ckpt" / "c0.nii.gz").dataobj)
    np.testing.assert_array_equal(registered, direct)
    for spec, message in [
        ("models:/seg@nosuch", "model 'seg' has no alias 'nosuch' (aliases: champion)"),
        ("models:/other@champion", "no registered model 'other' (registered: seg)"),
    ]:
        args = ["predict", spec, str(tmp_path / "in"), "--out", str(tmp_path / "x")]
        assert main([*args, "--tracking-uri", uri]) == 2
        assert message in capsys.readouterr().err
