"""A sweep's dataset, prepared once on the driver before Ray starts.

Trials would prepare it too (under a file lock, the first one doing the work), but inside a Ray
worker its progress goes to a log nobody reads, and the cases it leaves out (a corrupt file, NaN
voxels, labels outside the scheme) are never named where the researcher looks. Preparing here
shows the progress on the console, names every left-out case before any trial starts, and lets
the sweep end with exit code 2 for them; the trials then reuse the cache (same key, same
directory, ``data.cache_dir`` comes from the driver).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.commands.common import progress

if TYPE_CHECKING:
    from orchestrator.expand import Plan


def check_config_roots(plan: Plan, joined: bool) -> list[str]:
    """The dataset directories the study's own configs name (``data.root``), checked like
    ``--data`` before Ray starts: a wrong path failed every trial on its worker."""
    from orchestrator.checks import check_data_dir

    lines: list[str] = []
    seen: set[tuple[str, str]] = set()
    for config in plan.cell_configs.values():
        data = config.get("data") or {}
        key = (str(data.get("root") or ""), str(data.get("label_scheme", "auto")))
        if key[0] and key not in seen:
            seen.add(key)
            lines += check_data_dir(Path(key[0]), key[1], joined, where="data.root")
    return lines


def prepare_sweep_data(plan: Plan, named: Iterable[str] = ()) -> list[str]:
    """Prepare every distinct dataset directory the planned trials read (one per data root,
    preprocessing and label scheme); synthetic data is left to the trials.

    Args:
        named: problems the console already shows (the ``--data`` check lists the cases that
            lack a file); they are not printed twice.

    Returns:
        One line per case left out of every trial: ``<file>: <problem>``, in cache order.
    """
    from trainables.config.trial import parse_trial_config
    from trainables.data.cache import default_cache_root, ensure_prepared
    from trainables.engine.data import report_left_out

    left_out: list[str] = []
    shown = {line.strip() for line in named}
    seen: set[str] = set()
    for config in plan.cell_configs.values():
        data = parse_trial_config(config).data
        if data.root is None or not Path(data.root).is_dir():
            continue  # synthetic cases, or a directory only the cluster's workers mount
        key = json.dumps([str(data.root), data.preprocess.fingerprint(), data.label_scheme])
        if key in seen:
            continue
        seen.add(key)
        cache_root = Path(data.cache_dir) if data.cache_dir else default_cache_root()
        counter = preparation_counter(data.root)
        dataset = ensure_prepared(
            data.root, cache_root, data.preprocess, data.label_scheme, counter,
            workers=max(1, min(8, (os.cpu_count() or 1) - 1)),
        )  # fmt: skip
        skipped = dataset.left_out
        report_left_out([m for m in skipped if m not in left_out and m not in shown], progress)
        left_out += [m for m in skipped if m not in left_out]
    return left_out


def preparation_counter(
    root: str | Path, say: Callable[[str], None] = progress
) -> Callable[[int, int, str], None]:
    """Progress of the preparation: every case for a small dataset, every ~5% of a large one."""

    def report(done: int, total: int, case_id: str) -> None:
        step = max(1, total // 20)
        if done == 1 or done == total or done % step == 0:
            say(f"data: preparing {root}: {done}/{total} cases read ({case_id})")

    return report
