"""Per-case validation metrics as CSV: one row per validation case, values at one epoch.

Header ``case,<metric names...>`` with the slash names of the epoch means (``val/dice_wt``,
``val/hd95_wt``, ``val/dice_mean``, ``val/loss``...). NaN is written as ``nan`` and read back as
NaN (an empty cell also reads as NaN), so a case whose metric is undefined stays visible.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from trainables.errors import InputError

PER_CASE_FILE = "per_case_val.csv"  # in each Tune checkpoint directory and --checkpoint-dir


def write_per_case_csv(rows: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Write ``rows`` (each ``{"case": id, metric: float, ...}``) atomically; columns are
    ``case`` and then every metric in first-seen order (missing values written as ``nan``)."""
    names = list(dict.fromkeys(k for row in rows for k in row if k != "case"))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["case", *names])
        for row in rows:
            writer.writerow([row["case"], *(_cell(row.get(name, math.nan)) for name in names)])
    tmp.replace(path)
    return path


def _cell(value: Any) -> str:
    return (
        "nan"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else repr(float(value))
    )


def read_per_case_csv(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a file written by :func:`write_per_case_csv`: ``case`` as text, metrics as
    floats (NaN for ``nan`` or empty cells). A file without a ``case`` column is an InputError."""
    path = Path(path)
    with path.open(newline="") as stream:
        reader = csv.DictReader(stream)
        if not reader.fieldnames or reader.fieldnames[0] != "case":
            raise InputError("not a per-case metrics file: the first column must be 'case'", path)
        rows = []
        for line, raw in enumerate(reader, start=2):
            try:
                values = {k: float(v) if v else math.nan for k, v in raw.items() if k != "case"}
            except ValueError as err:
                raise InputError(f"line {line}: {err}", path) from None
            rows.append({"case": raw["case"], **values})
    return rows
