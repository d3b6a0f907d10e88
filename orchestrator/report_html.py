"""The HTML report: one self-contained file (CSS and PNGs inline), readable when sent alone.

Sections: the study's question and citation, the winner, the ablation table (the text rows of
:mod:`orchestrator.winners_format`, winner highlighted), the figures, and provenance (code,
split, library versions from the parent run's tags). No external fonts, scripts or CDNs.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from orchestrator.winners_format import cell_row, columns, describe, paper_lines, sweep_state_note

if TYPE_CHECKING:
    from orchestrator.winners import WinnersTable

STYLE = """
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d2733;
margin:0;background:#f4f6f8}
main{max-width:1180px;margin:0 auto;padding:24px 32px;background:#fff;min-height:100vh}
h1{font-size:26px;margin:0 0 4px}h2{font-size:19px;margin:32px 0 8px;border-bottom:1px solid
#dde3e9;padding-bottom:4px}
.question{font-size:17px;color:#33475b}.muted{color:#5f6f80;font-size:13px}
.winner{background:#e8f5e9;border-left:4px solid #2e7d32;padding:10px 14px;margin:16px 0}
code{font:13px ui-monospace,SFMono-Regular,Menlo,monospace;background:#eef1f4;padding:1px 4px;
border-radius:3px}
.scroll{overflow-x:auto}
table{border-collapse:collapse;font-size:13px;white-space:nowrap}
th,td{border-bottom:1px solid #e3e8ee;padding:5px 9px;text-align:right}
th{background:#f0f3f6;position:sticky;top:0}th:first-child,td:first-child{text-align:left}
tr.best td{background:#e8f5e9;font-weight:600}tr.worse td{color:#8a96a3}
tr.ahead td{background:#fff4e5}
figure{margin:12px 0 24px}figure img{max-width:100%;height:auto;border:1px solid #e3e8ee}
figcaption{color:#5f6f80;font-size:13px}
dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 16px;font-size:13px}
dt{color:#5f6f80}dd{margin:0;font-family:ui-monospace,Menlo,monospace}
"""

PROVENANCE_TAGS = {
    "ablate.git_commit": "study git commit",
    "ablate.version": "ablate",
    "ablate.code_commit": "ablate git commit",
    "ablate.split_hash": "split hash",
    "ablate.left_out_cases": "cases left out",
    "ablate.space_file": "study file",
    "ablate.space_hash": "study file hash",
    "ablate.smoke": "smoke (shrunk trials)",
    "ablate.torch_version": "torch",
    "ablate.ray_version": "ray",
    "ablate.mlflow_version": "mlflow",
}


@dataclass
class Figure:
    """One PNG figure with its heading and caption."""

    title: str
    png: bytes
    caption: str = ""
    file: str = "figure.png"  # the PNG's name beside a Markdown report


@dataclass
class ReportContext:
    """What the page shows besides the table."""

    question: str = ""
    figures: list[Figure] = field(default_factory=list)
    provenance: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # figures that could not be drawn, and why


def render(table: WinnersTable, context: ReportContext) -> str:
    """The whole page as one string."""
    esc = html.escape
    body = [f"<h1>Ablation report: {esc(table.sweep)}</h1>", _question(table, context)]
    body += [_winner(table), "<h2>Ablation table</h2>", _table(table)]
    body.append(f"<p class='muted'>{esc(describe(table))}.</p>")
    body += [_figure(figure) for figure in context.figures]
    body += [f"<p class='muted'>{esc(note)}</p>" for note in context.notes]
    body.append(_provenance(table, context.provenance))
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{esc(table.sweep)}: ablation report</title><style>{STYLE}</style></head>"
        f"<body><main>{''.join(body)}</main></body></html>\n"
    )


def _question(table: WinnersTable, context: ReportContext) -> str:
    esc = html.escape
    parts = []
    if context.question:
        parts.append(f"<p class='question'>{esc(context.question)}</p>")
    if table.citation:
        parts.append(f"<p class='muted'>Paper: {esc(table.citation)}</p>")
    parts += [f"<p class='muted'>{esc(line)}</p>" for line in paper_lines(table)]
    return "".join(parts)


def _winner(table: WinnersTable) -> str:
    esc = html.escape
    best = table.cells[0] if table.cells and table.cells[0].status == "best" else None
    if best is None:
        return (
            f"<div class='winner'>No winner: no run finished with {esc(table.ranked_metric)}.</div>"
        )
    run = f" Run <code>{esc(table.winner_run_id)}</code>" if table.winner_run_id else ""
    note = sweep_state_note(table)
    return (
        f"<div class='winner'>Winner: <strong>{esc(best.label)}</strong>, "
        f"{esc(table.ranked_metric)} <strong>{best.mean:.4f}</strong> ({table.mode}).{run} (tagged "
        "<code>winner=true</code> in MLflow)." + (f" Note: {esc(note)}." if note else "") + "</div>"
    )


def _table(table: WinnersTable) -> str:
    esc = html.escape
    head = "".join(f"<th>{esc(c)}</th>" for c in columns(table))
    rows = []
    for cell in table.cells:
        status = cell.status.split(",")[0]
        cells = "".join(f"<td>{esc(v)}</td>" for v in cell_row(table, cell))
        rows.append(f"<tr class='{esc(status)}'>{cells}</tr>")
    return f"<div class='scroll'><table><tr>{head}</tr>{''.join(rows)}</table></div>"


def _figure(figure: Figure) -> str:
    esc = html.escape
    data = base64.b64encode(figure.png).decode("ascii")
    caption = f"<figcaption>{esc(figure.caption)}</figcaption>" if figure.caption else ""
    return (
        f"<h2>{esc(figure.title)}</h2><figure><img src='data:image/png;base64,{data}' "
        f"alt='{esc(figure.title)}'>{caption}</figure>"
    )


def _provenance(table: WinnersTable, tags: dict[str, str]) -> str:
    esc = html.escape
    rows = [("sweep (MLflow experiment)", table.sweep), ("parent run", table.parent_run_id)]
    rows += [(label, tags[key]) for key, label in PROVENANCE_TAGS.items() if tags.get(key)]
    items = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in rows)
    return f"<h2>Provenance</h2><dl>{items}</dl>"
