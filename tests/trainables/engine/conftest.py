"""Engine fixtures: a private cache root, and the tiny trial as a dict to modify."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

BASE_DIR = Path(__file__).resolve().parents[3] / "search_spaces" / "base"


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    """Toy models run faster single-threaded on a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny() -> dict:
    """search_spaces/base/tiny.yaml as a mutable dict."""
    return yaml.safe_load((BASE_DIR / "tiny.yaml").read_text())
