"""The dice stage's paired comparison: plain vs every speed switch, over seeds."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from benchmarks.gpu_check_dice import NOISE_FLOOR, compare_paired


def test_a_difference_smaller_than_the_seed_spread_is_within_noise():
    plain = [0.70, 0.74, 0.78]  # seed sd 0.04
    fast = [0.71, 0.73, 0.80]

    result = compare_paired(plain, fast)

    assert result["pairs"] == 3
    assert result["plain_seed_sd"] == pytest.approx(0.04)
    assert result["mean_difference"] == pytest.approx(0.0067, abs=1e-4)  # (0.01 - 0.01 + 0.02) / 3
    assert result["within_noise"] is True


def test_a_difference_larger_than_the_seed_spread_is_not():
    result = compare_paired([0.70, 0.72, 0.74], [0.60, 0.63, 0.62])

    assert result["mean_difference"] == pytest.approx(-0.1033, abs=1e-4)
    assert result["within_noise"] is False
    assert result["ci95"][1] < 0


def test_identical_seeds_use_the_noise_floor():
    """Seeds that agree to the last digit give no spread: the floor of 0.01 Dice decides."""
    assert compare_paired([0.8, 0.8], [0.8 + NOISE_FLOOR / 2] * 2)["within_noise"] is True
    assert compare_paired([0.8, 0.8], [0.8 + 2 * NOISE_FLOOR] * 2)["within_noise"] is False


def test_the_interval_is_the_paired_student_t_interval():
    plain, fast = [0.61, 0.66, 0.70, 0.64], [0.63, 0.65, 0.74, 0.69]
    deltas = [f - p for p, f in zip(plain, fast, strict=True)]

    result = compare_paired(plain, fast)

    mean, sem = sum(deltas) / len(deltas), stats.sem(deltas)
    low, high = stats.t.interval(0.95, len(deltas) - 1, loc=mean, scale=sem)
    assert result["ci95"] == pytest.approx([low, high], abs=1e-4)


def test_one_pair_has_no_spread_to_judge_by():
    result = compare_paired([0.7], [0.9])

    assert result == {
        "pairs": 1, "plain_mean": 0.7, "switches_mean": 0.9, "mean_difference": 0.2,
        "within_noise": None,
    }  # fmt: skip
    assert compare_paired([], [])["within_noise"] is None


def test_unpaired_lists_are_refused():
    with pytest.raises(ValueError, match="2 plain results but 1 with the switches"):
        compare_paired([0.7, 0.8], [0.7])


def test_the_interval_covers_the_true_difference_95_percent_of_the_time():
    """Simulated studies of 3 paired seeds (a shared seed effect plus per-run noise): the
    reported 95% interval contains the planted difference in 0.95 +- 0.02 of 4,000 studies."""
    rng = np.random.default_rng(0)
    true_delta, hits, studies = 0.02, 0, 4000
    for _ in range(studies):
        seed_effect = rng.normal(0.7, 0.05, 3)
        plain = seed_effect + rng.normal(0, 0.01, 3)
        fast = seed_effect + true_delta + rng.normal(0, 0.01, 3)
        low, high = compare_paired(list(plain), list(fast))["ci95"]
        hits += low - 1e-4 <= true_delta <= high + 1e-4  # the interval is rounded to 4 places
    assert abs(hits / studies - 0.95) <= 0.02, hits / studies
