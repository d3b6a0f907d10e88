"""The ablation table: child runs grouped into cells (seeds, folds pooled), ranked with error bars.

This module reads MLflow (runs, per-case CSVs, costs) and moves the ``winner`` tag; the maths is
in :mod:`orchestrator.statistics` and the text table in :mod:`orchestrator.winners_format`.
Per cell: n complete runs, the mean of the ranked metric with a Student-t 95% interval (the
test version of the metric on the split's test cases when every complete run has
``per_case/test.csv``, else each run's ``best/<metric>``; see :mod:`orchestrator.winners_test`),
the difference to the best cell with its interval and a multiplicity-corrected p (case-paired
when every paired run logged per-case values, else run-level), the mean of the other split
(``val`` or ``test`` column), the probability of ranking first, the Dice of every region the
runs logged, the cost in GPU-hours and the peak memory. Among the cells tied with the best
(and the best) the cheapest is marked.
The best run of the best cell is tagged ``winner=true`` (the tag moves when the table changes).
docs/statistics.md explains every number.
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator import statistics, tracking, winners_test
from orchestrator.mlflow_ui import describe_parent
from orchestrator.statistics import CORRECTIONS, RunSample
from orchestrator.winners_format import (  # format_table: the CLI's entry point
    format_table,  # noqa: F401
    sweep_state_note,
)
from orchestrator.winners_runs import (
    check_splits,
    device_hours,
    read_per_case,
    sweep_mode,
    trial_devices,
)
from trainables.errors import InputError
from trainables.metrics import names

PAPER_FILE = "paper.json"  # parent-run artifact: {"citation", "rows": {cell: {metric: value}}}


@dataclass
class CellStats:
    """One row of the table (see the module docstring and docs/statistics.md)."""

    label: str
    samples: list[RunSample] = field(default_factory=list)
    runs: dict[str, float] = field(default_factory=dict)  # run id -> metric
    dice: dict[str, float] = field(default_factory=dict)  # region -> mean Dice at best epochs
    epoch_s: float = math.nan
    cost_hours: float = math.nan  # mean per run, in device-hours (WinnersTable.cost_device)
    peak_gib: float | None = None
    outcomes: dict[str, int] = field(default_factory=dict)
    missing: int = 0  # runs of this cell not ranked (running, failed, stopped early...)
    mean: float = math.nan
    ci: tuple[float, float] | None = None
    test_mean: float = math.nan  # mean over runs of the test version of the metric
    val_mean: float = math.nan  # mean over runs of the selection metric (validation cases)
    status: str = "no runs"  # best | tied | worse | ahead | untested | no runs
    comparison: statistics.Comparison | None = None
    p_rank1: float = math.nan
    cheapest: bool = False
    paper: float | None = None
    paper_reported: dict[str, float] = field(default_factory=dict)  # every number it reports
    adjustment: float = 0.0  # mean - plain mean of its runs: the cell lost runs (statistics)
    repeats: int = 0  # runs repeating a seed (and fold) of the cell, averaged (statistics)

    @property
    def n(self) -> int:
        return len(self.runs)

    @property
    def keys(self) -> int:
        """Distinct (seed, fold) runs: runs repeating a seed count once (statistics)."""
        return self.n - self.repeats

    @property
    def p_value(self) -> float | None:
        """The adjusted p-value against the best (None when untested or the best)."""
        return self.comparison.p_adjusted if self.comparison else None

    def to_json(self) -> dict[str, Any]:
        c = self.comparison
        row = {"cell": self.label, "n": self.n, "mean": _num(self.mean)}
        row |= {"ci95": list(self.ci) if self.ci else None, "test_mean": _num(self.test_mean)}
        row |= {"val_mean": _num(self.val_mean)}
        row |= {"status": self.status, "mean_adjustment": self.adjustment}
        row |= {"repeated_runs": self.repeats}
        row |= {"cheapest_tie": self.cheapest, "delta": _num(c.delta) if c else None}
        row |= {"delta_ci95": list(c.ci) if c and c.ci else None}
        row |= {"p_value": c.p_value if c else None, "p_adjusted": self.p_value}
        row |= {"method": c.method if c else None, "p_rank1": _num(self.p_rank1)}
        row |= {"dice": self.dice, "epoch_s": _num(self.epoch_s)}
        row |= {"cost_hours": _num(self.cost_hours), "peak_gpu_mem_gib": self.peak_gib}
        row |= {"paper": self.paper, "outcomes": self.outcomes, "missing": self.missing}
        row |= {"paper_reported": self.paper_reported}
        return row | {"runs": self.runs}


@dataclass
class WinnersTable:
    """The ranked cells of one sweep, best first."""

    sweep: str
    parent_run_id: str
    metric: str
    mode: str
    correction: str
    alpha: float
    cells: list[CellStats]
    regions: tuple[str, ...] = ()
    winner_run_id: str | None = None
    citation: str | None = None
    test_metric: str = "test/dice_mean"  # the test column's metric
    case_split: str = "val"  # the cases the per-case comparisons use: val or test
    test_note: str = ""  # why the test column is empty, if it is
    cost_device: str = "GPU"  # cost_hours are GPU-hours, or CPU-hours for a CPU-only sweep
    sweep_status: str = "FINISHED"  # the parent run's: RUNNING while the sweep goes on
    tests: int = 0  # pairs of cells compared: the multiplicity correction's family
    smoke: bool = False  # a --smoke sweep: shrunk trials, a check that the study runs
    paper_metric: str = ""  # the metric of the paper column's numbers

    @property
    def ranked_metric(self) -> str:
        """The metric of the mean, CI, Δ, p and P(rank 1) columns: the test version of the
        selection metric when the cells are compared on test cases, else the metric itself."""
        return self.test_metric if self.case_split == winners_test.TEST else self.metric

    @property
    def missing(self) -> int:
        """Runs not FINISHED over all cells: the table ranks the finished ones."""
        return sum(c.missing for c in self.cells)

    def to_json(self) -> dict[str, Any]:
        head = {"sweep": self.sweep, "parent_run_id": self.parent_run_id, "metric": self.metric}
        head |= {"mode": self.mode, "correction": self.correction, "alpha": self.alpha}
        head |= {"regions": list(self.regions), "missing_runs": self.missing}
        head |= {"regions_on": "test" if self.case_split == winners_test.TEST else "val"}
        head |= {"winner_run_id": self.winner_run_id, "citation": self.citation}
        head |= {"test_metric": self.test_metric, "compared_on": self.case_split}
        head |= {"ranked_metric": self.ranked_metric, "sweep_status": self.sweep_status}
        head |= {"test_note": self.test_note or None, "cost_unit": f"{self.cost_device}-hours"}
        head |= {"pairs_compared": self.tests, "note": sweep_state_note(self)}
        head |= {"smoke": self.smoke, "paper_metric": self.paper_metric or None}
        return head | {"cells": [c.to_json() for c in self.cells]}


def find_winners(
    client: Any, sweep: str, alpha: float = 0.05, correction: str = "holm", tag: bool = True
) -> WinnersTable:
    """Read a sweep from MLflow and rank its cells; optionally move the ``winner`` tag."""
    if not 0 < alpha < 1:
        raise InputError(f"--alpha must be between 0 and 1 (exclusive), got {alpha}")
    if correction not in CORRECTIONS:
        raise InputError(
            f"--correction must be one of {', '.join(CORRECTIONS)}, got {correction!r}"
        )
    parent = tracking.find_sweep(client, sweep)
    metric = parent.data.tags.get("ablate.metric", "val/dice_mean")
    mode = sweep_mode(parent, metric)
    runs = tracking.child_runs(client, parent)
    split = winners_test.case_split(client, runs, metric)
    device, per_trial = trial_devices(parent)
    cells = group_cells(client, runs, metric, per_trial, split)
    check_splits(runs, sweep)
    tests = rank(cells, mode, alpha, correction, metric)
    winners_test.mark_methods(cells, split)
    ranked = winners_test.test_metric(metric) if split == winners_test.TEST else metric
    citation, paper_metric = _attach_paper(client, parent.info.run_id, cells, (ranked, metric))
    regions = names.regions_logged(k for r in runs for k in r.data.metrics)
    table = WinnersTable(sweep, parent.info.run_id, metric, mode, correction, alpha, cells, regions)
    table.citation, table.cost_device, table.tests = citation, device, tests
    table.paper_metric = paper_metric
    table.sweep_status = parent.info.status
    table.smoke = parent.data.tags.get("ablate.smoke") == "true"
    table.test_metric = winners_test.test_metric(metric)
    table.case_split, table.test_note = split, winners_test.test_note(runs, metric)
    table.winner_run_id = _best_run(cells[0], mode) if cells and cells[0].status == "best" else None
    if tag:
        _move_winner_tag(client, runs, table)
        _tag_cells(client, runs, table)
        describe_parent(client, table)
    return table


def group_cells(
    client: Any, runs: list[Any], metric: str, devices: float = 1.0, split: str | None = None
) -> list[CellStats]:
    """Cells in first-seen order with each finished run's metric, per-case values (from
    ``per_case/<split>.csv``, default the metric's own split) and costs (``devices`` GPUs or
    CPUs per trial, see :func:`trial_devices`)."""
    cells: dict[str, CellStats] = {}
    columns: dict[str, dict[str, list[float]]] = {}  # cell -> metric key -> values per run
    split = split or metric.split("/", 1)[0]
    test_key = winners_test.test_metric(metric)
    for run in runs:
        label = run.data.tags.get("ablate.cell", run.info.run_name)
        cell = cells.setdefault(label, CellStats(label))
        if not _add_run(client, cell, run, metric, split):
            continue
        column = columns.setdefault(label, {})
        keys = ("summary/epoch_s", test_key, *(_region_key(r, split) for r in names.REGIONS))
        for key in keys:
            column.setdefault(key, []).extend(_finite([run.data.metrics.get(key)]))
        column.setdefault("cost_h", []).extend(_finite([device_hours(client, run, devices)]))
    for label, cell in cells.items():
        column = columns.get(label, {})
        cell.epoch_s = _mean(column.get("summary/epoch_s"))
        cell.cost_hours = _mean(column.get("cost_h"))
        cell.test_mean = _mean(column.get(test_key))
        cell.val_mean = _mean(list(cell.runs.values()))
        dice = {r: column.get(_region_key(r, split)) for r in names.REGIONS}
        cell.dice = {r: float(np.mean(v)) for r, v in dice.items() if v}
    return list(cells.values())


def _region_key(region: str, split: str) -> str:
    """The run metric of a region's Dice on the cases the cells are ranked on: beside a test
    mean, the region columns showed the selected epochs' validation Dice, unlabelled."""
    val = f"val/dice_{region}"
    return winners_test.test_metric(val) if split == winners_test.TEST else names.best(val)


