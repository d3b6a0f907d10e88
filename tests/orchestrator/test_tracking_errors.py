"""Telling "the tracking server did not answer" from other errors, and what a command says.

Real errors only: MLflow's client against a loopback server that refuses a call (400), is gone
(connection refused) or drops the connection mid-command.
"""

from __future__ import annotations

import pytest
from loopback_http import Server

from orchestrator.cli import main
from orchestrator.tracking_errors import is_transient, lost_server_message, reason


@pytest.fixture(autouse=True)
def no_mlflow_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # seconds, not minutes


def test_errors_are_told_apart_by_whether_the_server_answered(
    server: Server,
) -> None:
    from mlflow.tracking import MlflowClient

    with pytest.raises(Exception) as refused:  # a real answer: 400 INVALID_PARAMETER_VALUE
        MlflowClient(server.uri).log_metric("run", "val/dice", 0.5)
    assert not is_transient(refused.value)
    server.stop()
    with pytest.raises(Exception) as unanswered:
        MlflowClient(server.uri).log_metric("run", "val/dice", 0.5)
    assert is_transient(unanswered.value)
    assert reason(unanswered.value) == "Connection refused"
    assert not is_transient(ValueError("a bug in the call itself"))
    assert lost_server_message(unanswered.value) == (
        f"the MLflow tracking server at {server.uri} stopped answering (Connection refused); "
        "start it again (or check --tracking-uri / MLFLOW_TRACKING_URI) and rerun the command"
    )
    assert lost_server_message(refused.value) is None  # MLflow's own message says what is wrong
    assert lost_server_message(FileNotFoundError(2, "No such file", "x.nii.gz")) is None


def test_a_server_lost_mid_command_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with Server(drop_api=True) as dying:  # answers the connect check, then drops every request
        code = main(["winners", "mysweep", "--tracking-uri", dying.uri])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err == (
        f"ablate: error: the MLflow tracking server at {dying.uri} stopped answering (Remote "
        "end closed connection without response); start it again (or check --tracking-uri / "
        "MLFLOW_TRACKING_URI) and rerun the command\n"
    )
