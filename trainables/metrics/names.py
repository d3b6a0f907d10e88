"""Metric and region names, defined once for the engine, the tracking code and the tables.

Names are slash-namespaced: ``<split>/<metric>_<region>`` for per-region metrics
(``val/dice_wt``), ``<split>/dice_mean`` and ``<split>/loss`` for the aggregates,
``perf/<name>`` for speed and memory, ``best/<name>`` for a name's value at a run's selected
epoch and ``summary/<name>`` for whole-run summaries. This module imports nothing from ray or
mlflow, so the engine and the orchestrator can both use it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

# Regions in display order: BraTS WT/TC/ET, then FG (binary label schemes such as CT).
REGIONS: tuple[str, ...] = ("wt", "tc", "et", "fg")
BRATS_REGIONS: tuple[str, ...] = ("wt", "tc", "et")
BINARY_REGIONS: tuple[str, ...] = ("fg",)
# Metrics computed per region (trainables.metrics.brats.region_metrics keys).
REGION_METRICS: tuple[str, ...] = ("dice", "hd95", "nsd", "rvd", "sensitivity", "specificity")
# Data splits whose metrics are logged, and the non-split prefixes.
SPLITS: tuple[str, ...] = ("train", "val", "test")
PERF, BEST, SUMMARY = "perf", "best", "summary"
PERF_METRICS: tuple[str, ...] = (
    "epoch_s",
    "voxels_per_s",
    "peak_gpu_mem_gib",
    "train_s",
    "val_s",
    "step_ms",  # median training-step time of the epoch (CUDA events on a GPU)
    "data_wait_s",
    "data_wait_frac",  # share of the epoch's train time spent waiting for batches
)


def metric_name(split: str, metric: str, region: str | None = None) -> str:
    """``val/dice_wt`` from ("val", "dice", "wt"); ``val/dice_mean`` from ("val", "dice_mean")."""
    return f"{split}/{metric}_{region}" if region else f"{split}/{metric}"


def best(name: str) -> str:
    """The name of ``name``'s value at a run's selected epoch: ``best/val/dice_wt``."""
    return f"{BEST}/{name}"


def summary(name: str) -> str:
    """The name of a whole-run summary: ``summary/epoch_s``."""
    return f"{SUMMARY}/{name}"


def perf(name: str) -> str:
    """``perf/epoch_s`` and the like."""
    return f"{PERF}/{name}"


def dice_names(split: str, regions: Iterable[str] = REGIONS) -> tuple[str, ...]:
    """Per-region Dice names then the mean: ``val/dice_wt``, ..., ``val/dice_mean``."""
    return (*(metric_name(split, "dice", r) for r in regions), metric_name(split, "dice_mean"))


def known_metrics() -> tuple[str, ...]:
    """Every metric a trial logs per epoch (what a space file's ``metric`` may name)."""
    return (
        metric_name("train", "loss"),
        metric_name("val", "loss"),
        metric_name("val", "dice_mean"),
        *(metric_name("val", m, r) for m in REGION_METRICS for r in REGIONS),
        *(perf(name) for name in PERF_METRICS),
    )


def test_metrics() -> tuple[str, ...]:
    """The region metrics and ``dice_mean`` a trial logs once, on its split's test cases
    (``test/dice_wt``...): where a paper's numbers were measured on test cases, they are
    filed under these names, not under ``val/``."""
    names = (metric_name("test", "dice_mean"),)
    return names + tuple(metric_name("test", m, r) for m in REGION_METRICS for r in REGIONS)


def regions_for(scheme: Any) -> tuple[str, ...]:
    """The regions evaluated for a label scheme, in :data:`REGIONS` order.

    ``scheme`` is a :class:`~trainables.data.labels.LabelScheme` (anything with
    ``region_names``), a scheme name (``"binary"`` -> ``("fg",)``, a BraTS scheme -> WT/TC/ET)
    or an iterable of region names (unknown names are dropped, so logged metric suffixes work).
    """
    if isinstance(scheme, str):
        from trainables.data.labels import get_scheme  # lazy: labels imports config

        return get_scheme(scheme).region_names
    names = getattr(scheme, "region_names", scheme)
    present = set(names)
    return tuple(r for r in REGIONS if r in present)


def regions_logged(metric_keys: Iterable[str], split: str = "val") -> tuple[str, ...]:
    """Regions whose ``best/<split>/dice_<region>`` appears among ``metric_keys``."""
    prefix = best(f"{split}/dice_")
    suffixes = {k.removeprefix(prefix) for k in metric_keys if k.startswith(prefix)}
    return regions_for(suffixes)


# Per-case metrics that are fractions (a Dice, a surface Dice, a rate): their means are too.
_FRACTIONS = ("dice", "nsd", "sensitivity", "specificity", "lesion_dice")


# perf/ figures that are better higher; every other perf/ figure is a cost (time, memory, wait).
_PERF_HIGHER = ("voxels_per_s",)


def better_mode(name: str) -> str | None:
    """``"max"`` when higher values of ``name`` are better, ``"min"`` when lower are, None when
    neither (a signed error such as the relative volume difference, best at 0).

    Dice-like fractions and throughput are better higher; losses, distances (HD95, mm), times
    and memory are better lower.
    """
    last = name.rsplit("/", 1)[-1]
    if last.startswith(_FRACTIONS) or last in _PERF_HIGHER:
        return "max"
    if last.startswith("rvd"):
        return None
    if last == "loss" or last.startswith(("hd95", "lesion_hd95")) or name.startswith(f"{PERF}/"):
        return "min"
    return None


def value_range(name: str) -> tuple[float, float]:
    """The values a metric can take, so an interval of its mean can be cut to them.

    ``[0, 1]`` for Dice-like fractions (``val/dice_mean``, ``test/lesion_dice_wt``...),
    ``[0, inf)`` for distances (HD95, in mm) and ``perf/`` figures, ``[-1, inf)`` for the
    relative volume difference, and no bound otherwise (a loss may be any real number).
    """
    last = name.rsplit("/", 1)[-1]
    if last.startswith(_FRACTIONS):
        return 0.0, 1.0
    if last.startswith(("hd95", "lesion_hd95")) or name.startswith(f"{PERF}/"):
        return 0.0, math.inf
    if last.startswith("rvd"):
        return -1.0, math.inf
    return -math.inf, math.inf
