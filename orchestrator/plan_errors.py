"""The problems found while expanding a search-space file, each named by the key that set it.

:func:`orchestrator.expand.plan_sweep` validates every trial; a problem in a trial config
(``model.norm: ...``) is reported at the space-file key that put the value there
(``grid.model.norm``, ``variants[1].overrides.model.attention``), once, however many trials
share it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trainables.errors import ConfigProblem, InputError

MAX_LINES = 20  # error lines shown; the rest is counted


class PlanErrors:
    """Problems collected over all trials, deduplicated, in the order found."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, line: str) -> None:
        if line not in self.lines:
            self.lines.append(line)

    def check(self, data: dict[str, Any], origins: dict[str, str], context: str) -> Any:
        """Validate one trial dict; on failure record each problem with its origin, return None."""
        from trainables.config.trial import parse_trial_config

        try:
            return parse_trial_config(data)
        except InputError as err:
            for problem in err.problems or [ConfigProblem("", err.message)]:
                self.add(attribute_problem(problem, origins, context))
            return None

    def raise_if_any(self, source: Path) -> None:
        if not self.lines:
            return
        shown = self.lines[:MAX_LINES]
        more = len(self.lines) - len(shown)
        tail = f"\n  ... and {more} more" if more > 0 else ""
        raise InputError("invalid search space:\n  " + "\n  ".join(shown) + tail, source)


def attribute_problem(problem: ConfigProblem, origins: dict[str, str], context: str) -> str:
    """Prefix a ``field: reason`` problem with the space-file key that set ``field``.

    The longest override path that is the field or contains it wins, else the one override
    inside it; when several overrides lie inside the field (a rule about ``model`` when the grid
    sets ``model.filters`` and ``model.spatial_dims``) the trial's context names the cell, and
    the overrides are listed, since any of them may be the cause. A problem no override explains
    (a rule about the whole config, or a base setting) gets the trial's context.
    """
    field_path = problem.path
    if not field_path:
        return f"{context}: {problem}"
    covering = [p for p in origins if field_path == p or field_path.startswith(p + ".")]
    if covering:
        return f"{origins[max(covering, key=len)]}: {problem}"
    section = field_path.rsplit(".", 1)[0]
    if f"{section}.kind" in origins and "." in field_path:  # in the section the cell switched
        # Missing from the new kind (a step schedule's step_size), or a setting both kinds
        # inherit that the new kind's rules refuse: either way it belongs beside the switch.
        return f"{origins[f'{section}.kind']}: {problem} (set it beside the kind)"
    inside = [p for p in origins if p.startswith(field_path + ".")]
    if len(inside) == 1:
        return f"{origins[inside[0]]}: {problem}"
    if inside:
        return f"{context} ({', '.join(origins[p] for p in inside)}): {problem}"
    return f"{context}: {problem}"
