"""Metric names: the range of values each kind of metric can take."""

from __future__ import annotations

import math

import pytest

from trainables.metrics.names import value_range


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("val/dice_mean", (0.0, 1.0)),
        ("test/dice_wt", (0.0, 1.0)),
        ("test/lesion_dice_et", (0.0, 1.0)),
        ("val/nsd_tc", (0.0, 1.0)),
        ("val/sensitivity_fg", (0.0, 1.0)),
        ("val/hd95_wt", (0.0, math.inf)),
        ("test/lesion_hd95_tc", (0.0, math.inf)),
        ("perf/epoch_s", (0.0, math.inf)),
        ("val/rvd_et", (-1.0, math.inf)),
        ("val/loss", (-math.inf, math.inf)),
    ],
)
def test_value_range_by_metric_kind(name: str, expected: tuple[float, float]) -> None:
    assert value_range(name) == expected
