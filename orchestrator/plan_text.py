"""What ``ablate validate`` prints about a planned sweep: a summary line and one row per trial."""

from __future__ import annotations

from typing import Any

from orchestrator.expand import Plan
from trainables.config.dotted import format_value

# --smoke replaces sizes (patch, widths, epochs, cases) after the cells' overrides are applied;
# the rows still list each cell's overrides as the file writes them: what the cell ablates.
SMOKE_NOTE = "; smoke: every trial shrunk, overrides listed as the file writes them"


def _count(n: int, noun: str) -> str:
    """``1 cell``, ``2 cells``."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def describe_plan(plan: Plan) -> tuple[str, list[dict[str, Any]]]:
    """The one-line summary and the trial rows ``ablate validate`` prints.

    Rows are ``{"key", "cell", "fold", "seed", "overrides", "config"}`` (``config``: the
    resolved trial config, every default filled in, as the trial will train, ``--smoke``
    shrinking included); for Optuna, one row per cell with the sampled ranges in place of
    values and the cell's config before sampling.
    """
    space, res = plan.space, plan.space.resources
    cells, seeds = _count(len(plan.cells), "cell"), _count(space.seeds, "seed")
    if space.is_grid:
        folds = f" x {space.folds} folds" if space.folds else ""
        count = f"{cells}{folds} x {seeds} = {_count(len(plan.trials), 'trial')}"
    else:
        samples = space.search.num_samples
        count = f"{cells}, {_count(samples, 'sample')} x {seeds}"
        count += f" = {_count(samples * space.seeds, 'trial')}"
    summary = (
        f"{plan.source}: sweep {plan.name!r}, {count} ({space.search.kind} search, "
        f"{space.effective_scheduler.kind} scheduler, {space.metric} {space.mode}, "
        f"{res.cpu:g} CPU / {res.gpu:g} GPU per trial{SMOKE_NOTE if plan.smoke else ''})"
    )
    return summary, _plan_rows(plan)


def _plan_rows(plan: Plan) -> list[dict[str, Any]]:
    if plan.space.is_grid:
        return [
            {
                "key": t.key,
                "cell": t.cell,
                "fold": t.fold,
                "seed": t.seed,
                # a fold's whole split section would drown the row: the key names the fold
                "overrides": _shown({k: v for k, v in t.overrides.items() if k != "data.split"}),
                "config": t.config,
            }
            for t in plan.trials
        ]
    ranges = {
        path: f"~{rng.form}({', '.join(map(format_value, rng.written_values()))})"
        for path, rng in plan.space.sample.items()
    }
    return [
        {
            "key": c.label,
            "cell": c.label,
            "seed": None,
            "overrides": {**_shown(c.overrides), **ranges},
            "config": plan.cell_configs.get(c.label),
        }
        for c in plan.cells
    ]


def _shown(overrides: dict[str, Any]) -> dict[str, str]:
    return {path: format_value(value) for path, value in overrides.items()}
