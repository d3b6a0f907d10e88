"""The test side of the winners table: which cases the comparisons use, and the test caption.

Selection and report are different data. The ``mean`` column is each run's selection metric on
validation cases at its selected epoch; the ``test`` column is the mean over the cell's runs of
the test version of that metric (:func:`orchestrator.test_tracking.test_metric`:
``val/dice_mean`` -> ``test/dice_mean``; ``val/loss`` -> ``test/dice_mean``), i.e. the selected
checkpoints evaluated once on the split's test cases. The per-case comparisons (Δ, p,
P(rank 1)) use the test cases when every finished run logged ``per_case/test.csv`` and the test
metric measures the selection metric's quantity; otherwise the validation cases, as before.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from orchestrator.test_tracking import TEST, cases_tag, same_quantity, test_metric

if TYPE_CHECKING:
    from orchestrator.winners import CellStats, WinnersTable

NO_TEST_CASES = "no test cases in this split"
NOT_TESTED = "not evaluated on test cases (ablate test SWEEP does it)"


def case_split(client: Any, runs: list[Any], metric: str) -> str:
    """``test`` when every finished run has ``per_case/test.csv`` (and the test metric is the
    selection metric's quantity), else the selection metric's own split (``val``)."""
    own = metric.partition("/")[0]
    finished = [r for r in runs if r.info.status == "FINISHED"]
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
    """The caption's test part (appended to :func:`orchestrator.winners_format.describe`)."""
    if table.test_note:
        text = f"test: {table.test_note}"
    else:
        text = (
            f"test = mean over runs of {table.test_metric} (each run's selected checkpoint, "
            "evaluated once on the split's test cases)"
        )
    if table.case_split == TEST:
        text += (
            f"; Δ, p and P(rank 1) compared on test cases ({table.test_metric} per case), so the "
            "best by validation can have a low P(rank 1) when its lead does not hold on test"
        )
    return text
