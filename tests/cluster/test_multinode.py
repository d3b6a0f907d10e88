"""Multi-node sweeps on one machine: a head and three workers started with ``ray start``, a real
``mlflow server`` on 127.0.0.1, and ``ablate sweep --address ... --tracking-uri http://...``.

b. trials spread over the worker nodes, one MLflow child run per trial;
c. a worker node killed mid-trial: the trial resumes from its checkpoint on another node;
d. the driver killed mid-sweep: ``ablate sweep --resume`` completes it, re-running nothing done;
e. the MLflow server restarted mid-sweep: every epoch's metrics still reach MLflow;
f. the MLflow UI of that server, in a headless Chromium, lists the sweep's runs and the winner;
g. a driver without the cluster's auth token is refused with exit 2, naming the remedy.

The cluster and the MLflow server are shared by the module (conftest.py); b and f read the
same finished sweep. Timings on a busy 2-core machine: ~90 s to start everything, 5-60 s a test.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from cluster_harness import WORKERS, LocalCluster, MlflowServer
from cluster_sweeps import (
    Sweep,
    epochs_done,
    metric_steps,
    mlflow_children,
    trial_nodes,
    write_space,
)
from cluster_ui import expand_parent, page_text, tag_winner, visible_rows, wait_for

pytestmark = pytest.mark.slow


def assert_complete(sweep: Sweep, trials: int, epochs: int) -> dict[str, Any]:
    """Every trial TERMINATED in Tune and FINISHED in MLflow, one child run each, with every
    epoch's ``train/loss`` and ``val/dice_mean`` (step = epoch); returns the child runs."""
    statuses = sweep.statuses()
    assert len(statuses) == trials and set(statuses.values()) == {"TERMINATED"}, statuses
    children = mlflow_children(sweep.mlflow.uri, sweep.name)
    assert sorted(children) == sorted(statuses)
    for key, run in children.items():
        assert run.info.status == "FINISHED", (key, run.info.status, run.data.tags)
        for metric in ("train/loss", "val/dice_mean"):
            steps = sorted(set(metric_steps(sweep.mlflow.uri, run.info.run_id, metric)))
            assert steps == list(range(1, epochs + 1)), (key, metric, steps)
    return children


