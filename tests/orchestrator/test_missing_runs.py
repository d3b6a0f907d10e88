"""Estimated marginal means for cells that lost runs (orchestrator/missing_runs.py)."""

from __future__ import annotations

import numpy as np
import pytest

from orchestrator.missing_runs import fill_missing_keys


def _layout(held: list[list[int]]) -> tuple[list[list[int]], list[tuple[str, str]]]:
    """Cells holding the given seeds: (run indices per cell, each run's key)."""
    cells, keys = [], []
    for seeds in held:
        cells.append(list(range(len(keys), len(keys) + len(seeds))))
        keys += [(str(s), "") for s in seeds]
    return cells, keys


def test_an_additive_sweep_gets_its_lost_runs_back_exactly() -> None:
    cell_effect, seed_effect = [0.7, 0.75, 0.8], [0.0, 0.1, -0.05, 0.2]
    cells, keys = _layout([[0, 1, 2, 3], [0, 2, 3], [1, 3]])
    values = np.array([cell_effect[c] + seed_effect[int(keys[i][0])]
                       for c, runs in enumerate(cells) for i in runs])  # fmt: skip
    filled = fill_missing_keys(values, cells, keys)
    assert filled is not None and filled[0] == {}
    assert filled[1] == {("1", ""): pytest.approx(0.85)}
    assert filled[2] == {("0", ""): pytest.approx(0.8), ("2", ""): pytest.approx(0.75)}


def test_nothing_to_fill_when_balanced_disconnected_or_not_finite() -> None:
    cells, keys = _layout([[0, 1], [0, 1]])
    assert fill_missing_keys(np.array([0.1, 0.2, 0.3, 0.4]), cells, keys) is None
    # the second cell shares no seed with the first: its seeds' effects are its own
    cells, keys = _layout([[0, 1], [2, 3]])
    assert fill_missing_keys(np.array([0.1, 0.2, 0.3, 0.4]), cells, keys) is None
    cells, keys = _layout([[0, 1], [0]])
    assert fill_missing_keys(np.array([0.1, np.nan, 0.3]), cells, keys) is None
