"""``ablate report``: the winners table with figures, as HTML or Markdown, logged to the parent run.

HTML is one self-contained file (:mod:`orchestrator.report_html`: styles and PNGs inline), so
the file alone shows everything when sent. Markdown keeps its PNGs in ``<report stem>_files/``
beside it. Figures: the metric per cell with its 95% interval and the paper's number, learning
curves (mean over a cell's runs, shaded min..max), the metric against GPU-hours (CPU-hours for
a sweep without GPUs: the Pareto view of cost) and segmentations of one validation case by the
winner and the worst cell.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from orchestrator import report_plots, tracking
from orchestrator.report_html import Figure, ReportContext, render
from orchestrator.report_markdown import render_markdown
from orchestrator.report_segmentation import segmentation_png
from orchestrator.winners import WinnersTable
from trainables.errors import InputError


def check_report_path(out: Path) -> None:
    """The report's file name says its format, and a Markdown report's figure folder
    (``<name>_files``) must be free; checked before the table is read and tagged."""
    suffix = out.suffix.lower() or Path(f"x{out.name}").suffix.lower()  # ".html": no name
    if suffix not in (".md", ".html", ".htm") or out.name.lower() == suffix:
        raise InputError("the report must be named <name>.md or <name>.html", out)
    figures = out.parent / f"{out.stem}_files"
    if suffix == ".md" and figures.exists() and not figures.is_dir():
        raise InputError("is a file, where the Markdown report puts its figures", figures)


def write_report(client: Any, table: WinnersTable, out: Path) -> list[Path]:
    """Write the report (and, for Markdown, its PNGs); log them to the parent run.
    Returns [report, *PNG files written beside it]."""
    check_report_path(out)
    suffix = out.suffix.lower()
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    figures, notes = build_figures(client, table)
    context = ReportContext(question(client, table), figures, provenance(client, table), notes)
    if suffix != ".md":
        out.write_text(render(table, context))
        client.log_artifact(table.parent_run_id, str(out), "report")
        return [out]
    folder = out.parent / f"{out.stem}_files"
    folder.mkdir(exist_ok=True)
    images = {f.title: _save(folder / f.file, f.png) for f in figures}
    out.write_text(render_markdown(table, context, images, out.parent))
    client.log_artifact(table.parent_run_id, str(out), "report")
    for image in images.values():
        client.log_artifact(table.parent_run_id, str(image), f"report/{folder.name}")
    return [out, *images.values()]


def build_figures(client: Any, table: WinnersTable) -> tuple[list[Figure], list[str]]:
    """The figures for the cells with finished runs, and notes on the ones left out."""
    done = [c for c in table.cells if c.runs]
    if not done:
        return [], ["no cell has a finished run: no figures"]
    figures = [_per_cell(table, done)]
    curves = {c.label: band_curve(client, list(c.runs), table.metric) for c in done}
    curves = {label: points for label, points in curves.items() if points}
    if curves:
        png = report_plots.band_curves_png(curves, table.metric)
        caption = "mean over each cell's runs per epoch; the band spans their min..max"
        figures.append(Figure("learning curves", png, caption, "learning_curves.png"))
    figures += _cost(table, done)
    segmentation, notes = _segmentation(client, table)
    return figures + segmentation, notes


def _per_cell(table: WinnersTable, done: list[Any]) -> Figure:
    png = report_plots.dot_whisker_png(
        [c.label for c in done],
        [c.mean for c in done],
        [c.ci or (math.nan, math.nan) for c in done],
        table.ranked_metric,
        [c.paper for c in done],
    )
    caption = "dot: mean over runs; whisker: Student-t 95% interval; diamond: the paper's number"
    if any(c.paper is not None for c in done) and table.paper_metric != table.ranked_metric:
        caption += f" ({table.paper_metric}: another split than the dots)"
    title = f"{table.ranked_metric} per cell (mean, 95% CI)"
    return Figure(title, png, caption, "metric_per_cell.png")


def _cost(table: WinnersTable, done: list[Any]) -> list[Figure]:
    priced = [c for c in done if math.isfinite(c.cost_hours)]
    if not priced:
        return []
    device = table.cost_device
    png = report_plots.pareto_png(
        [c.label for c in priced],
        [c.cost_hours for c in priced],
        [c.mean for c in priced],
        table.ranked_metric,
        table.mode,
        device,
    )
    caption = (
        f"{device} time per run (epoch time x epochs x {device}s per trial; in hours, or minutes "
        "or seconds when that small); green: no cell is cheaper and better"
    )
    title = f"{table.ranked_metric} against {device}-hours"
    return [Figure(title, png, caption, "cost.png")]


def _segmentation(client: Any, table: WinnersTable) -> tuple[list[Figure], list[str]]:
    try:
        png, text = segmentation_png(client, table)
    except (InputError, OSError, RuntimeError, KeyError, ValueError) as err:
        return [], [f"segmentation panels left out: {type(err).__name__}: {err}"]
    if png is None:
        return [], [f"segmentation panels left out: {text}"]
    caption = (
        f"validation case {text}, middle axial slice through the tumour: FLAIR with WT (green), "
        "TC (yellow), ET (red); each model's best checkpoint, predicted on the CPU"
    )
    title = "segmentations: reference, winner, worst cell"
    return [Figure(title, png, caption, "segmentation.png")], []


def band_curve(
    client: Any, run_ids: list[str], metric: str
) -> list[tuple[int, float, float, float]]:
    """(epoch, mean, min, max) over runs of ``metric``, for the epochs every run logged."""
    by_step = _by_step(client, run_ids, metric)
    return [
        (s, float(np.mean(v)), float(np.min(v)), float(np.max(v)))
        for s, v in sorted(by_step.items())
        if len(v) == len(run_ids)
    ]


def mean_curve(client: Any, run_ids: list[str], metric: str) -> list[tuple[int, float]]:
    """(epoch, mean over runs) of ``metric`` for the epochs every listed run logged."""
    return [(s, mean) for s, mean, _, _ in band_curve(client, run_ids, metric)]


def _by_step(client: Any, run_ids: list[str], metric: str) -> dict[int, list[float]]:
    by_step: dict[int, list[float]] = {}
    for run_id in run_ids:
        for step, value in tracking.histories(client, run_id, [metric]).get(metric, []):
            by_step.setdefault(step, []).append(value)
    return by_step


def question(client: Any, table: WinnersTable) -> str:
    """The study's question: the ``description`` of the space file logged with the sweep."""
    files = [a.path for a in client.list_artifacts(table.parent_run_id, "space")]
    files = [f for f in files if f.endswith((".yaml", ".yml"))]
    if not files:
        return ""
    with tempfile.TemporaryDirectory() as tmp:
        text = Path(client.download_artifacts(table.parent_run_id, files[0], tmp)).read_text()
    data = yaml.safe_load(text)
    return str(data.get("description", "")) if isinstance(data, dict) else ""


def provenance(client: Any, table: WinnersTable) -> dict[str, str]:
    """The parent run's tags (commit, split hash, versions...)."""
    return dict(client.get_run(table.parent_run_id).data.tags)


def _save(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path
