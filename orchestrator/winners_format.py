"""The winners table as text rows: shared by ``ablate winners`` and the Markdown/HTML report."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from orchestrator.winners_test import caption, test_metric

if TYPE_CHECKING:
    from orchestrator.winners import CellStats, WinnersTable

NO_INTERVAL = "n=1: no interval"


def columns(table: WinnersTable) -> list[str]:
    """Column names: the Dice columns are the regions the sweep's runs logged (WT/TC/ET, FG),
    on the cases the mean is (``test WT``, or ``val WT``: the selected epochs' validation)."""
    on = "test" if table.case_split == "test" else "val"  # a perf/ or train/ metric: val's Dice
    regions = [f"{on} {r.upper()}" for r in table.regions]
    other = "val" if table.ranked_metric != table.metric else "test"  # the split not ranked on
    head = ["cell", "n", "mean", "95% CI", other, "Δ to best", "Δ 95% CI", "p (adj.)", "P(rank 1)"]
    split = table.paper_metric.split("/")[0]
    paper = f"paper ({split})" if split in ("val", "test") else "paper"
    tail = ["epoch s", f"{table.cost_device} h", "peak GiB", paper, "status", "method"]
    return head + regions + tail


def describe(table: WinnersTable) -> str:
    """One line saying what the numbers are (the table's caption)."""
    tests = f"{table.tests} {'pair' if table.tests == 1 else 'pairs'} of cells compared"
    adjust = f"Holm-adjusted over {tests}" if table.correction == "holm" else "unadjusted"
    if not table.tests:  # one run per cell: nothing separates seed luck from a difference
        adjust = "but no pair of cells could be tested (a test needs two runs of each)"
    behind = "below" if table.mode == "max" else "above"
    text = (
        f"sweep {table.sweep} (parent run {table.parent_run_id}): {caption(table)}; mean and "
        "Student-t 95% CI over runs (over fold means when runs span folds); Δ = cell - best "
        f"over the runs both have, with its own 95% CI; p two-sided, {adjust}; worse = "
        f"{behind} the best at alpha {table.alpha:g} on the adjusted p, else tied"
    )
    if any(c.status == "ahead" for c in table.cells):
        text += (
            "; ahead = separated from the best in the cell's favour on the runs and cases both "
            "have: the best's lead rests on runs or cases the cell lacks (check them)"
        )
    if any(c.ci is None and c.keys == 1 for c in table.cells) and any(c.ci for c in table.cells):
        text += "; cells with one run (no interval, nothing to test) are listed after the rest"
    if any(c.adjustment for c in table.cells):
        text += (
            "; a cell that lost runs others have is ranked on its estimated marginal mean (fit "
            "of cell + seed/fold effects over every seed and fold; status gives the shift)"
        )
    if table.smoke:  # sizes and epochs shrunk: cells swept over them may have trained alike
        text = (
            "SMOKE SWEEP (--smoke): every trial shrunk to seconds (patch size, epochs, cases, "
            "one seed), a check that the study runs; its numbers rank nothing. " + text
        )
    if table.missing:
        runs = "run" if table.missing == 1 else "runs"
        text += (
            f"; {table.missing} {runs} not ranked (not finished, stopped early or without "
            f"{table.ranked_metric}; ranked on the finished runs)"
        )
    return text


def format_table(table: WinnersTable) -> str:
    """The table as aligned text, best first, with the statistical status of each cell."""
    header = columns(table)
    rows = [header] + [cell_row(table, c) for c in table.cells]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = [describe(table)] + [
        "  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in rows
    ]
    if table.citation:
        lines.append(f"paper: {table.citation}")
    lines += paper_lines(table)
    if table.winner_run_id:
        lines.append(f"winner run: {table.winner_run_id} (tagged winner=true)")
    else:
        lines.append(f"no winner: no run finished with {table.ranked_metric}")
    note = sweep_state_note(table)
    return "\n".join(lines + ([f"note: {note}"] if note else []))


def sweep_state_note(table: WinnersTable) -> str | None:
    """What the table cannot say yet (the sweep is still running, or stopped before its end),
    and a winner that a cell is ahead of on the runs and cases both have."""
    notes = [note for note in (_state(table), _ahead(table)) if note]
    return "; ".join(notes) or None


def _state(table: WinnersTable) -> str | None:
    if table.sweep_status == "RUNNING":
        return (
            "the sweep is still running: this ranks the runs finished so far, and the winner "
            "may change; run winners again when it ends"
        )
    if table.sweep_status in ("KILLED", "FAILED"):
        return (
            f"the sweep stopped before its end (parent run {table.sweep_status}): trials it "
            "never ran are missing; `ablate sweep STUDY --resume --name NAME` completes it"
        )
    return None


def _ahead(table: WinnersTable) -> str | None:
    ahead = [c.label for c in table.cells if c.status == "ahead"]
    if not ahead:
        return None
    one = len(ahead) == 1
    return (
        f"{', '.join(ahead)} {'is' if one else 'are'} ahead of the winner "
        f"{table.cells[0].label} on the runs and cases both have: the winner's lead rests on "
        f"runs or cases {'it lacks' if one else 'they lack'}; check those runs before relying on it"
    )


def cell_row(table: WinnersTable, c: CellStats) -> list[str]:
    """One table row as text, in :func:`columns` order ("-" for missing numbers)."""
    comp = c.comparison
    interval = _interval(c.ci) if c.ci else (NO_INTERVAL if c.keys == 1 else "-")
    return [
        c.label,
        str(c.n),
        format_number(c.mean),
        interval,
        format_number(c.val_mean if table.ranked_metric != table.metric else c.test_mean),
        format_number(comp.delta) if comp else "-",
        _interval(comp.ci) if comp and comp.ci else "-",
        format_p(c.p_value),
        format_number(c.p_rank1, 2),
        *(format_number(c.dice.get(r, math.nan)) for r in table.regions),
        format_number(c.epoch_s, 1),
        format_number(c.cost_hours, 3),
        format_number(c.peak_gib if c.peak_gib is not None else math.nan, 2),
        format_number(c.paper if c.paper is not None else math.nan),
        status_text(c),
        comp.method if comp else "-",
    ]


def status_text(c: CellStats) -> str:
    """best / tied / worse / ahead / untested / no runs, the cheapest tie, and the runs not
    ranked (failed, stopped, without the metric) or merged (a repeated seed)."""
    status = c.status + (", cheapest tie" if c.cheapest else "")
    if c.adjustment:
        status += f"; mean {c.adjustment:+.4f} for lost runs"
    if c.repeats:
        status += f"; {c.repeats} repeated {'seed' if c.repeats == 1 else 'seeds'} averaged"
    unfinished = {k: n for k, n in c.outcomes.items() if k != "finished"}
    if unfinished:
        status += "; " + ", ".join(f"{n} {k}" for k, n in sorted(unfinished.items()))
    return status


def format_p(p: float | None) -> str:
    if p is None:
        return "-"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _interval(ci: tuple[float, float]) -> str:
    return f"[{format_number(ci[0])}, {format_number(ci[1])}]"


def format_number(value: float, digits: int = 4) -> str:
    return "-" if not math.isfinite(value) else f"{value:.{digits}f}"


def paper_lines(table: WinnersTable) -> list[str]:
    """The paper's numbers the paper column does not show (FM-Net reports region Dice), one
    line per cell, each beside ours where the table has the same quantity."""
    lines = []
    for cell in table.cells:
        other = {m: v for m, v in cell.paper_reported.items() if m != table.paper_metric}
        if other:
            numbers = ", ".join(f"{m} {v:.4f}{_ours(table, cell, m)}" for m, v in other.items())
            lines.append(f"paper, {cell.label}: {numbers}")
    return lines


def _ours(table: WinnersTable, cell: CellStats, metric: str) -> str:
    """`` (ours 0.3524)`` for a quantity the table shows: the ranked metric (mean), the other
    split's (the ``val`` or ``test`` column) or a region Dice on the ranked cases."""
    on = "test" if table.case_split == "test" else "val"
    shown = {f"{on}/dice_{r}": cell.dice.get(r) for r in table.regions}
    if table.ranked_metric != table.metric:  # ranked on test: the val column
        shown[table.metric] = cell.val_mean
    else:
        shown[test_metric(table.metric)] = cell.test_mean
    shown[table.ranked_metric] = cell.mean
    value = shown.get(metric)
    return f" (ours {value:.4f})" if value is not None and math.isfinite(value) else ""