def _add_run(client: Any, cell: CellStats, run: Any, metric: str, split: str) -> bool:
    """Count the run's outcome; keep its best metric if it ran all its epochs. True when kept.

    A run a scheduler stopped early (ASHA, ``stop:``) is FINISHED in MLflow but trained fewer
    epochs: pooled with complete runs it would drag its cell's mean down (and its cost, making
    it a false "cheapest tie"), so it is counted as an outcome and left out, like a failure."""
    tags, metrics = run.data.tags, run.data.metrics
    outcome = tags.get("ablate.outcome", run.info.status.lower())
    value = metrics.get(names.best(metric))
    complete = winners_test.complete(run)
    if complete and (value is None or not math.isfinite(value)):
        outcome = f"without {metric}"  # shown on its row: a NaN best/<metric>, or none logged
    cell.outcomes[outcome] = cell.outcomes.get(outcome, 0) + 1
    if outcome != "finished" or not complete:
        return _not_ranked(cell)
    key = (tags.get("ablate.seed", run.info.run_id), tags.get("ablate.fold", ""))
    cases = read_per_case(client, run.info.run_id, split)
    column = winners_test.case_column(metric, split)
    per_case = {c: v[column] for c, v in cases.items() if column in v} if cases else None
    ranked = value
    if split == winners_test.TEST:  # ranked on the cases the comparisons use
        ranked = metrics.get(column, math.nan)
        if not math.isfinite(ranked):
            _recount(cell, f"without {column}")
            return _not_ranked(cell)
    cell.runs[run.info.run_id] = value  # the selection metric: picks the winner run
    cell.samples.append(RunSample(key, ranked, per_case or None))
    peak = metrics.get("summary/peak_gpu_mem_gib")
    if peak is not None:
        cell.peak_gib = max(cell.peak_gib or 0.0, peak)
    return True


