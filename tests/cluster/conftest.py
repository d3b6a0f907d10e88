"""Fixtures of the slow cluster tests: one Ray cluster of ``ray start`` nodes and one real
``mlflow server`` per test module, shared by its scenarios (starting them costs ~60 s on a
small machine), and torn down, process by process, when the module is done.

Layout: a head with no CPUs (as on cluster.yaml, it runs no trials) and three 1-CPU workers,
so two trials run at a time on two workers and a third worker is free to take over a trial
whose node is killed. Tests that kill a node call ``cluster.ensure_workers`` first.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cluster_harness import WORKERS, LocalCluster, MlflowServer, started
from cluster_sweeps import Sweep, write_space
from cluster_ui import chromium


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    root = tmp_path_factory.mktemp("cluster")
    yield from started(LocalCluster(root), WORKERS)


@pytest.fixture(scope="module")
def mlflow_server(cluster: LocalCluster) -> Iterator[MlflowServer]:
    server = MlflowServer(cluster.root, cluster.env)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def finished_sweep(cluster: LocalCluster, mlflow_server: MlflowServer) -> Sweep:
    """The 4-trial grid run to completion across the workers (tests b and f read it)."""
    cluster.ensure_workers(WORKERS)
    # Trials long enough (~5 s) to outlast the start of the other nodes' actors: with actor
    # reuse, 1-second trials can all run, one after another, on the first actor to come up.
    space = write_space(Path(cluster.root), "multinode", epochs=3, iterations=60)
    sweep = Sweep(cluster, mlflow_server, space, "multinode")
    sweep.run()
    return sweep


@pytest.fixture
def browser() -> Iterator[Any]:
    """Headless Chromium driven by Selenium; the test is skipped when either is missing."""
    yield from chromium()
