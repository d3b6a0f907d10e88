"""The ablation table: child runs grouped into cells (seeds pooled), ranked with error bars.

Per cell: n finished runs, the mean of each run's best ``metric`` with a 95% bootstrap
confidence interval, the WT/TC/ET Dice at those best epochs, the mean epoch time and the peak GPU
memory. The best cell is compared with every other cell by a paired test across seeds (runs
paired by seed and data split): a paired t-test by default (it has power with 3-5 seeds, where
Wilcoxon's exact test cannot reach p < 0.05 below 6 pairs), or Wilcoxon signed-rank. Cells with
p >= alpha are statistically tied with the best. The best run of the best cell is tagged
``winner=true`` in MLflow (the tag moves when the table changes).
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator import tracking
from trainables.errors import InputError

BOOTSTRAP_SAMPLES = 10_000
REGIONS = ("wt", "tc", "et", "fg")
TESTS = ("ttest", "wilcoxon")
PAPER_FILE = "paper.json"  # parent-run artifact: {"citation", "rows": {cell: {metric: value}}}


@dataclass
class CellStats:
    """One row of the table (see the module docstring for the statistics)."""

    label: str
    values: dict[tuple[str, str], float] = field(default_factory=dict)  # (seed, split) -> metric
    runs: dict[str, float] = field(default_factory=dict)  # run id -> metric
    dice: dict[str, float] = field(default_factory=dict)  # region -> mean Dice at best epochs
    epoch_s: float = math.nan
    peak_gib: float | None = None
    outcomes: dict[str, int] = field(default_factory=dict)
    mean: float = math.nan
    ci: tuple[float, float] = (math.nan, math.nan)
    status: str = "no runs"  # best | tied | worse | untested | no runs
    p_value: float | None = None
    paper: float | None = None

    @property
    def n(self) -> int:
        return len(self.runs)


@dataclass
class WinnersTable:
    """The ranked cells of one sweep, best first."""

    sweep: str
    parent_run_id: str
    metric: str
    mode: str
    test: str
    alpha: float
    cells: list[CellStats]
    winner_run_id: str | None = None
    citation: str | None = None

    def to_json(self) -> dict[str, Any]:
        cells = []
        for c in self.cells:
            row = {
                "cell": c.label,
                "n": c.n,
                "mean": c.mean,
                "ci95": list(c.ci),
                "status": c.status,
            }
            row |= {"p_value": c.p_value, "dice": c.dice, "epoch_s": c.epoch_s}
            row |= {"peak_gpu_mem_gib": c.peak_gib, "paper": c.paper, "outcomes": c.outcomes}
            row["runs"] = c.runs
            cells.append(row)
        head = {"sweep": self.sweep, "parent_run_id": self.parent_run_id, "metric": self.metric}
        head |= {"mode": self.mode, "test": self.test, "alpha": self.alpha}
        return {
            **head,
            "winner_run_id": self.winner_run_id,
            "citation": self.citation,
            "cells": cells,
        }


def find_winners(
    client: Any, sweep: str, alpha: float = 0.05, test: str = "ttest", tag: bool = True
) -> WinnersTable:
    """Read a sweep from MLflow and rank its cells; optionally move the ``winner`` tag."""
    if not 0 < alpha < 1:
        raise InputError(f"--alpha must be between 0 and 1, got {alpha}")
    if test not in TESTS:
        raise InputError(f"--test must be one of {', '.join(TESTS)}, got {test!r}")
    parent = tracking.find_sweep(client, sweep)
    metric = parent.data.tags.get("ablate.metric", "val/dice_mean")
    mode = parent.data.tags.get("ablate.mode", "max")
    runs = tracking.child_runs(client, parent)
    cells = group_cells(runs, metric)
    check_splits(cells, sweep)
    rank(cells, mode, alpha, test)
    citation = _attach_paper(client, parent.info.run_id, cells, metric)
    table = WinnersTable(
        sweep, parent.info.run_id, metric, mode, test, alpha, cells, citation=citation
    )
    table.winner_run_id = _best_run(cells[0], mode) if cells and cells[0].status == "best" else None
    if tag:
        _move_winner_tag(client, runs, table)
    return table


def group_cells(runs: list[Any], metric: str) -> list[CellStats]:
    """Cells in first-seen order with each finished run's best metric, Dice, time and memory."""
    cells: dict[str, CellStats] = {}
    samples: dict[str, dict[str, list[float]]] = {}  # cell -> column -> values per run
    for run in runs:
        label = run.data.tags.get("ablate.cell", run.info.run_name)
        cell = cells.setdefault(label, CellStats(label))
        if _add_run(cell, run, metric):
            column = samples.setdefault(label, {})
            for key in ("summary/epoch_s", *(f"best/val/dice_{r}" for r in REGIONS)):
                column.setdefault(key, []).extend(_finite([run.data.metrics.get(key)]))
    for label, cell in cells.items():
        column = samples.get(label, {})
        times = column.get("summary/epoch_s")
        cell.epoch_s = float(np.mean(times)) if times else math.nan
        dice = {r: column.get(f"best/val/dice_{r}") for r in REGIONS}
        cell.dice = {r: float(np.mean(v)) for r, v in dice.items() if v}
    return list(cells.values())


