"""Metric names: the range of values each kind of metric can take, and which way is better."""

from __future__ import annotations

import math

import pytest

from trainables.metrics.names import better_mode, known_metrics, value_range


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


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("val/dice_mean", "max"),
        ("test/lesion_dice_et", "max"),
        ("val/specificity_wt", "max"),
        ("perf/voxels_per_s", "max"),
        ("val/loss", "min"),
        ("train/loss", "min"),
        ("val/hd95_tc", "min"),
        ("perf/step_ms", "min"),
        ("perf/peak_gpu_mem_gib", "min"),
        ("val/rvd_et", None),  # signed: best at 0, neither end
    ],
)
def test_better_mode_by_metric_kind(name: str, expected: str | None) -> None:
    assert better_mode(name) == expected


def test_every_logged_metric_but_rvd_has_a_direction() -> None:
    undirected = [m for m in known_metrics() if better_mode(m) is None]
    assert undirected and all("/rvd_" in m for m in undirected)
