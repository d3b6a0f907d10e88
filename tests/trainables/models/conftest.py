"""Model tests run toy-sized networks: one intra-op thread is faster than several.

With tensors this small, OpenMP threads spend their time waiting on each other (and on the other
test processes sharing the machine's cores); a single thread runs these tests ~10x faster.
The setting is restored after each test so nothing outside this directory is affected.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _single_torch_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
