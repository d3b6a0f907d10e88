"""The statistics of the winners table, as pure numpy/scipy (no MLflow): see docs/statistics.md.

A cell is a list of runs (seeds, folds); each run has its value of the sweep's metric at its
selected epoch and, when logged, the per-case values behind it. Per cell: the mean with a
Student-t 95% interval over run values. Per cell against the best: the difference of means, its
95% interval and a two-sided p-value. With per-case data, runs are paired by (seed, fold) and
cases by id, and the paired differences are split as in a two-way analysis of variance (run
pair x case): the standard error keeps the seed-to-seed variance on the run pairs' degrees of
freedom and adds the case-by-cell interaction, with Satterthwaite's degrees of freedom. (A
hierarchical bootstrap over runs, then cases, was measured and rejected: over 3 runs it is
anti-conservative, and with run-level degrees of freedom it counts the case noise twice; see
the docs.) Without per-case data the comparison falls back to a paired t-test over run pairs,
or Welch's test without pairs. With runs over several folds (``folds: K``) a fold's seeds
share its training and validation cases, so runs are averaged per fold first and the fold is
the unit of replication (intervals and run-pair terms on K - 1 degrees of freedom). p-values are
corrected (Holm) over every pair of cells, since the best is picked from the same data. Cells
that lost runs others have are ranked on estimated marginal means (:mod:`missing_runs`). A key
x case bootstrap gives each cell's probability of ranking first.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from orchestrator.bootstrap import Bootstrap, rank_probabilities
from orchestrator.missing_runs import Key, fill_missing_keys

CORRECTIONS = ("holm", "none")
BOOTSTRAP_SAMPLES = 2000
LEVEL = 0.95


@dataclass(frozen=True)
class RunSample:
    """One finished run of a cell: its key (seed, fold), metric value and per-case values."""

    key: tuple[str, str]
    value: float
    cases: Mapping[str, float] | None = None  # case id -> value (NaN: undefined, left out)


@dataclass
class Comparison:
    """A cell against the best: difference (cell - best), its interval, p-values, method."""

    delta: float
    ci: tuple[float, float] | None
    p_value: float | None
    method: str
    p_adjusted: float | None = None


@dataclass
class CellResult:
    """The statistics of one cell (index into the caller's list)."""

    index: int
    mean: float
    ci: tuple[float, float] | None
    status: str = "untested"  # best | tied | worse | untested
    comparison: Comparison | None = None
    p_rank1: float = math.nan
    notes: list[str] = field(default_factory=list)
    adjustment: float = 0.0  # marginal mean - plain mean, for a cell that lost runs
    repeats: int = 0  # runs that repeated a (seed, fold) of the cell, averaged into it
    tests: int = 0  # tests in the multiplicity family (pairs of cells that could be compared)


def t_intervals(values: np.ndarray, level: float = LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """Student-t intervals of the mean of each row of ``values`` (S, n), n >= 2: (low, high)."""
    n = values.shape[-1]
    half = stats.t.ppf(0.5 + level / 2, n - 1) * values.std(-1, ddof=1) / math.sqrt(n)
    mean = values.mean(-1)
    return mean - half, mean + half


def t_interval(values: Sequence[float], level: float = LEVEL) -> tuple[float, float] | None:
    """Student-t interval of the mean of ``values``; None for fewer than two values."""
    if len(values) < 2:
        return None
    low, high = t_intervals(np.asarray(values, dtype=float)[None], level)
    return float(low[0]), float(high[0])


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p-values (None stays None and does not count as a test)."""
    tested = [(p, i) for i, p in enumerate(p_values) if p is not None]
    out: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(sorted(tested)):
        running = max(running, min(1.0, (len(tested) - rank) * p))  # keeps the order monotone
        out[i] = running
    return out


def adjust(p_values: Sequence[float | None], correction: str) -> list[float | None]:
    """p-values corrected for multiplicity by ``correction`` (one of :data:`CORRECTIONS`)."""
    return holm(p_values) if correction == "holm" else list(p_values)


def compare(
    boot: Bootstrap, best: Sequence[int], other: Sequence[int], keys: Sequence[tuple[str, str]]
) -> Comparison | None:
    """``other`` cell against the ``best`` (run indices into ``boot``); None when untestable."""
    where = {keys[i]: i for i in best}
    pairs = [(where[keys[j]], j) for j in other if keys[j] in where]
    folds = [keys[i][1] for i, _ in pairs]
    why = "no per-case data"
    if len(pairs) >= 2 and all(boot.has_cases[i] and boot.has_cases[j] for i, j in pairs):
        paired = _case_paired_comparison(boot, pairs, folds)
        if paired is not None:
            return paired
        why = "no case shared"  # case ids that never match (renamed cases): the run values
    values = boot.point
    if len(pairs) >= 2:
        diffs = by_fold(np.array([values[j] - values[i] for i, j in pairs]), folds)
        if len(diffs) < 2:
            return None
        se = diffs.std(ddof=1) / math.sqrt(len(diffs))
        method = f"paired t over {_units(folds)} ({why})"
        return _t_comparison(diffs.mean(), se, len(diffs) - 1, method)
    a, b = values[list(best)], values[list(other)]
    if len(a) >= 2 and len(b) >= 2:
        va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
        df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1)) if va + vb else 1.0
        return _t_comparison(
            b.mean() - a.mean(), math.sqrt(va + vb), df, "Welch t on run values (no pairs)"
        )
    return None


def by_fold(rows: np.ndarray, folds: Sequence[str]) -> np.ndarray:
    """``rows`` (R, ...) averaged per fold, in first-seen fold order, when the R runs span
    several folds; unchanged otherwise.

    A fold's seeds share its training and validation cases, so their results move together
    (a fold-by-cell interaction): counted as independent runs they make a comparison
    anti-conservative (measured: 0.10-0.19 false "worse" over 2-5 folds x 3 seeds) and a cell's
    interval cover the mean of new folds 0.69-0.82 of the time. The fold means are independent.
    """
    labels = list(dict.fromkeys(folds))
    if len(labels) < 2:
        return rows
    return np.stack([rows[[f == label for f in folds]].mean(0) for label in labels])


def _units(folds: Sequence[str]) -> str:
    """What the comparison's replicates are: "3 run pairs", "2 folds" or "2 folds (6 run
    pairs)" (runs spanning folds are averaged per fold, :func:`by_fold`)."""
    runs, count = len(folds), len(set(folds))
    if count < 2:
        return f"{runs} run pairs"
    return f"{count} folds" + (f" ({runs} run pairs)" if runs > count else "")


def _case_paired_comparison(
    boot: Bootstrap, pairs: list[tuple[int, int]], folds: Sequence[str]
) -> Comparison | None:
    """Crossed random-effects comparison of run pairs (or folds) x shared cases.

    D[r, k] = other - best on case k in run pair r = delta + run-pair effect + case effect +
    residual. By the two-way ANOVA mean squares (no replication), Var(mean D) = (MS_run + MS_case
    - MS_res) / (m K) with Satterthwaite's degrees of freedom: the run-level term keeps seed
    variance in (m - 1 d.o.f.), the case term keeps the case-by-cell interaction, and neither
    counts the residual twice (a bootstrap over both levels does, see docs/statistics.md).
    Over several folds the rows are fold means (:func:`by_fold`).
    """
    best, other = (np.array(side) for side in zip(*pairs, strict=True))
    shared = (boot.mask[best] * boot.mask[other]).min(0) > 0  # cases every paired run has
    if shared.sum() < 2:  # folds: each run pair has its own fold's cases, none crossed with all
        return _pair_means_comparison(boot, best, other, folds)
    diffs = by_fold(boot.values[other][:, shared] - boot.values[best][:, shared], folds)
    m, k = diffs.shape  # (run pairs or folds, cases)
    if m < 2:
        return None
    resid = diffs - diffs.mean(1, keepdims=True) - diffs.mean(0, keepdims=True) + diffs.mean()
    ms_run = k * diffs.mean(1).var(ddof=1)
    ms_case = m * diffs.mean(0).var(ddof=1)
    ms_res = float((resid**2).sum()) / ((m - 1) * (k - 1))
    case_term = max(ms_case - ms_res, 0.0)
    var = (ms_run + case_term) / (m * k)
    parts = [(ms_run, m - 1)] + (
        [(ms_case, k - 1), (ms_res, (m - 1) * (k - 1))] if case_term else []
    )
    denom = sum(ms**2 / df for ms, df in parts)
    df = (ms_run + case_term) ** 2 / denom if denom else m - 1.0
    method = f"case-paired: {_units(folds)} x {k} cases (t, {df:.1f} df)"
    return _t_comparison(float(diffs.mean()), math.sqrt(var), df, method)


def _pair_means_comparison(
    boot: Bootstrap, best: np.ndarray, other: np.ndarray, folds: Sequence[str]
) -> Comparison | None:
    """Per run pair, the mean case-paired difference over the cases both runs have, averaged
    per fold; Student's t over the folds (cases nested in folds: each mean carries its cases'
    spread, and the fold's seeds share its cases' interaction with the cell)."""
    both = boot.mask[best] * boot.mask[other]  # (m, C): cases paired within each run pair
    counts = both.sum(1)
    keep = counts > 0
    sums = ((boot.values[other] - boot.values[best]) * both).sum(1)
    kept_folds = [f for f, k in zip(folds, keep, strict=True) if k]
    means = by_fold(sums[keep] / counts[keep], kept_folds)
    if len(means) < 2:
        return None  # untestable: fewer than two run pairs (or folds) share a case
    se = means.std(ddof=1) / math.sqrt(len(means))
    method = f"case-paired means: t over {_units(kept_folds)}"
    return _t_comparison(float(means.mean()), float(se), len(means) - 1, method)


def _t_comparison(delta: float, se: float, df: float, method: str) -> Comparison:
    """Interval delta ± t·se and the two-sided p of delta / se on ``df`` degrees of freedom."""
    delta = float(delta)
    if not se > 0:  # no spread: identical runs, or a constant gap
        p = 1.0 if math.isclose(delta, 0.0, abs_tol=1e-12) else 0.0
        return Comparison(delta, (delta, delta), p, method)
    half = float(stats.t.ppf(0.5 + LEVEL / 2, df)) * se
    p = float(2 * stats.t.sf(abs(delta) / se, df))
    return Comparison(delta, (delta - half, delta + half), p, method)


def analyse(
    cells: Sequence[Sequence[RunSample]],
    mode: str = "max",
    alpha: float = 0.05,
    correction: str = "holm",
    samples: int = BOOTSTRAP_SAMPLES,
    seed: int = 0,
    value_range: tuple[float, float] = (-math.inf, math.inf),
) -> list[CellResult]:
    """Rank cells (each with at least one run), best first, with every statistic filled in;
    intervals cut to ``value_range``, the values the metric can take (:func:`clip_intervals`)."""
    merged = [merge_repeats(cell) for cell in cells]
    runs = [run for cell, _ in merged for run in sorted(cell, key=lambda r: r.key)]
    index, start = [], 0
    for cell, _ in merged:
        index.append(list(range(start, start + len(cell))))
        start += len(cell)
    boot = Bootstrap(runs, samples, np.random.default_rng(seed))
    keys = [r.key for r in runs]
    results = [_cell_result(k, [runs[i] for i in index[k]]) for k in range(len(cells))]
    for result, (_, repeats) in zip(results, merged, strict=True):
        result.repeats = repeats
    filled = fill_missing_keys(np.array([r.value for r in runs]), index, keys)
    if filled is not None:  # a cell lost runs: rank on estimated marginal means
        for result in results:
            _to_marginal_mean(result, [runs[i] for i in index[result.index]], filled)
    sign = -1.0 if mode == "max" else 1.0
    # One run gives no interval and no test against it: such a cell (its other seeds diverged,
    # say) is listed after the cells that have one, or one lucky run would be crowned and
    # every other cell left untested. With one run everywhere, the means alone rank.
    spread = any(r.ci is not None for r in results)
    results.sort(key=lambda r: (spread and r.ci is None, sign * r.mean))
    best = results[0]
    best.status = "best"
    for result in results[1:]:
        result.comparison = compare(boot, index[best.index], index[result.index], keys)
    family = _other_pairs(boot, results, index, keys)
    tests = _decide(results[1:], family, alpha, correction, mode)
    for result in results:
        result.tests = tests
    # With one run a cell's seed-to-seed spread is unknown, and the case bootstrap alone would
    # call a ranking certain that another seed could overturn: no P(rank 1) then, for any cell.
    if min(len(i) for i in index) >= 2:
        p_first = rank_probabilities(boot, index, keys, mode, filled)
        for result in results:
            result.p_rank1 = float(p_first[result.index])
    clip_intervals(results, value_range)
    return results


def merge_repeats(runs: Sequence[RunSample]) -> tuple[list[RunSample], int]:
    """One run per (seed, fold) key, and how many runs were merged away.

    Optuna can suggest one configuration twice (a choice axis): its trials share a cell label
    and seeds, so seed 0 came twice; paired once per run, the best's seed-0 run counted twice
    and the comparison's degrees of freedom grew with it. Runs of one key are averaged (value,
    and each case's value over the runs that have it)."""
    groups: dict[tuple[str, str], list[RunSample]] = {}
    for run in runs:
        groups.setdefault(run.key, []).append(run)
    out = [group[0] if len(group) == 1 else _average(group) for group in groups.values()]
    return out, len(runs) - len(out)


def _average(group: Sequence[RunSample]) -> RunSample:
    """A key's runs as one: the mean value, and each case's mean over the runs defining it."""
    tables = [r.cases for r in group if r.cases]
    ids = dict.fromkeys(c for table in tables for c in table)
    cases = {c: _finite_mean([t.get(c, math.nan) for t in tables]) for c in ids}
    return RunSample(group[0].key, _finite_mean([r.value for r in group]), cases or None)


def _finite_mean(values: Sequence[float]) -> float:
    kept = [v for v in values if math.isfinite(v)]
    return math.fsum(kept) / len(kept) if kept else math.nan


def clip_intervals(results: Sequence[CellResult], value_range: tuple[float, float]) -> None:
    """Cut each cell's interval to the metric's range and each difference's to the range of a
    difference, ``[low - high, high - low]``. The true mean lies in the range, so a cut interval
    covers it whenever the uncut one does: the 95% holds, and a Dice interval no longer reads
    [-0.67, 1.04] when two runs are all there is."""
    low, high = value_range
    for result in results:
        if result.ci is not None:
            result.ci = (max(result.ci[0], low), min(result.ci[1], high))
        comparison = result.comparison
        if comparison is not None and comparison.ci is not None:
            lo, hi = comparison.ci
            comparison.ci = (max(lo, low - high), min(hi, high - low))


def _cell_result(index: int, runs: Sequence[RunSample]) -> CellResult:
    """Mean and Student-t interval over the runs, or over the fold means of runs spanning
    several folds (:func:`by_fold`)."""
    values = by_fold(np.array([r.value for r in runs]), [r.key[1] for r in runs])
    return CellResult(index, float(values.mean()), t_interval(list(values)))


def _to_marginal_mean(
    result: CellResult, runs: Sequence[RunSample], filled: Sequence[Mapping[Key, float]]
) -> None:
    """The cell's mean over every key of the sweep, its lost keys at their fitted values
    (:mod:`orchestrator.missing_runs`); its interval moves with it, keeping its width."""
    extra = filled[result.index]
    if not extra:
        return
    values = np.array([r.value for r in runs] + list(extra.values()))
    adjusted = float(by_fold(values, [r.key[1] for r in runs] + [k[1] for k in extra]).mean())
    shift = adjusted - result.mean
    result.mean = adjusted
    if result.ci is not None:
        result.ci = (result.ci[0] + shift, result.ci[1] + shift)
    result.adjustment = shift


def _other_pairs(
    boot: Bootstrap,
    results: Sequence[CellResult],
    index: Sequence[Sequence[int]],
    keys: Sequence[tuple[str, str]],
) -> list[float | None]:
    """Raw p-values of every pair of cells not involving the best.

    The best is picked from the data, so "some cell is called worse than the best" can happen
    through any pair: the multiplicity correction counts every pair of cells (a Holm family of
    k(k-1)/2 tests, as Tukey's all-pairs comparison does), or the family-wise rate under
    identical cells rises above alpha (measured: 0.079 for 4 cells over 2 folds x 3 seeds).
    """
    out: list[float | None] = []
    for a, first in enumerate(results[1:], start=1):
        for second in results[a + 1 :]:
            c = compare(boot, index[first.index], index[second.index], keys)
            out.append(c.p_value if c else None)
    return out


def _decide(
    others: list[CellResult],
    family: list[float | None],
    alpha: float,
    correction: str,
    mode: str,
) -> int:
    """Adjusted p-values (over the comparisons with the best and the ``family`` of the other
    pairs), then tied (cannot be separated from the best), worse (separated, and behind it) or
    ahead (separated, in the cell's favour: the best's lead rests on runs or cases the cell
    lacks, since Δ pairs the runs and cases both have). Returns the number of tests made."""
    raw = [r.comparison.p_value if r.comparison else None for r in others]
    adjusted = adjust([*raw, *family], correction)[: len(raw)]
    for result, p in zip(others, adjusted, strict=True):
        if result.comparison is None or p is None:
            result.status = "untested"
            continue
        result.comparison.p_adjusted = p
        behind = result.comparison.delta < 0 if mode == "max" else result.comparison.delta > 0
        result.status = "tied" if p >= alpha else "worse" if behind else "ahead"
    return sum(p is not None for p in [*raw, *family])
