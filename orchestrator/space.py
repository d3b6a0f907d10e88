"""Search-space files: one YAML file per ablation study.

A space file names a base trial config and the axes that vary it, each keyed by a dotted path
into the trial config (``model.deep_supervision``)::

    name: fmnet_ds                      # sweep name: Tune experiment, MLflow experiment
    extends: base/fmnet.yaml            # a trial YAML, relative to this file (optional)
    base: {train.epochs: 100}           # inline trial settings on top of it (optional)
    grid: {model.deep_supervision: [0, 1, 2, 3]}          # full factorial
    variants:                           # explicit rows (paper tables are lists of rows)
      - {label: no-attention, overrides: {model.attention: false}}
    sample: {optimizer.lr: {loguniform: [1.0e-4, 1.0e-2]}}  # Optuna ranges
    seeds: 3                            # repeats per cell; repeat i trains with seed i
    folds: 5                            # optional: each cell x seed on each of 5 folds (grid only)
    search: {kind: grid}                # or {kind: optuna, num_samples: 20}
    scheduler: {kind: fifo}             # or {kind: asha, grace_period, reduction_factor, max_t}
    metric: val/dice_mean
    mode: max
    resources: {cpu: 2, gpu: 0.5}
    stop: {time_total_s: 3600}
    max_failures: 1
    paper: {citation: "...", reported: {no-attention: {val/dice_mean: 0.81}}}

Cells are the product of the variants (or one row without them) and the grid points (or one
point without a grid); each cell runs ``seeds`` times, on each of ``folds`` cross-validation folds
when given (:mod:`orchestrator.folds`). Override values are set at their dotted
path by :func:`trainables.config.dotted.set_dotted`: a mapping value is merged into the section
already there; a new ``kind`` keeps only the settings both kinds share
(:mod:`trainables.config.kinds`), and kind switches are applied before the other overrides.

This module holds the file model (its search and scheduler parts in
:mod:`orchestrator.space_search`); :mod:`orchestrator.expand` turns it into validated trials.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any, Literal, assert_never

from pydantic import Field, field_validator, model_validator

from orchestrator.space_search import (
    AshaScheduler,
    FifoScheduler,
    GridSearch,
    OptunaSearch,
    SampleRange,
    Scheduler,
    Search,
)
from trainables.config import Frozen, validate_config
from trainables.config.base import did_you_mean
from trainables.config.dotted import format_value
from trainables.errors import InputError
from trainables.metrics import METRIC_NAMES
from trainables.metrics.names import REGIONS, better_mode, known_metrics

KNOWN_METRICS: tuple[str, ...] = known_metrics()
# What ``stop:`` may name: Tune's own counters, the trial's epoch and every logged metric. Tune
# stops a trial at the first result where any of them reaches its value.
STOP_KEYS: tuple[str, ...] = ("training_iteration", "time_total_s", "epoch", *KNOWN_METRICS)


class Resources(Frozen):
    """Per-trial Ray resources; a fractional ``gpu`` packs several trials on one GPU."""

    cpu: float = Field(default=1.0, gt=0)
    gpu: float = Field(default=0.0, ge=0)


class Variant(Frozen):
    """One labelled row of a paper table: a set of dotted-path overrides."""

    label: str = Field(min_length=1)
    overrides: dict[str, Any] = Field(default_factory=dict)

    @field_validator("label")
    @classmethod
    def _label_chars(cls, label: str) -> str:
        if not re.fullmatch(VARIANT_LABEL, label):  # it names MLflow runs and table rows
            raise ValueError(
                f"{label!r} may not hold '/', '|' or '#' nor start with a space (it names the "
                "cell's runs and its row)"
            )
        return label


class Paper(Frozen):
    """The study's source and its reported numbers, keyed by variant label or cell label."""

    citation: str
    reported: dict[str, dict[str, float]] = Field(default_factory=dict)

    @field_validator("reported")
    @classmethod
    def _fractions_as_fractions(cls, reported: dict[str, dict[str, float]]) -> dict:
        for label, numbers in reported.items():
            for metric, value in numbers.items():  # Dice and the like are 0..1 in the tables
                if better_mode(metric) == "max" and not metric.startswith("perf/") and value > 1:
                    raise ValueError(
                        f"{label}.{metric}: {value:g} is above 1, a percentage? the table "
                        f"compares fractions: write {value / 100:g}"
                    )
        return reported


# A sweep name is a folder under the Tune storage and an MLflow experiment name.
SWEEP_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
SWEEP_NAME_RULE = (
    "{name!r} must start with a letter or digit and hold only letters, digits, '_', '.' and "
    "'-' (it names a folder and an MLflow experiment)"
)
VARIANT_LABEL = r"^[^/|#\s][^/|#]*$"
# Trials a study may plan unless --max-trials says more (a large nnU-Net-style ablation, 20
# cells x 5 folds x 3 seeds, is 300).
MAX_TRIALS = 1000


