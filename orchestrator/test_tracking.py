"""Held-out test results in MLflow: where they go on a run and how the tables find them.

A run's test evaluation (:mod:`trainables.engine.held_out`) is logged as

- metrics ``test/<metric>_<region>``, ``test/dice_mean``, ``test/lesion_dice_wt``... and
  ``test/cases`` (cases evaluated), all at **step 0**, the step of the run's summary metrics
  (``best/...``, ``summary/...``), whether the sweep's last epoch reported them or
  ``ablate test`` evaluated the run later;
- the tag ``ablate.test_cases`` (``0``: the split has no test cases);
- the artifact ``per_case/test.csv`` (one row per test case, same format as ``per_case/val.csv``).

An external test set (``ablate test --data DIR``) uses the prefix ``test_ext`` instead
(``test_ext/dice_mean``, tag ``ablate.test_ext.cases``, ``per_case/test_ext.csv``) and the tag
``ablate.test_ext.data`` naming the directory, so it never mixes with the split's test cases.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from orchestrator import tracking
from trainables.metrics.names import metric_name

TEST, EXTERNAL = "test", "test_ext"
TEST_STEP = 0  # test metrics are summaries of the selected weights, logged with best/ and summary/
DATA_TAG = f"ablate.{EXTERNAL}.data"


def cases_tag(prefix: str = TEST) -> str:
    """``ablate.test_cases`` (the split's test) or ``ablate.test_ext.cases`` (external)."""
    return "ablate.test_cases" if prefix == TEST else f"ablate.{prefix}.cases"


def split_test(metrics: dict[str, float]) -> tuple[dict[str, float], dict[str, float]]:
    """(the epoch's other metrics, its ``test/...`` and ``postprocess/...`` metrics: the
    last epoch's summaries of the selected weights, logged at step 0)."""
    test = {k: v for k, v in metrics.items() if k.startswith((f"{TEST}/", "postprocess/"))}
    return {k: v for k, v in metrics.items() if k not in test}, test


def has_test(run: Any, prefix: str = TEST) -> bool:
    """Whether a run already carries test results of ``prefix`` (metrics or the cases tag)."""
    logged = any(k.startswith(f"{prefix}/") for k in run.data.metrics)
    return logged or cases_tag(prefix) in run.data.tags


def log_test(
    client: Any,
    run_id: str,
    metrics: dict[str, float],
    per_case: Path | None = None,
    prefix: str = TEST,
    tags: dict[str, str] | None = None,
    earlier: dict[str, float] | None = None,
) -> None:
    """Log one run's test metrics (step 0), its cases tag, extra ``tags`` and its per-case CSV
    (as ``per_case/<prefix>.csv``). ``earlier``: the metrics the run held before (``ablate
    test --overwrite``); a ``prefix/`` value among them that this evaluation leaves undefined
    becomes NaN."""
    stale = [
        key
        for key in earlier or {}
        if key.startswith(f"{prefix}/") and not math.isfinite(metrics.get(key, math.nan))
    ]
    tracking.mark_undefined(client, run_id, stale, TEST_STEP)
    tracking.log_metrics(client, run_id, metrics, TEST_STEP)
    cases = metrics.get(metric_name(prefix, "cases"))
    all_tags = dict(tags or {})
    if cases is not None:
        all_tags[cases_tag(prefix)] = str(int(cases))
    if all_tags:
        tracking.set_tags(client, run_id, all_tags)
    if per_case is not None and per_case.is_file():
        tracking.log_bytes(client, run_id, per_case.read_bytes(), f"{prefix}.csv", "per_case")


def test_metric(metric: str) -> str:
    """The test version of the sweep's selection metric, shown beside it in the winners table:
    ``val/X`` -> ``test/X``; the test pass computes no loss, so ``val/loss`` (and any metric
    that is not a ``val/`` metric) -> ``test/dice_mean``."""
    split, _, name = metric.partition("/")
    if split == "val" and name and name != "loss":
        return metric_name(TEST, name)
    return metric_name(TEST, "dice_mean")


def same_quantity(metric: str) -> bool:
    """Whether :func:`test_metric` measures what ``metric`` does (then the per-case comparisons
    may use the test cases; a loss selected on ``min`` cannot be compared on test Dice)."""
    return test_metric(metric).partition("/")[2] == metric.partition("/")[2]