def _recount(cell: CellStats, outcome: str) -> None:
    """Move one finished run to another outcome (it lacks what the table ranks on)."""
    cell.outcomes["finished"] -= 1
    cell.outcomes = {k: n for k, n in cell.outcomes.items() if n}
    cell.outcomes[outcome] = cell.outcomes.get(outcome, 0) + 1


def _not_ranked(cell: CellStats) -> bool:
    cell.missing += 1
    return False


def rank(
    cells: list[CellStats], mode: str, alpha: float, correction: str = "holm", metric: str = ""
) -> int:
    """Fill every statistic, sort best first (cells without runs last), mark the cheapest tie;
    intervals stay within the values ``metric`` can take. Returns the number of tests in the
    multiplicity family (pairs of cells that could be compared)."""
    done = [c for c in cells if c.samples]
    bounds = names.value_range(metric)
    results = []
    if done:
        samples = [c.samples for c in done]
        results = statistics.analyse(samples, mode, alpha, correction, value_range=bounds)
    for result in results:
        cell = done[result.index]
        cell.mean, cell.ci, cell.status = result.mean, result.ci, result.status
        cell.comparison, cell.p_rank1 = result.comparison, result.p_rank1
        cell.adjustment, cell.repeats = result.adjustment, result.repeats
    order = [done[r.index] for r in results]
    cells[:] = order + [c for c in cells if not c.samples]
    mark_cheapest(order)
    return results[0].tests if results else 0