def _add_run(cell: CellStats, run: Any, metric: str) -> bool:
    """Count the run's outcome; keep its best metric if it finished. True when kept."""
    tags, metrics = run.data.tags, run.data.metrics
    outcome = tags.get("ablate.outcome", run.info.status.lower())
    cell.outcomes[outcome] = cell.outcomes.get(outcome, 0) + 1
    value = metrics.get(f"best/{metric}")
    if run.info.status != "FINISHED" or value is None or not math.isfinite(value):
        return False
    cell.runs[run.info.run_id] = value
    cell.values[(tags.get("ablate.seed", "?"), tags.get("ablate.split_hash", ""))] = value
    peak = metrics.get("summary/peak_gpu_mem_gib")
    if peak is not None:
        cell.peak_gib = max(cell.peak_gib or 0.0, peak)
    return True


def check_splits(cells: list[CellStats], sweep: str) -> None:
    """Cells trained on different data splits are not comparable: refuse to rank them."""
    splits = {c.label: {split for _, split in c.values if split} for c in cells}
    splits = {label: found for label, found in splits.items() if found}
    distinct = {frozenset(s) for s in splits.values()}
    if len(distinct) > 1:
        shown = "; ".join(f"{label}: {', '.join(sorted(s))}" for label, s in splits.items())
        raise InputError(
            f"sweep {sweep!r}: cells were trained on different data splits ({shown}); "
            "results on different splits cannot be ranked together"
        )


def rank(cells: list[CellStats], mode: str, alpha: float, test: str) -> None:
    """Fill mean/CI, sort best first, and mark each cell best / tied / worse / untested."""
    for cell in cells:
        values = np.array(list(cell.runs.values()), dtype=float)
        if values.size:
            cell.mean = float(values.mean())
            cell.ci = bootstrap_ci(values)
    sign = -1.0 if mode == "max" else 1.0
    cells.sort(key=lambda c: (not c.runs, sign * c.mean if c.runs else 0.0))
    if not cells or not cells[0].runs:
        return
    best = cells[0]
    best.status = "best"
    for cell in cells[1:]:
        if not cell.runs:
            continue
        cell.p_value = paired_p_value(best.values, cell.values, test)
        if cell.p_value is None:
            cell.status = "untested"
        else:
            cell.status = "tied" if cell.p_value >= alpha else "worse"


