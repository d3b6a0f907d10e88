"""What the winners table reads from each trial run besides its metrics: the per-case CSVs the
comparisons pair, the cost of a run, the data split it trained on, and the sweep's direction."""

from __future__ import annotations

import csv
import io
import math
import tempfile
from pathlib import Path
from typing import Any

from trainables.errors import InputError
from trainables.metrics import names

GPU_KEYS = ("resources.gpu", "ablate.gpus_per_trial")  # parent param or tag: GPUs per trial
CPU_KEY = "resources.cpu"  # parent param: CPUs per trial (the cost unit of a CPU-only sweep)


def sweep_mode(parent: Any, metric: str) -> str:
    """``max`` or ``min`` from the parent run's ``ablate.mode`` tag; without the tag, the
    metric's own direction. Any other value is an InputError: read as "min", a ``maximize``
    ranked the table backwards."""
    mode = parent.data.tags.get("ablate.mode")
    if mode is None:
        mode = names.better_mode(metric)
        if mode is None:
            raise InputError(
                f"parent run {parent.info.run_id} has no ablate.mode tag and {metric} has no "
                "better direction: tag it max or min"
            )
    if mode not in ("max", "min"):
        raise InputError(
            f"parent run {parent.info.run_id}: tag ablate.mode is {mode!r}; expected max or min"
        )
    return mode


def read_per_case(
    client: Any, run_id: str, split: str = "val"
) -> dict[str, dict[str, float]] | None:
    """``per_case/<split>.csv`` of a run: case -> {column: value}; None when it is absent.

    The header is ``case,<metric names>``; an empty cell or ``nan`` reads as NaN. A row with
    more or fewer fields than the header, a value that is no number or a case listed twice is
    an InputError naming the run and the line: read leniently, such a file (edited by hand,
    cut short) moved Δ and p with nothing said.
    """
    name = f"per_case/{split}.csv"
    if name not in {a.path for a in client.list_artifacts(run_id, "per_case")}:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        text = Path(client.download_artifacts(run_id, name, tmp)).read_text()
    out: dict[str, dict[str, float]] = {}
    reader = csv.DictReader(io.StringIO(text))
    for line, row in enumerate(reader, start=2):
        problem = _row_problem(row, out)
        if problem:
            raise InputError(f"run {run_id}: {name} line {line}: {problem}")
        case = row.pop("case")
        out[case] = {k: _float(v) for k, v in row.items()}
    return out


def _row_problem(row: dict[str | None, Any], seen: dict[str, Any]) -> str | None:
    """What is wrong with one CSV row (None when nothing is)."""
    if None in row or None in row.values():
        return "the row's fields do not match the header"
    case = row.get("case")
    if not case:
        return "no case id"
    if case in seen:
        return f"case {case!r} is listed twice"
    for key, value in row.items():
        if key != "case" and value and not _parses(value):
            return f"{key} is {value!r}, not a number"
    return None


def _parses(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def device_hours(client: Any, run: Any, devices: float = 1.0) -> float:
    """Mean epoch time x epochs run x devices (GPUs or CPUs) per trial, in hours (NaN without
    timings).

    Epochs are the last step of ``perf/epoch_s`` (``best/epoch`` is the selected epoch, not the
    count), else the ``train.epochs`` param.
    """
    epoch_s = run.data.metrics.get("summary/epoch_s")
    if epoch_s is None:
        return math.nan
    steps = [m.step for m in client.get_metric_history(run.info.run_id, names.perf("epoch_s"))]
    epochs = max(steps) if steps else _float(run.data.params.get("train.epochs", "nan"))
    return epoch_s * epochs * devices / 3600


def trial_devices(parent: Any) -> tuple[str, float]:
    """What a trial's cost is counted in: ("GPU", GPUs per trial), or ("CPU", CPUs per trial)
    for a sweep whose trials got no GPU (wall hours are not GPU-hours there).

    Read from the parent's params or tags (:data:`GPU_KEYS`, :data:`CPU_KEY`); sweeps logged
    before these were recorded count one GPU per trial.
    """
    for key in GPU_KEYS:
        value = _float(parent.data.params.get(key) or parent.data.tags.get(key) or "nan")
        if value > 0:
            return "GPU", value
        if value == 0:
            cpus = _float(parent.data.params.get(CPU_KEY) or "nan")
            return "CPU", cpus if cpus > 0 else 1.0
    return "GPU", 1.0


def check_splits(runs: list[Any], sweep: str) -> None:
    """Cells trained on different data splits are not comparable: refuse to rank them."""
    splits: dict[str, set[str]] = {}
    for run in runs:
        split = run.data.tags.get("ablate.split_hash", "")
        if split and run.info.status == "FINISHED":
            label = run.data.tags.get("ablate.cell", run.info.run_name)
            splits.setdefault(label, set()).add(split)
    if len({frozenset(s) for s in splits.values()}) > 1:
        shown = "; ".join(f"{label}: {', '.join(sorted(s))}" for label, s in splits.items())
        raise InputError(
            f"sweep {sweep!r}: cells were trained on different data splits ({shown}); "
            "results on different splits cannot be ranked together"
        )


def _float(text: str | None) -> float:
    """A CSV/param value as a float; empty, missing or unparsable -> NaN."""
    try:
        return float(text) if text not in (None, "") else math.nan
    except ValueError:
        return math.nan
