"""A real ``mlflow server`` that dies mid-sweep and stays down until the sweep has ended.

Training goes on; the sweep ends within its grace period, says how many tracking calls were not
sent and how to send them, exits 2; once the server is back, ``--resume`` fills MLflow from
Tune's record without training anything again. (A server back within the sweep is
tests/cluster/test_multinode.py::test_e_mlflow_server_restarted_mid_sweep_loses_no_metric.)
"""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path
from typing import Any

import pytest
from ablate_sweep_helpers import tiny_trial, write_space
from ray import tune

from orchestrator import tracking
from orchestrator.callbacks import TrackingCallback
from orchestrator.cli import main
from tests.cluster.cluster_harness import MlflowServer

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("local_ray", "sweep_workdir")]

EPOCHS = 3


class StopServerOnce(tune.Callback):
    """SIGTERM to the MLflow server at the sweep's first result (once per marker file, since
    Tune restores its callbacks on resume). Runs after the tracking callback queued that result."""

    def __init__(self, server_pid: int, marker: Path) -> None:
        self.server_pid, self.marker = server_pid, marker

    def on_trial_result(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if not self.marker.exists():
            self.marker.touch()
            os.killpg(self.server_pid, signal.SIGTERM)


def test_a_server_down_at_the_end_loses_nothing_and_resume_sends_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # notice the outage at once
    monkeypatch.setattr(TrackingCallback, "CLOSE_GRACE_S", 3.0)
    server = MlflowServer(tmp_path / "server", dict(os.environ))
    server.root.mkdir()
    server.start()
    try:
        _run(tmp_path, server, capsys)
    finally:
        server.stop()


def _run(tmp_path: Path, server: MlflowServer, capsys: pytest.CaptureFixture[str]) -> None:
    from orchestrator.sweep import SweepOptions, run_sweep

    tiny_trial(tmp_path, train={"epochs": EPOCHS})
    space = write_space(
        tmp_path, "name: outage\nextends: trial.yaml\ngrid: {optimizer.lr: [0.003, 0.001]}\n"
    )
    storage = str(tmp_path / "ray")
    assert server.proc is not None
    stopper = StopServerOnce(server.proc.pid, tmp_path / "stopped")
    opts = SweepOptions(space, tracking_uri=server.uri, storage=storage, callbacks=[stopper])
    first = run_sweep(opts)
    err = capsys.readouterr().err
    assert first.counts == {"finished": 2} and not first.interrupted
    assert first.unsent_calls > 0 and first.exit_code == 2
    assert f"warning: MLflow at {server.uri} does not answer (" in err, err
    assert f"MLflow at {server.uri}: waiting up to 3 s for it to answer (" in err

    server.start()  # the same store, back on the same port
    assert main(["sweep", str(space), "--storage", storage, "--resume"]) == 0
    err = capsys.readouterr().err
    assert "started   lr=" not in err  # nothing trained again
    sent = re.search(r"resume: sent MLflow (\d+) missing epochs and 2 trial endings", err)
    assert sent and int(sent.group(1)) >= 2 * EPOCHS - 1, err  # the first may have gone through
    client = tracking.connect(server.uri)
    parent = tracking.find_sweep(client, "outage")
    assert parent.info.status == "FINISHED"
    children = tracking.child_runs(client, parent)
    assert sorted(r.data.tags["ablate.trial_key"] for r in children) == [
        "lr=0.001/seed0",
        "lr=0.003/seed0",
    ]
    for run in children:
        run_id = run.info.run_id
        assert run.info.status == "FINISHED" and run.data.tags["ablate.outcome"] == "finished"
        assert run.data.params["optimizer.lr"] in ("0.001", "0.003")
        steps = [m.step for m in client.get_metric_history(run_id, "train/loss")]
        assert steps == list(range(1, EPOCHS + 1)), (run.data.tags["ablate.trial_key"], steps)
        assert "best/val/dice_mean" in run.data.metrics
        assert [a.path for a in client.list_artifacts(run_id, "checkpoint")] == [
            "checkpoint/best.pt"
        ]