def bootstrap_ci(values: np.ndarray, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of ``values`` (n,); NaN bounds when n < 2."""
    if values.size < 2:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, (BOOTSTRAP_SAMPLES, values.size))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def paired_p_value(
    best: dict[tuple[str, str], float], other: dict[tuple[str, str], float], test: str
) -> float | None:
    """Two-sided p-value of a paired test over the (seed, split) pairs both cells have.

    None when fewer than two pairs exist (no test is possible).
    """
    from scipy import stats

    common = sorted(set(best) & set(other))
    if len(common) < 2:
        return None
    diffs = np.array([best[k] - other[k] for k in common])
    if np.allclose(diffs, diffs[0]):  # no spread: identical runs, or a constant gap
        return 1.0 if math.isclose(diffs[0], 0.0, abs_tol=1e-12) else 0.0
    if test == "wilcoxon":
        return float(stats.wilcoxon(diffs, alternative="two-sided").pvalue)
    return float(stats.ttest_1samp(diffs, 0.0).pvalue)


def _attach_paper(client: Any, parent_id: str, cells: list[CellStats], metric: str) -> str | None:
    """The paper's number for each cell from the parent run's ``paper.json``, and its citation."""
    names = {a.path for a in client.list_artifacts(parent_id)}
    if PAPER_FILE not in names:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        path = client.download_artifacts(parent_id, PAPER_FILE, tmp)
        paper = json.loads(Path(path).read_text())
    for cell in cells:
        cell.paper = paper.get("rows", {}).get(cell.label, {}).get(metric)
    return paper.get("citation")


def _best_run(cell: CellStats, mode: str) -> str:
    pick = max if mode == "max" else min
    return pick(cell.runs, key=lambda run_id: cell.runs[run_id])


def _move_winner_tag(client: Any, runs: list[Any], table: WinnersTable) -> None:
    for run in runs:
        if run.data.tags.get("winner") and run.info.run_id != table.winner_run_id:
            client.delete_tag(run.info.run_id, "winner")
    if table.winner_run_id:
        client.set_tag(table.winner_run_id, "winner", "true")
        best = table.cells[0].label
        client.set_tag(table.parent_run_id, "ablate.winner_cell", best)


def _finite(values: list[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(v)]


COLUMNS = (
    "cell",
    "n",
    "mean",
    "95% CI",
    "WT",
    "TC",
    "ET",
    "epoch s",
    "peak GiB",
    "paper",
    "status",
)


def format_table(table: WinnersTable) -> str:
    """The table as aligned text, best first, with the statistical status of each cell."""
    head = (
        f"sweep {table.sweep} (parent run {table.parent_run_id}): {table.metric} ({table.mode}), "
    )
    head += f"95% bootstrap CI, paired {table.test} vs best at alpha {table.alpha:g}"
    rows = [list(COLUMNS)] + [cell_row(c) for c in table.cells]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    lines = [head] + [
        "  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in rows
    ]
    if table.citation:
        lines.append(f"paper: {table.citation}")
    if table.winner_run_id:
        lines.append(f"winner run: {table.winner_run_id} (tagged winner=true)")
    return "\n".join(lines)


def cell_row(c: CellStats) -> list[str]:
    """One table row as text, in :data:`COLUMNS` order ("-" for missing numbers)."""
    status = c.status + (f" (p={c.p_value:.3f})" if c.p_value is not None else "")
    unfinished = {k: n for k, n in c.outcomes.items() if k != "finished"}
    if unfinished:
        status += "; " + ", ".join(f"{n} {k}" for k, n in sorted(unfinished.items()))
    return [
        c.label,
        str(c.n),
        format_number(c.mean),
        f"[{format_number(c.ci[0])}, {format_number(c.ci[1])}]",
        *(format_number(c.dice.get(r, math.nan)) for r in ("wt", "tc", "et")),
        format_number(c.epoch_s, 1),
        format_number(c.peak_gib if c.peak_gib is not None else math.nan, 2),
        format_number(c.paper if c.paper is not None else math.nan),
        status,
    ]


def format_number(value: float, digits: int = 4) -> str:
    return "-" if not math.isfinite(value) else f"{value:.{digits}f}"
