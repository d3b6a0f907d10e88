"""Where a sweep writes and which Ray it joins are checked before Ray or MLflow start."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
from ablate_sweep_helpers import mlflow_uri, write_space

from orchestrator import tracking
from orchestrator.cli import main
from orchestrator.preflight import (
    check_ray_address,
    check_ray_to_join,
    check_storage,
    check_storage_answers,
    split_sweep_folder,
    sweep_folder,
)
from trainables.errors import InputError


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_storage_that_is_a_file_is_named_with_the_reason(tmp_path: Path) -> None:
    (tmp_path / "results").write_text("a file, not a folder\n")
    with pytest.raises(InputError) as error:
        check_storage(str(tmp_path / "results" / "study"))
    assert str(error.value).startswith(
        f"--storage: cannot write the sweep's results to {tmp_path}/results/study: "
    )
    assert "Not a directory" in str(error.value)


def test_writable_storage_is_created_and_left_empty(tmp_path: Path) -> None:
    check_storage(f"file://{tmp_path}/ray/study")
    assert list((tmp_path / "ray" / "study").iterdir()) == []


def test_a_storage_uri_keeps_its_query() -> None:
    """An S3-compatible store (MinIO) names its endpoint in the query: the sweep's name was
    appended after it (``...&region=us-east-1/study``), which pointed Tune elsewhere."""
    minio = "s3://bucket/ablate?endpoint_override=10.0.0.5:9000&scheme=http"
    folder = sweep_folder(minio, "study")
    assert folder == "s3://bucket/ablate/study?endpoint_override=10.0.0.5:9000&scheme=http"
    assert split_sweep_folder(folder) == (minio, "study")
    assert split_sweep_folder(sweep_folder("gs://bucket", "study")) == ("gs://bucket", "study")


def test_a_sweep_under_the_root_keeps_the_root_as_its_storage() -> None:
    """``--storage /`` gave Tune an empty storage path (the current folder) on resume."""
    assert sweep_folder("/", "study") == "/study"
    assert split_sweep_folder("/study") == ("/", "study")


def test_a_one_slash_file_uri_is_the_local_folder(tmp_path: Path) -> None:
    """``file:/x`` (RFC 8089, as pyarrow reads it) was taken as a folder named ``file:``."""
    assert sweep_folder(f"file:{tmp_path}", "study") == str(tmp_path / "study")
    with pytest.raises(InputError) as error:
        sweep_folder("file:ray_results", "study")
    assert str(error.value) == (
        "--storage: file:ray_results is not an absolute file: URI: pass file:///abs/path or a "
        "plain folder"
    )


def test_storage_that_does_not_answer_is_refused_in_time() -> None:
    """Without network pyarrow's GCS client waited forever (no output): a listener that never
    answers stands in for it, through S3's endpoint override."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        uri = f"s3://bucket/x?endpoint_override=127.0.0.1:{port}&scheme=http&region=us-east-1"
        started = time.monotonic()
        with pytest.raises(InputError) as error:
            check_storage_answers(uri, timeout_s=1.0)
        assert time.monotonic() - started < 5
    assert str(error.value) == (
        f"--storage: {uri} did not answer within 1 s: check the network and the credentials "
        "for it from this machine, or pass a local folder"
    )


def test_address_without_a_ray_head_fails_at_once() -> None:
    port = _closed_port()
    for address in (f"127.0.0.1:{port}", f"ray://127.0.0.1:{port}"):
        with pytest.raises(InputError, match=rf"^RAY_ADDRESS: no Ray head answers at {address} "):
            check_ray_address(address, "RAY_ADDRESS")


