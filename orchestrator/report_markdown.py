"""The Markdown version of ``ablate report``: the same parts as the HTML page (the study's
question, the winner, the table, every figure with its caption, notes, provenance), with the
PNGs as files beside the report."""

from __future__ import annotations

from pathlib import Path

from orchestrator.mlflow_ui import markdown_table
from orchestrator.report_html import PROVENANCE_TAGS, ReportContext
from orchestrator.winners import WinnersTable
from orchestrator.winners_format import describe, paper_lines, sweep_state_note


def render_markdown(
    table: WinnersTable, context: ReportContext, images: dict[str, Path], base: Path
) -> str:
    """The report text; ``images`` maps each figure's title to its PNG, linked relative to
    ``base`` (the report's folder)."""
    lines = [f"# Ablation report: {table.sweep}", ""]
    if context.question:
        lines += [context.question.strip(), ""]
    lines += [winner_line(table), "", *_intro(table), "", markdown_table(table)]
    for figure in context.figures:
        link = images[figure.title].relative_to(base).as_posix()
        lines += ["", f"## {figure.title}", "", f"![{figure.title}]({link})"]
        lines += ["", f"*{figure.caption}*"] if figure.caption else []
    lines += ["", *context.notes] if context.notes else []
    lines += ["", "## Provenance", "", *_provenance(table, context.provenance)]
    return "\n".join(lines) + "\n"


def winner_line(table: WinnersTable) -> str:
    """The winner in one sentence, or why there is none."""
    best = table.cells[0] if table.cells and table.cells[0].status == "best" else None
    if best is None:
        return f"No winner: no run finished with {table.ranked_metric}."
    run = f" Run `{table.winner_run_id}` (tagged `winner=true`)." if table.winner_run_id else ""
    ranked = f"{table.ranked_metric} **{best.mean:.4f}** ({table.mode})"
    note = sweep_state_note(table)
    return f"**Winner: {best.label}**, {ranked}.{run}" + (f" Note: {note}." if note else "")


def _intro(table: WinnersTable) -> list[str]:
    lines = [
        describe(table) + ".",
        "Each cell pools its runs (seeds, folds); n counts finished runs. Method: how the cell "
        "was compared with the best (see docs/statistics.md). Cheapest tie: the lowest "
        f"{table.cost_device}-hours among the best and the cells tied with it.",
    ]
    if table.citation:
        lines.append(f"Paper column: {table.citation}.")
    lines += [f"{line}." for line in paper_lines(table)]
    return lines


def _provenance(table: WinnersTable, tags: dict[str, str]) -> list[str]:
    rows = [("sweep (MLflow experiment)", table.sweep), ("parent run", table.parent_run_id)]
    rows += [(label, tags[key]) for key, label in PROVENANCE_TAGS.items() if tags.get(key)]
    return [f"- {label}: `{value}`" for label, value in rows]
