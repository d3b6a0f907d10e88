"""cluster.local.yaml drives Ray's real autoscaler on one machine (``RAY_FAKE_CLUSTER=1``).

A head started with the twin as its autoscaling config has no workers (every type has
``min_workers: 0``); a demand for one GPU and for one 8-GPU bundle must make the autoscaler
launch one node of each GPU type, with the resources cluster.yaml declares for it.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from cluster_harness import RAY_CLI, REPO, LocalCluster, MlflowServer
from cluster_sweeps import Sweep, mlflow_children, write_space

pytestmark = pytest.mark.slow

# How long to wait for the autoscaler's fake nodes: a wait, not a speed bound (the loop ends
# once both are up). Each starts its own raylet; on a loaded 2-core machine running the slow
# pass the second came up just after a 120 s window once (both active in the status printed
# right after), so the window leaves room.
LAUNCH_S = 300.0


@pytest.fixture
def fake_cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    """A head running the autoscaler on a copy of the twin pointed at this head's GCS port."""
    cluster = LocalCluster(tmp_path)
    config = yaml.safe_load((REPO / "cluster.local.yaml").read_text())
    config["provider"]["gcs_address"] = cluster.address
    path = tmp_path / "cluster.local.yaml"
    path.write_text(yaml.safe_dump(config))
    try:
        cluster.start_head(cpus=0, autoscaling_config=path)
        yield cluster
    finally:
        cluster.stop()


def node_resources(cluster: LocalCluster) -> list[dict[str, float]]:
    """CPU/GPU of each alive node (what the autoscaler launched, plus the head)."""
    code = "print(json.dumps([n['Resources'] for n in ray.nodes() if n['Alive']]))"
    rows = cluster.query(code)
    return [{k: v for k, v in row.items() if k in ("CPU", "GPU")} for row in rows]


def autoscaler_status(cluster: LocalCluster) -> str:
    out = subprocess.run(
        [*RAY_CLI, "status", f"--address={cluster.address}"],
        env=cluster.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def test_twin_autoscales_each_gpu_type_on_demand(fake_cluster: LocalCluster) -> None:
    twin = yaml.safe_load((REPO / "cluster.local.yaml").read_text())["available_node_types"]
    expected = sorted([twin["gpu.a10g"]["resources"], twin["gpu.a100x8"]["resources"]], key=str)
    assert node_resources(fake_cluster) == [{}], "the head should start alone, with no CPUs"

    request = "request_resources(bundles=[{'GPU': 1}, {'GPU': 8}])"
    code = f"from ray.autoscaler.sdk import request_resources\n{request}\nprint(1)"
    fake_cluster.query(code)
    deadline = time.monotonic() + LAUNCH_S
    workers: list[dict[str, float]] = []
    while time.monotonic() < deadline and len(workers) < 2:
        workers = [row for row in node_resources(fake_cluster) if row]
        time.sleep(1.0)
    assert sorted(workers, key=str) == expected, autoscaler_status(fake_cluster)
    status = autoscaler_status(fake_cluster)
    for name in ("gpu.a10g", "gpu.a100x8"):
        assert f" 1 {name}" in status, status


def test_sweep_on_the_twin_gets_gpu_workers_from_the_autoscaler(
    fake_cluster: LocalCluster,
) -> None:
    """The cluster.yaml workflow on one machine: a sweep asking for GPUs is submitted to a
    head with no workers; the autoscaler adds GPU nodes and the sweep completes on them."""
    mlflow = MlflowServer(fake_cluster.root, fake_cluster.env)
    mlflow.start()
    try:
        space = write_space(fake_cluster.root, "twin", epochs=2, seeds=1, gpu=1)
        sweep = Sweep(fake_cluster, mlflow, space, "twin")
        sweep.run(timeout_s=400)
        assert set(sweep.statuses().values()) == {"TERMINATED"}
        assert len(mlflow_children(mlflow.uri, "twin")) == 2
        gpu_nodes = [row for row in node_resources(fake_cluster) if row.get("GPU")]
        assert gpu_nodes, autoscaler_status(fake_cluster)
    finally:
        mlflow.stop()