def test_a_dead_cluster_ray_recorded_is_refused_in_seconds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``ray.init()`` without an address (or with ``auto``) joins the cluster the last ``ray
    start`` recorded; a head killed without ``ray stop`` leaves the record, and the sweep
    waited on it for minutes with nothing printed. Ray's record lives in its temp folder
    (``RAY_TMPDIR`` here); a damaged record was a ValueError, exit 1."""
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    check_ray_to_join(None)  # no record: Ray starts here
    record = tmp_path / "ray" / "ray_current_cluster"
    record.parent.mkdir()
    address = f"127.0.0.1:{_closed_port()}"
    for given, text, how, reason in [
        (None, address, "no --address given", "Connection refused"),
        ("auto", address, "--address auto", "Connection refused"),
        (None, "garbage", "no --address given", "not host:port: 'garbage'"),
    ]:
        record.write_text(text)
        started = time.monotonic()
        with pytest.raises(InputError) as error:
            check_ray_to_join(given)
        assert time.monotonic() - started < 10
        assert str(error.value) == (
            f"{how}, so Ray would join the cluster last started on this machine (`ray start` "
            f"recorded {text} in {record}), but no Ray head answers there ({reason}): run "
            "`ray stop` to clear the record and start Ray here, or pass --address"
        )


def test_symbolic_and_portless_addresses_are_left_to_ray() -> None:
    for address in ("auto", "local", "10.0.0.1"):
        check_ray_address(address, "--address")  # nothing raised, nothing waited for


def test_sweep_refuses_bad_storage_before_mlflow_has_a_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    uri = mlflow_uri(tmp_path)
    space = write_space(tmp_path, "name: nowhere\nextends: trial.yaml\nseeds: 1\n")
    (tmp_path / "results").write_text("a file\n")
    args = ["sweep", str(space), "--tracking-uri", uri, "--storage", str(tmp_path / "results")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "--storage: cannot write the sweep's results to" in err and "Traceback" not in err
    client = tracking.connect(uri)
    assert client.search_experiments(filter_string="name = 'nowhere'") == []


def test_a_new_sweep_never_reopens_an_earlier_ones_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Tune's folder gone, MLflow still holding the finished sweep: starting again under the
    name found its parent and trial runs and overwrote their checkpoints. A deleted
    experiment of the name is not revived either."""
    uri = mlflow_uri(tmp_path)
    space = write_space(tmp_path, "name: again\nextends: trial.yaml\nseeds: 1\n")
    storage = tmp_path / "ray"
    client = tracking.connect(uri)
    experiment = tracking.ensure_experiment(client, "again")
    parent = tracking.open_parent_run(client, experiment, "again", str(storage / "again"), {})
    tracking.open_child_run(client, experiment, parent, "a/seed0", {})
    args = ["sweep", str(space), "--tracking-uri", uri, "--storage", str(storage)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert (
        f"sweep 'again' already has 1 trial runs in MLflow (parent run {parent}) but no Tune "
        f"state in {storage / 'again'} to resume them from; a new sweep there would overwrite"
    ) in err
    other = tmp_path / "elsewhere"  # the same name under another storage: would hide the first
    assert main([*args[:-1], str(other)]) == 2
    assert (
        f"sweep 'again' already exists in MLflow with 1 trial runs (parent run {parent}, "
        f"results in {storage / 'again'}): resume it with --storage {storage} --resume, or start "
        "another with --name"
    ) in capsys.readouterr().err
    assert main([*args[:-1], ""]) == 2
    assert "--storage: empty: pass a folder or a storage URI" in capsys.readouterr().err
    assert main([*args[:-1], "ftp://host/x"]) == 2  # pyarrow's ArrowInvalid was exit 1
    assert "--storage: cannot read ftp://host/x/again:" in capsys.readouterr().err
    client.delete_experiment(experiment)
    assert main(args) == 2
    assert (
        "MLflow experiment 'again' was deleted (its name stays taken until `mlflow gc`): start "
        "the sweep with another --name"
    ) in capsys.readouterr().err
    assert client.get_experiment(experiment).lifecycle_stage == "deleted"


def test_the_storage_to_resume_from_is_quoted_for_the_shell(tmp_path: Path) -> None:
    """An S3-compatible store's query holds '&': pasted unquoted, the shell cut the command."""
    from orchestrator.preflight import check_no_earlier_runs

    client = tracking.connect(mlflow_uri(tmp_path))
    experiment = tracking.ensure_experiment(client, "minio")
    storage = "s3://bkt/a?endpoint_override=10.0.0.5:9000&scheme=http"
    parent = tracking.open_parent_run(
        client, experiment, "minio", sweep_folder(storage, "minio"), {}
    )
    tracking.open_child_run(client, experiment, parent, "a/seed0", {})
    with pytest.raises(InputError) as error:
        check_no_earlier_runs(client, "minio", str(tmp_path / "elsewhere" / "minio"))
    assert f"resume it with --storage '{storage}' --resume" in str(error.value)


def test_a_smoke_sweep_resumes_only_with_smoke(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Shrunk and full-size trials do not mix in one sweep (checked before Ray starts)."""
    import json

    space = write_space(tmp_path, "name: shrunk\nextends: trial.yaml\nseeds: 1\n")
    folder = tmp_path / "ray" / "shrunk"
    folder.mkdir(parents=True)
    (folder / "tuner.pkl").write_bytes(b"")  # what Tuner.can_restore looks for
    (folder / "ablate_sweep.json").write_text(json.dumps({"smoke": True}))
    args = ["sweep", str(space), "--resume", "--storage", str(tmp_path / "ray")]
    assert main([*args, "--tracking-uri", mlflow_uri(tmp_path)]) == 2
    assert "--resume: sweep 'shrunk' was started with --smoke; resume it so" in (
        capsys.readouterr().err
    )


def test_sweep_with_a_wrong_address_exits_2_within_seconds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    uri = mlflow_uri(tmp_path)
    space = write_space(tmp_path, "name: unjoined\nextends: trial.yaml\nseeds: 1\n")
    address = f"127.0.0.1:{_closed_port()}"
    args = ["sweep", str(space), "--tracking-uri", uri, "--storage", str(tmp_path / "ray")]
    started = time.monotonic()
    assert main([*args, "--address", address]) == 2
    assert time.monotonic() - started < 30  # ray.init would retry for minutes
    err = capsys.readouterr().err
    assert f"--address: no Ray head answers at {address} (Connection refused)" in err
    assert not (tmp_path / "ray").exists()  # nothing written