def restarts(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Results that begin a restored run of the trial: the first iteration since a restore,
    at an epoch past the first (a restart from scratch would report epoch 1 again)."""
    return [r for r in rows if r["iterations_since_restore"] == 1 and r["epoch"] > 1]


def test_b_trials_spread_over_worker_nodes(finished_sweep: Sweep) -> None:
    sweep = finished_sweep
    children = assert_complete(sweep, trials=4, epochs=3)
    nodes = trial_nodes(sweep)
    used = {node for per_epoch in nodes.values() for node in per_epoch}
    assert len(used) >= 2, f"all trials ran on one node: {nodes}"
    assert used <= set(WORKERS), f"trials ran outside the workers (head has 0 CPUs): {nodes}"
    assert all(run.data.tags["ablate.outcome"] == "finished" for run in children.values())


def test_c_worker_killed_mid_trial_resumes_from_checkpoint_elsewhere(
    cluster: LocalCluster, mlflow_server: MlflowServer
) -> None:
    cluster.ensure_workers(WORKERS)
    epochs = 30
    space = write_space(cluster.root, "nodeloss", epochs=epochs, seeds=1)
    sweep = Sweep(cluster, mlflow_server, space, "nodeloss")
    sweep.start()

    def mid_trial() -> str | None:
        done = epochs_done(sweep)
        return next((key for key, epoch in done.items() if 3 <= epoch <= epochs - 10), None)

    victim = sweep.wait_until(mid_trial, what="a trial past its third epoch")
    pid = sweep.results()[victim][-1]["pid"]
    node = cluster.node_running(int(pid))
    cluster.kill_node(node)
    assert sweep.wait() == 0, sweep.output()

    children = assert_complete(sweep, trials=2, epochs=epochs)
    rows = sweep.results()[victim]
    resumed = restarts(rows)
    assert resumed, (
        f"{victim} was not restored from a checkpoint: epochs {[r['epoch'] for r in rows]}"
    )
    # The node may finish another epoch between the test's look and the kill landing, so the
    # bound is what the trial reported before its restore: it continues from its last checkpoint
    # (a checkpoint per epoch; the last epoch again if the kill beat that epoch's checkpoint).
    last = max(r["epoch"] for r in rows[: rows.index(resumed[0])])
    assert resumed[0]["epoch"] > 1 and last <= resumed[0]["epoch"] <= last + 1, (last, resumed[0])
    after = trial_nodes(sweep)[victim][rows.index(resumed[0]) :]
    assert node not in after, f"{victim} resumed on the killed node {node}: {after}"
    assert children[victim].data.tags.get("ablate.attempts") == "2", children[victim].data.tags
    assert "2 finished (1 restarted after a failure: ablate.attempts on their runs)" in (
        sweep.output()
    )


def test_d_driver_killed_mid_sweep_resumes(
    cluster: LocalCluster, mlflow_server: MlflowServer
) -> None:
    cluster.ensure_workers(WORKERS)
    epochs = 10
    # Epochs of ~1 s (20 steps), not ~0.2 s: the driver saves Tune's experiment state every
    # second here (TUNE_GLOBAL_CHECKPOINT_S=1), and a state more than one checkpoint behind at
    # the kill names a checkpoint that num_to_keep=2 has already deleted.
    space = write_space(cluster.root, "driverloss", epochs=epochs, seeds=2, iterations=20)
    sweep = Sweep(cluster, mlflow_server, space, "driverloss")
    sweep.start()

    def one_done_one_running() -> tuple[set[str], set[str]] | None:
        try:
            statuses = sweep.statuses()  # the saved state: what --resume will see
            saved = sweep.checkpointed()  # a reported epoch reaches it up to a second later
        except Exception:  # not written yet, or being replaced
            return None
        done = {key for key, status in statuses.items() if status == "TERMINATED"}
        running = {
            k
            for k, e in epochs_done(sweep).items()
            if k not in done and 1 <= e < epochs and k in saved
        }
        return (done, running) if done and running else None

    done, running = sweep.wait_until(one_done_one_running, what="a finished and a running trial")
    sweep.kill()
    finished_rows = {key: len(rows) for key, rows in sweep.results().items() if key in done}

    resumed = Sweep(cluster, mlflow_server, space, "driverloss")
    resumed.run("--resume")
    statuses = resumed.statuses()
    assert len(statuses) == 4 and set(statuses.values()) == {"TERMINATED"}, statuses
    rows = resumed.results()
    for key in done:
        assert len(rows[key]) == finished_rows[key], f"finished trial {key} was run again"
    for key in running:
        assert restarts(rows[key]), f"{key} restarted from scratch, not from its checkpoint"
        assert rows[key][-1]["epoch"] == epochs, (key, [r["epoch"] for r in rows[key]])
    # MLflow holds the whole sweep: trials finished before the kill included.
    assert_complete(resumed, trials=4, epochs=epochs)
    assert mlflow_parent_status(mlflow_server.uri, "driverloss") == "FINISHED"


def mlflow_parent_status(uri: str, name: str) -> str:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(name)
    assert experiment is not None
    parents = client.search_runs([experiment.experiment_id], "tags.`ablate.kind` = 'sweep'")
    assert len(parents) == 1, [p.info.run_id for p in parents]
    return parents[0].info.status


def test_e_mlflow_server_restarted_mid_sweep_loses_no_metric(
    cluster: LocalCluster, mlflow_server: MlflowServer
) -> None:
    cluster.ensure_workers(WORKERS)
    epochs = 12
    space = write_space(cluster.root, "mlflowrestart", epochs=epochs, seeds=1)
    sweep = Sweep(cluster, mlflow_server, space, "mlflowrestart")
    sweep.start()
    sweep.wait_until(
        lambda: any(epoch >= 2 for epoch in epochs_done(sweep).values()), what="epoch 2"
    )
    mlflow_server.stop()
    time.sleep(2.0)  # epochs keep finishing while nothing listens
    mlflow_server.start()
    assert sweep.wait() == 0, sweep.output()
    assert_complete(sweep, trials=2, epochs=epochs)


def test_f_mlflow_ui_lists_the_sweep_and_its_winner(
    finished_sweep: Sweep, mlflow_server: MlflowServer, browser: Any
) -> None:
    winner = tag_winner(mlflow_server, finished_sweep)
    children = mlflow_children(mlflow_server.uri, finished_sweep.name)
    run = next(iter(children.values()))
    experiment, parent = run.info.experiment_id, run.data.tags["mlflow.parentRunId"]
    runs_page = f"{mlflow_server.uri}/#/experiments/{experiment}/runs"

    browser.get(runs_page)
    wait_for(lambda: parent in visible_rows(browser), "the sweep's parent run")
    assert finished_sweep.name in visible_rows(browser)[parent]
    ids = {r.info.run_id: key for key, r in children.items()}
    rows = expand_parent(browser, parent, set(ids))
    for run_id, key in ids.items():
        assert key in rows[run_id], (key, rows[run_id])

    search = quote('tags.winner = "true"')
    browser.get(f"{runs_page}?searchFilter={search}")
    wait_for(lambda: parent in visible_rows(browser), "the filtered parent run")
    rows = expand_parent(browser, parent, {winner})
    assert set(rows) == {parent, winner}, f"the winner filter shows {sorted(rows)}"

    browser.get(f"{mlflow_server.uri}/#/experiments/{experiment}/runs/{winner}")
    text = wait_for(
        lambda: page_text(browser) if "\nTags\n" in page_text(browser) else None, "tags"
    )
    tags = text.split("\nTags\n", 1)[1]
    assert "\nwinner\n: true\n" in f"\n{tags}", tags[:1500]
    assert ids[winner] in text


def test_g_a_driver_without_the_clusters_token_exits_2_naming_it(
    cluster: LocalCluster, mlflow_server: MlflowServer
) -> None:
    """``ray start`` turns token authentication on: a driver with another token (or none) was
    turned away with a ConnectionError, exit 1, after half a minute of C++ warnings."""
    import secrets
    import subprocess

    space = write_space(Path(cluster.root), "tokenless", epochs=1, iterations=1)
    sweep = Sweep(cluster, mlflow_server, space, "tokenless")
    env = {**cluster.env, "RAY_AUTH_TOKEN": secrets.token_hex(32)}  # not the cluster's
    done = subprocess.run(
        sweep.command(), cwd=cluster.root, env=env, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 2, done.stderr[-3000:]
    assert (
        "--address: the Ray head answers but this driver could not join it (Failed to connect "
        "to Ray cluster at " in done.stderr
    )
    assert "export RAY_AUTH_MODE=token here too, with the head's token" in done.stderr