def mark_cheapest(cells: list[CellStats]) -> None:
    """Among the best and the cells tied with it, mark the lowest cost (then peak memory)."""
    tied = [c for c in cells if c.status in ("best", "tied") and math.isfinite(c.cost_hours)]
    if len(tied) > 1:
        pick = min(tied, key=lambda c: (c.cost_hours, c.peak_gib or math.inf))
        pick.cheapest = True


def _attach_paper(
    client: Any, parent_id: str, cells: list[CellStats], metrics: tuple[str, ...]
) -> tuple[str | None, str]:
    """The paper's number for each cell from the parent run's ``paper.json``, its citation and
    the metric the numbers are: the first of ``metrics`` (the ranked one, then the selection
    metric) the paper reports for any cell, so a validation number never sits unlabelled
    beside a test mean."""
    names_ = {a.path for a in client.list_artifacts(parent_id)}
    if PAPER_FILE not in names_:
        return None, ""
    with tempfile.TemporaryDirectory() as tmp:
        path = client.download_artifacts(parent_id, PAPER_FILE, tmp)
        paper = json.loads(Path(path).read_text())
    rows = paper.get("rows", {})
    reported = [m for m in metrics if any(m in rows.get(c.label, {}) for c in cells)]
    metric = reported[0] if reported else ""
    for cell in cells:
        cell.paper_reported = dict(rows.get(cell.label, {}))
        cell.paper = cell.paper_reported.get(metric)
    return paper.get("citation"), metric


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


def _tag_cells(client: Any, runs: list[Any], table: WinnersTable) -> None:
    """Each finished run carries its cell's row as ``ablate.table.*`` tags (UI-filterable)."""
    rows = {c.label: c.to_json() for c in table.cells}
    for run in runs:
        row = rows.get(run.data.tags.get("ablate.cell", run.info.run_name))
        if row is None or run.info.status != "FINISHED":
            continue
        keep = ("mean", "ci95", "delta", "delta_ci95", "p_adjusted", "p_rank1", "status")
        tags = {f"ablate.table.{k}": json.dumps(row[k]) for k in keep}
        tags |= {"ablate.table.method": row["method"] or "", "ablate.table.n": str(row["n"])}
        tags["ablate.table.cheapest_tie"] = str(row["cheapest_tie"]).lower()
        tracking.set_tags(client, run.info.run_id, tags)


def _finite(values: list[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(v)]


def _mean(values: list[float] | None) -> float:
    return float(np.mean(values)) if values else math.nan


def _num(value: float | None) -> float | None:
    """JSON has no NaN: undefined numbers are null."""
    return value if value is not None and math.isfinite(value) else None
