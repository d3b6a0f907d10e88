"""Fixtures of the orchestrator's end-to-end sweep tests (opt in with ``usefixtures``)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from loopback_http import Server


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """A local Ray of 2 CPUs for the module's sweeps (reused if one is already running)."""
    import ray

    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    started = not ray.is_initialized()
    if started:
        ray.init(
            num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR
        )
    yield
    if started:
        ray.shutdown()


@pytest.fixture
def sweep_workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run in ``tmp_path`` (mlflow.db and ray_results land there) with a private data cache."""
    monkeypatch.setenv("ABLATE_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def server() -> Iterator[Server]:
    """A running loopback HTTP server (tests/orchestrator/loopback_http.py); stopped after,
    unless the test already stopped it."""
    with Server() as running:
        yield running
