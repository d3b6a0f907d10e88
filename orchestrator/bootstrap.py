"""The case bootstrap behind the winners table: each run's mean over resampled cases, and each
cell's probability of ranking first (docs/statistics.md, "P(rank 1)")."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from orchestrator.missing_runs import Key

if TYPE_CHECKING:
    from orchestrator.statistics import RunSample


class Bootstrap:
    """B resamples of every run's mean over cases, one case draw shared by all runs.

    ``means`` is (B, R): run r's case-weighted mean in resample b (its logged value, constant,
    when it has no per-case data); ``point`` (R,) the same without resampling.
    """

    def __init__(self, runs: Sequence[RunSample], samples: int, rng: np.random.Generator):
        cases = sorted({c for r in runs if r.cases for c in r.cases})
        col = {c: j for j, c in enumerate(cases)}
        values = np.zeros((len(runs), len(cases)))
        mask = np.zeros_like(values)
        for i, run in enumerate(runs):
            for case, v in (run.cases or {}).items():
                if math.isfinite(v):
                    values[i, col[case]], mask[i, col[case]] = v, 1.0
        self.values, self.mask = values, mask
        self.n_cases = mask.sum(1)
        self.has_cases = self.n_cases > 0
        fixed = np.array([r.value for r in runs], dtype=float)
        with np.errstate(invalid="ignore", divide="ignore"):
            self.point = np.where(self.has_cases, values.sum(1) / mask.sum(1), fixed)
            weights = _case_weights(len(cases), samples, rng)
            means = (weights @ (values * mask).T) / (weights @ mask.T)
        # a run none of whose cases was drawn keeps its point value; runs without cases too
        self.means = np.where(np.isfinite(means), means, self.point)
        self.rng = rng


def _case_weights(cases: int, samples: int, rng: np.random.Generator) -> np.ndarray:
    """(B, C) how often each case is drawn in each resample (C draws with replacement)."""
    if not cases:
        return np.zeros((samples, 0))
    return rng.multinomial(cases, np.full(cases, 1 / cases), size=samples).astype(float)


def rank_probabilities(
    boot: Bootstrap,
    cells: Sequence[Sequence[int]],
    keys: Sequence[Key],
    mode: str,
    filled: Sequence[Mapping[Key, float]] | None = None,
) -> np.ndarray:
    """Each cell's share of resamples in which it ranks first (ties split evenly).

    The runs' keys (seed, fold) are resampled with replacement, one draw per resample shared by
    every cell, so runs stay paired by key; a key a cell lost counts with its fitted value from
    ``filled`` (:func:`fill_missing_keys`), else the cell's mean weighs only the keys it has.
    Each cell's spread is inflated by sqrt(n / (n - 1)) (n: its runs) as in the tests.
    """
    samples = boot.means.shape[0]
    slots = {key: j for j, key in enumerate(sorted({keys[i] for c in cells for i in c}))}
    counts = boot.rng.multinomial(len(slots), np.full(len(slots), 1 / len(slots)), samples)
    means = np.empty((samples, len(cells)))
    for k, runs in enumerate(cells):
        runs, n = list(runs), len(runs)
        extra = filled[k] if filled else {}
        columns = np.hstack([boot.means[:, runs], np.tile(list(extra.values()), (samples, 1))])
        weights = counts[:, [slots[keys[i]] for i in runs] + [slots[key] for key in extra]]
        drawn = weights.sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            resampled = (weights * columns).sum(1) / drawn
        # a resample that drew none of this cell's keys: its runs' plain mean
        resampled = np.where(drawn > 0, resampled, columns.mean(1))
        centre = np.concatenate([boot.point[runs], list(extra.values())]).mean()
        means[:, k] = centre + (resampled - centre) * (math.sqrt(n / (n - 1)) if n > 1 else 1)
    signed = means if mode == "max" else -means
    top = signed == signed.max(1, keepdims=True)
    return (top / top.sum(1, keepdims=True)).mean(0)