class SpaceFile(Frozen):
    """The search-space file as written (see the module docstring)."""

    name: str

    @field_validator("name")
    @classmethod
    def _name_chars(cls, name: str) -> str:
        if not re.fullmatch(SWEEP_NAME, name):
            raise ValueError(SWEEP_NAME_RULE.format(name=name))
        return name

    description: str = ""
    extends: str | None = None
    base: dict[str, Any] = Field(default_factory=dict)
    grid: dict[str, list[Any]] | None = None
    variants: list[Variant] | None = None
    sample: dict[str, SampleRange] = Field(default_factory=dict)
    seeds: int = Field(default=1, ge=1, strict=True)  # `seeds: true` is no count
    folds: int | None = Field(default=None, ge=2, strict=True)
    search: Search = GridSearch()
    scheduler: Scheduler | None = None
    metric: str = "val/dice_mean"
    mode: Literal["max", "min"] = "max"
    resources: Resources = Resources()
    stop: dict[str, float] = Field(default_factory=dict)
    max_failures: int = Field(default=0, ge=0, strict=True)  # `true` is no count
    paper: Paper | None = None

    @field_validator("grid")
    @classmethod
    def _grid_axes(cls, grid: dict[str, list[Any]] | None) -> dict[str, list[Any]] | None:
        if grid is None:
            return None
        if not grid:
            raise ValueError("empty grid: name at least one dotted path and its values, or drop it")
        for path, values in grid.items():
            if not values:
                raise ValueError(f"grid axis {path!r} has no values (an axis needs at least one)")
            seen: dict[str, Any] = {}
            for value in values:
                first = seen.setdefault(_value_key(value), value)
                if first is value:
                    continue
                if first == value:  # 1 and 1.0 too: one config
                    raise ValueError(f"grid axis {path!r} repeats a value: {values}")
                raise ValueError(
                    f"grid axis {path!r}: {first!r} and {value!r} give one cell label "
                    f"({format_value(value)}; labels keep 4 significant digits): space them apart"
                )
        return grid

    @field_validator("variants")
    @classmethod
    def _unique_labels(cls, variants: list[Variant] | None) -> list[Variant] | None:
        if variants is None:
            return None
        if not variants:
            raise ValueError("empty variants: give at least one row, or remove it")
        labels = [v.label for v in variants]
        repeated = sorted({label for label in labels if labels.count(label) > 1})
        if repeated:
            raise ValueError(f"variant labels must be unique; repeated: {', '.join(repeated)}")
        return variants

    @field_validator("base")
    @classmethod
    def _base_leaves_seed(cls, base: dict[str, Any]) -> dict[str, Any]:
        if "seed" in base:
            raise ValueError(
                f"seed: {format_value(base['seed'])} would be replaced by 'seeds:' (repeat i "
                "trains with seed i); drop it"
            )
        return base

    @field_validator("stop")
    @classmethod
    def _known_stop_keys(cls, stop: dict[str, float]) -> dict[str, float]:
        for key, value in stop.items():
            if key not in STOP_KEYS:
                raise ValueError(
                    f"unknown stop criterion {key!r}{did_you_mean(key, STOP_KEYS)}; a trial stops "
                    "when a result reaches the value of time_total_s (seconds), "
                    "training_iteration or epoch, or of a logged metric (the names 'metric' takes)"
                )
            if key in ("training_iteration", "time_total_s", "epoch") and not value > 0:
                raise ValueError(f"{key}: {value:g} would stop every trial at its first result")
            if better_mode(key) == "min" and not key.startswith("perf/"):
                raise ValueError(
                    f"{key}: Tune stops a trial when a result reaches the value (>= {value:g}), "
                    "and a lower-is-better metric starts at its worst: every trial would stop "
                    "at its first epoch, or never; stop on a higher-is-better metric, epochs "
                    "or time instead"
                )
        return stop

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, metric: str) -> str:
        if metric not in KNOWN_METRICS:
            # The families, not all the names: the full list is too long for one line.
            hint = did_you_mean(metric, KNOWN_METRICS)
            raise ValueError(
                f"unknown metric {metric!r}{hint}; metrics are train/loss, val/loss, "
                f"val/dice_mean, val/<{'|'.join(METRIC_NAMES)}>_<{'|'.join(REGIONS)}>, perf/..."
            )
        return metric

    @model_validator(mode="after")
    def _mode_matches_metric(self) -> SpaceFile:
        better = better_mode(self.metric)
        if better is not None and better != self.mode:
            kind = "higher" if better == "max" else "lower"
            raise ValueError(
                f"mode: {self.mode} ranks the {'highest' if self.mode == 'max' else 'lowest'} "
                f"{self.metric} first, but {self.metric} is better {kind}: use mode: {better}"
            )
        return self

    @model_validator(mode="after")
    def _search_matches_sample(self) -> SpaceFile:
        if not self.is_grid and not self.sample:
            raise ValueError("search kind 'optuna' needs a 'sample' section with ranges to sample")
        if self.is_grid and self.sample:
            raise ValueError("'sample' ranges need search: {kind: optuna, num_samples: N}")
        if self.folds is not None and not self.is_grid:
            raise ValueError(
                f"folds: {self.folds} needs search: {{kind: grid}} (Optuna suggestions are "
                "repeated over seeds only)"
            )
        return self

    @property
    def is_grid(self) -> bool:
        """True for a grid search, False for Optuna; the one place that dispatches on its kind."""
        match self.search:
            case GridSearch():
                return True
            case OptunaSearch():
                return False
            case _:
                assert_never(self.search)

    @property
    def effective_scheduler(self) -> FifoScheduler | AshaScheduler:
        """The configured scheduler, else FIFO for grids and ASHA for searches."""
        if self.scheduler is not None:
            return self.scheduler
        return FifoScheduler() if self.is_grid else AshaScheduler()


def load_space_file(path: str | Path) -> tuple[SpaceFile, str]:
    """Read and validate a space file; return the model and the sha256 of its text."""
    from trainables.config.trial import load_yaml

    path = Path(path)
    data = load_yaml(path)
    if not isinstance(data, dict):
        kind = "an empty file" if data is None else type(data).__name__
        raise InputError(f"expected a mapping of search-space settings, got {kind}", path)
    space = validate_config(SpaceFile, data, path, kind="search space")
    return space, hashlib.sha256(path.read_bytes()).hexdigest()


def _value_key(value: Any) -> str:
    """A grid value's label text, by kind: ``1`` and ``1.0`` are one number (and one label)."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    return f"{'number' if number else type(value).__name__}:{format_value(value)}"
