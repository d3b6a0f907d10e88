"""What the MLflow UI (3.x) shows for a sweep, so the winner is visible without configuring it.

MLflow 3's UI opens experiments in its GenAI workflow (an empty "Traces" overview) unless the
URL says ``workflowType=machine_learning``, and its runs table shows no param or metric columns
until a user adds them. A *saved view* fixes the second: the UI stores named views as
experiment tags ``mlflow.sharedViewState.<key>`` (JSON: search facets and table state) and
applies one when the URL carries ``viewStateShareKey=<key>``. The sweep writes such a view
(trial runs only, sorted by the metric, columns: the metric, the swept parameters, cell,
outcome, winner) and prints the URL that opens it. Descriptions (tag ``mlflow.note.content``,
Markdown) carry the ablation table on the parent run and the trial's cell/seed/fold/outcome on
each child run.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from orchestrator import tracking
from orchestrator.winners_format import cell_row, columns, describe

if TYPE_CHECKING:
    from orchestrator.expand import Plan
    from orchestrator.winners import WinnersTable

VIEW_KEY = "ablate"  # the saved view's name in the URL and in the experiment tag
VIEW_TAG = "mlflow.sharedViewState."
KIND_TAG = "mlflow.experimentKind"  # read by the UI when its workflow selector is off
NOTE_TAG = "mlflow.note.content"  # a run's description in the UI (Markdown)
LOCAL_UI = "http://127.0.0.1:5000"  # where `mlflow ui` listens by default
MAX_PARAM_COLUMNS = 8
NOTE_LIMIT = 8000  # MLflow's limit on a tag value


def runs_url(tracking_uri: str, experiment_id: str) -> str:
    """The runs view of the experiment with ablate's saved view: the server's own URL for an
    ``http(s)://`` tracking URI, else the local ``mlflow ui`` address."""
    scheme = urlparse(tracking_uri).scheme
    base = tracking_uri.rstrip("/") if scheme in ("http", "https") else LOCAL_UI
    query = f"workflowType=machine_learning&viewStateShareKey={VIEW_KEY}"
    return f"{base}/#/experiments/{experiment_id}/runs?{query}"


def browse_lines(tracking_uri: str, experiment_id: str) -> list[str]:
    """How to see the sweep in the MLflow UI: the command to start it (local stores), the URL."""
    url = runs_url(tracking_uri, experiment_id)
    if urlparse(tracking_uri).scheme in ("http", "https"):
        return [f"MLflow runs view: {url}"]
    return [f"MLflow UI: mlflow ui --backend-store-uri {tracking_uri}", f"then open {url}"]


def swept_params(plan: Plan) -> list[str]:
    """The dotted config paths that differ between the plan's cells (its axes), as params."""
    values: dict[str, set[str]] = {}
    for cell in plan.cells:
        for key, value in tracking.flatten(cell.overrides).items():
            values.setdefault(key, set()).add(value)
    for key in plan.space.sample:
        values.setdefault(key, {"", "sampled"})
    return [k for k, seen in values.items() if len(seen) > 1 or len(plan.cells) == 1]


def view_state(metric: str, mode: str, params: Iterable[str]) -> dict[str, Any]:
    """The saved view: trial runs, best first by ``best/<metric>``, the useful columns."""
    best = f"best/{metric}"
    shown = [f"metrics.`{best}`", "tags.`winner`", "tags.`ablate.cell`"]
    shown += [f"params.`{p}`" for p in list(params)[:MAX_PARAM_COLUMNS]]
    shown.append("tags.`ablate.outcome`")
    return {
        "searchFilter": "tags.`ablate.kind` = 'trial'",
        "orderByKey": f"metrics.`{best}`",
        "orderByAsc": mode == "min",
        "selectedColumns": shown,
    }


def setup_experiment(client: Any, experiment_id: str, plan: Plan) -> None:
    """Tag the experiment as model training and store ablate's saved runs view in it."""
    state = view_state(plan.space.metric, plan.space.mode, swept_params(plan))
    client.set_experiment_tag(experiment_id, KIND_TAG, "custom_model_development")
    client.set_experiment_tag(experiment_id, VIEW_TAG + VIEW_KEY, json.dumps(state))


def trial_note(
    cell: str,
    seed: int | str,
    fold: int | None,
    outcome: str,
    metric: str,
    best: float | None = None,
) -> str:
    """A child run's description: its cell, seed, fold and outcome (and best metric)."""
    lines = [f"**cell** `{cell}`  ", f"**seed** {seed}  "]
    if fold is not None:
        lines.append(f"**fold** {fold}  ")
    lines.append(f"**outcome** {outcome}  ")
    if best is not None and math.isfinite(best):
        lines.append(f"**best {metric}** {best:.4f}")
    return "\n".join(lines)


NOTE_COLUMNS = ("cell", "n", "mean", "95% CI", "Δ to best", "p (adj.)", "P(rank 1)", "test", "val")
NOTE_COLUMNS += ("GPU h", "CPU h", "paper", "status")  # the description pane is narrow


def markdown_table(table: WinnersTable, keep: tuple[str, ...] | None = None) -> str:
    """The ablation table as a Markdown table (best first); ``keep``: these columns only."""
    header = columns(table)
    index = [i for i, name in enumerate(header) if keep is None or name in keep]
    lines = ["| " + " | ".join(header[i] for i in index) + " |", "|" + "---|" * len(index)]
    for cell in table.cells:
        row = cell_row(table, cell)
        lines.append("| " + " | ".join(row[i].replace("|", "\\|") for i in index) + " |")
    return "\n".join(lines)


def parent_note(table: WinnersTable) -> str:
    """The parent run's description: the winner, the table, what the numbers are."""
    best = table.cells[0] if table.cells and table.cells[0].status == "best" else None
    head = f"## Ablation table: {table.sweep}\n\n"
    if best is not None:
        head += f"**Winner: `{best.label}`** ({table.ranked_metric} {best.mean:.4f})\n\n"
    note = head + markdown_table(table, NOTE_COLUMNS) + f"\n\n{describe(table)}.\n"
    if table.citation:
        note += f"\nPaper column: {table.citation}.\n"
    return note[:NOTE_LIMIT]


def describe_parent(client: Any, table: WinnersTable) -> None:
    """Rewrite the parent run's description with the current table (``ablate winners``)."""
    client.set_tag(table.parent_run_id, NOTE_TAG, parent_note(table))
