"""The test side of the winners table: which cases the comparisons use, and the test caption.

Selection and report are different data: each run's checkpoint is selected on validation cases
and evaluated once on the split's test cases (the test version of the metric,
:func:`orchestrator.test_tracking.test_metric`: ``val/dice_mean`` -> ``test/dice_mean``;
``val/loss`` -> ``test/dice_mean``). When every complete run logged ``per_case/test.csv`` and
the test metric measures the selection metric's quantity, the cells are ranked and compared on
the test cases (mean, CI, Δ, p and P(rank 1) all from one set of data, so a cell ahead on test
is never "worse" than a best picked on validation) and the ``val`` column shows the selection
metric; otherwise everything is on the validation cases and the ``test`` column shows the
test metric.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from orchestrator.test_tracking import TEST, cases_tag, same_quantity, test_metric

if TYPE_CHECKING:
    from orchestrator.winners import CellStats, WinnersTable

NO_TEST_CASES = "no test cases in this split"
NOT_TESTED = "not evaluated on test cases (ablate test SWEEP does it)"


def complete(run: Any) -> bool:
    """A run that trained all its epochs: FINISHED and not stopped early by a scheduler (ASHA,
    ``stop:``), which MLflow also shows as FINISHED; only these are ranked and tested."""
    outcome = run.data.tags.get("ablate.outcome", run.info.status.lower())
    return run.info.status == "FINISHED" and outcome == "finished"


def case_split(client: Any, runs: list[Any], metric: str) -> str:
    """``test`` when every complete run has ``per_case/test.csv`` (and the test metric is the
    selection metric's quantity), else the selection metric's own split (``val``)."""
    own = metric.partition("/")[0]
    finished = [r for r in runs if complete(r)]
    if not finished or not same_quantity(metric):
        return own
    for run in finished:
        listed = {a.path for a in client.list_artifacts(run.info.run_id, "per_case")}
        if f"per_case/{TEST}.csv" not in listed:
            return own
    return TEST


def case_column(metric: str, split: str) -> str:
    """The per-case CSV column that holds ``metric`` in ``split``'s file."""
    return test_metric(metric) if split == TEST else metric


def test_note(runs: list[Any], metric: str) -> str:
    """Why the test column is empty: no test cases in the split, or not evaluated; "" if any
    finished run has the test metric."""
    finished = [r for r in runs if r.info.status == "FINISHED"]
    if any(test_metric(metric) in r.data.metrics for r in finished):
        return ""
    if finished and all(r.data.tags.get(cases_tag()) == "0" for r in finished):
        return NO_TEST_CASES
    return NOT_TESTED


def mark_methods(cells: list[CellStats], split: str) -> None:
    """Say in each comparison's method text that it ran on the test cases."""
    if split != TEST:
        return
    for cell in cells:
        if cell.comparison is not None:
            cell.comparison.method += " on test cases"


def caption(table: WinnersTable) -> str:
    """What the ranked numbers are and what the other split's column holds (the start of
    :func:`orchestrator.winners_format.describe`)."""
    selected = f"{table.metric} ({table.mode}) at each run's selected epoch"
    if table.case_split == TEST:
        return (
            f"ranked on {table.test_metric} and compared on its test cases (each run's "
            f"checkpoint selected by {table.metric} ({table.mode}) on validation cases, then "
            f"evaluated once on the split's test cases); val = mean over runs of {table.metric} "
            "at the selected epochs"
        )
    if table.test_note:
        return f"ranked on {selected}; test: {table.test_note}"
    return (
        f"ranked on {selected}; test = mean over runs of {table.test_metric} (each run's "
        "selected checkpoint, evaluated once on the split's test cases)"
    )
