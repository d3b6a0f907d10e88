"""``ablate report``: the winners table with plots, as Markdown or HTML, logged to the parent run.

Plots (PNG, in ``<report stem>_files/`` beside the report): the metric per cell with its 95% CI
and the paper's number, the metric against the epoch per cell (mean over seeds), and the metric
against the mean epoch time.
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator import plots, tracking
from orchestrator.winners import WinnersTable
from orchestrator.winners_format import cell_row, columns, describe
from trainables.errors import InputError


def write_report(client: Any, table: WinnersTable, out: Path) -> list[Path]:
    """Write the report and its plots, log them to the parent run; return [report, *plots]."""
    suffix = out.suffix.lower()
    if suffix not in (".md", ".html", ".htm"):
        raise InputError("the report must end in .md or .html", out)
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    folder = out.parent / f"{out.stem}_files"
    folder.mkdir(exist_ok=True)
    images = _plots(client, table, folder)
    text = (
        _html(table, images, out.parent)
        if suffix != ".md"
        else _markdown(table, images, out.parent)
    )
    out.write_text(text)
    client.log_artifact(table.parent_run_id, str(out), "report")
    for image in images.values():
        client.log_artifact(table.parent_run_id, str(image), f"report/{folder.name}")
    return [out, *images.values()]


def _plots(client: Any, table: WinnersTable, folder: Path) -> dict[str, Path]:
    """The PNGs for the cells that have finished runs, keyed by caption."""
    done = [c for c in table.cells if c.runs]
    images: dict[str, Path] = {}
    if not done:
        return images
    labels = [c.label for c in done]
    png = plots.metric_per_cell_png(
        labels,
        [c.mean for c in done],
        [c.ci or (math.nan, math.nan) for c in done],
        table.metric,
        [c.paper for c in done],
    )
    images[f"{table.metric} per cell (mean, 95% CI)"] = _save(folder / "metric_per_cell.png", png)
    curves = {c.label: mean_curve(client, list(c.runs), table.metric) for c in done}
    curves = {label: points for label, points in curves.items() if points}
    if curves:
        png = plots.cell_curves_png(curves, table.metric)
        images["learning curves (mean over seeds)"] = _save(folder / "learning_curves.png", png)
    timed = [c for c in done if math.isfinite(c.epoch_s)]
    if timed:
        png = plots.cost_png(
            [c.label for c in timed],
            [c.epoch_s for c in timed],
            [c.mean for c in timed],
            table.metric,
        )
        images[f"{table.metric} against epoch time"] = _save(folder / "cost.png", png)
    return images


def mean_curve(client: Any, run_ids: list[str], metric: str) -> list[tuple[int, float]]:
    """(epoch, mean over runs) of ``metric`` for the epochs every listed run logged."""
    by_step: dict[int, list[float]] = {}
    for run_id in run_ids:
        for step, value in tracking.histories(client, run_id, [metric]).get(metric, []):
            by_step.setdefault(step, []).append(value)
    return [(s, float(np.mean(v))) for s, v in sorted(by_step.items()) if len(v) == len(run_ids)]


def _save(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _intro(table: WinnersTable) -> list[str]:
    lines = [
        describe(table) + ".",
        "Each cell pools its runs (seeds, folds); n counts finished runs. Method: how the cell "
        "was compared with the best (see docs/statistics.md). Cheapest tie: the lowest GPU-hours "
        "among the best and the cells tied with it.",
    ]
    if table.citation:
        lines.append(f"Paper column: {table.citation}.")
    if table.winner_run_id:
        lines.append(f"Winner run: `{table.winner_run_id}` (tagged `winner=true`).")
    return lines


def _markdown(table: WinnersTable, images: dict[str, Path], base: Path) -> str:
    lines = [f"# Ablation report: {table.sweep}", "", *_intro(table), ""]
    header = columns(table)
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    lines += [
        "| " + " | ".join(v.replace("|", "\\|") for v in cell_row(table, c)) + " |"
        for c in table.cells
    ]
    for caption, path in images.items():
        lines += ["", f"## {caption}", "", f"![{caption}]({_relative(path, base)})"]
    return "\n".join(lines) + "\n"


def _html(table: WinnersTable, images: dict[str, Path], base: Path) -> str:
    esc = html.escape
    head = "".join(f"<th>{esc(c)}</th>" for c in columns(table))
    rows = "".join(
        "<tr>" + "".join(f"<td>{esc(v)}</td>" for v in cell_row(table, c)) + "</tr>"
        for c in table.cells
    )
    figures = "".join(
        f'<h2>{esc(caption)}</h2><img src="{esc(_relative(path, base))}" alt="{esc(caption)}">'
        for caption, path in images.items()
    )
    intro = "".join(f"<p>{esc(line)}</p>" for line in _intro(table))
    style = "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px}"
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{esc(table.sweep)}</title>"
        f"<style>{style}</style></head><body><h1>Ablation report: {esc(table.sweep)}</h1>"
        f"{intro}<table><tr>{head}</tr>{rows}</table>{figures}</body></html>\n"
    )


def _relative(path: Path, base: Path) -> str:
    return path.relative_to(base).as_posix()
