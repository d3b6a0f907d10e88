"""Expand a search-space file into validated trials, before Ray starts.

Every trial (cell x seed) is materialised as a full trial config and validated with the engine's
:func:`parse_trial_config`; every sampled range is checked at its bounds (or each choice). All
problems are collected into one :class:`InputError` naming the space file, the key path inside
it (``grid.model.norm``, ``variants[1].overrides.model.attention``) and the reason.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.checks import (
    check_asha,
    check_axis_overlap,
    check_init_checkpoints,
    check_metric_regions,
    check_metrics_computed,
    check_paper,
    check_seed_overrides,
    check_stop_epochs,
    check_synthetic_axes,
    check_unique,
)
from orchestrator.checks_device import (
    check_device,
    check_distinct_cells,
    check_metric_on_device,
    check_precision_sample,
)
from orchestrator.checks_sample import check_sample_paths, check_samples
from orchestrator.checks_split import check_same_split
from orchestrator.folds import check_fold_count, count_cases, fold_splits
from orchestrator.plan_errors import PlanErrors
from orchestrator.space import MAX_TRIALS, Resources, SpaceFile, load_space_file
from orchestrator.space_search import AshaScheduler
from trainables.config.dotted import (
    apply_overrides,
    format_value,
    set_dotted,
)
from trainables.errors import InputError


@dataclass(frozen=True)
class Cell:
    """One row of the results table: a set of overrides, run once per seed.

    Attributes:
        label: unique, human-readable (``no-attention,deep_supervision=2``).
        overrides: dotted path -> value, variant first, then grid.
        origins: dotted path -> where it was written in the space file.
        variant: the variant label, if the space has variants.
    """

    label: str
    overrides: dict[str, Any]
    origins: dict[str, str]
    variant: str | None = None


@dataclass(frozen=True)
class PlannedTrial:
    """One trial of a grid sweep: a cell at one seed (and fold), validated.

    Attributes:
        key: ``<cell>/seed<i>``, or ``<cell>/fold<k>/seed<i>`` with folds; unique in the sweep
            and stable across resumes.
        config: the resolved trial config as a JSON-ready dict (smoke shrinking applied).
        fold: the cross-validation fold, or None without ``folds:``.
    """

    key: str
    cell: str
    seed: int
    overrides: dict[str, Any]
    config: dict[str, Any]
    fold: int | None = None


@dataclass(frozen=True)
class Plan:
    """A validated sweep: the space file, its base config, cells and (grid search) trials.

    Attributes:
        base: the base trial config as a dict (``extends`` + ``base``), before cell overrides.
        cell_configs: cell label -> resolved config dict at seed 0 (every default filled in).
        cell_sources: Optuna only: cell label -> the config as written (base and the cell's
            overrides, paths absolute, no defaults filled in), what a sample is applied onto,
            as the grid's overrides are: a sampled kind then takes its own defaults, not the
            old kind's.
        trials: every cell x seed for grid search; empty for Optuna (trials are suggested).
    """

    space: SpaceFile
    source: Path
    space_hash: str
    base: dict[str, Any]
    cells: list[Cell]
    cell_configs: dict[str, dict[str, Any]]
    trials: list[PlannedTrial] = field(default_factory=list)
    smoke: bool = False
    cell_sources: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.space.name

    @property
    def epochs(self) -> int:
        """``train.epochs`` of the first cell (ASHA's default ``max_t``)."""
        return int(next(iter(self.cell_configs.values()))["train"]["epochs"])


def plan_sweep(
    path: str | Path,
    data_root: Path | None = None,
    smoke: bool = False,
    max_trials: int = MAX_TRIALS,
) -> Plan:
    """Load ``path`` and materialise every trial; raise one InputError listing all problems.

    Args:
        path: the space file.
        data_root: dataset directory for every trial (``--data``); None keeps the configs'.
        smoke: shrink every trial with the engine's ``smoke_config`` (``--smoke``).
        max_trials: refuse a study planning more trials than this (``--max-trials``).
    """
    source = Path(path).resolve()
    space, digest = load_space_file(source)
    written_gpu = space.resources.gpu
    if smoke:
        space = smoke_space(space)
    base = _base_config(space, source)
    check_trial_count(space, cell_count(space), max_trials, source)  # before building cells
    cells = make_cells(space)
    errors = PlanErrors()
    check_unique(cells, errors)
    check_seed_overrides(cells, errors)
    check_paper(space, cells, errors)
    check_axis_overlap(space, errors)
    cell_configs: dict[str, dict[str, Any]] = {}
    trials: list[PlannedTrial] = []
    for cell in cells:
        cell_trials = _cell_trials(space, base, cell, errors, data_root, smoke)
        if cell_trials:
            cell_configs[cell.label] = cell_trials[0].config
            trials += cell_trials if space.is_grid else []
    sources = _cell_sources(space, base, cells, data_root) if not space.is_grid else {}
    if space.sample and cell_configs:
        check_sample_paths(space, cell_configs, errors)
        if not errors.lines:  # values only once the paths are ones a sample may vary
            check_samples(space, {k: v for k, v in sources.items() if k in cell_configs}, errors)
    if not smoke:  # --smoke on a CPU sets resources.gpu 0 on purpose: a plumbing check
        check_precision_sample(space, cell_configs, errors)
    check_synthetic_axes(cells, cell_configs, errors)
    # --smoke shrinks sizes, so cells that differ only in size look alike; after another error
    # (a grid over seed, say) the cells may look alike for that reason alone
    if not smoke and not errors.lines:
        check_distinct_cells(cell_configs, errors, on_cpu=space.resources.gpu <= 0)
    check_same_split(cell_configs, errors)
    check_metric_on_device(space, written_gpu, cell_configs, errors)
    check_metric_regions(space, cell_configs, errors)
    check_metrics_computed(space, cell_configs, errors)
    check_device(space, cell_configs, errors)
    check_asha(space, cell_configs, errors)
    check_stop_epochs(space, cell_configs, errors)
    check_init_checkpoints(cell_configs, errors)
    errors.raise_if_any(source)
    return Plan(space, source, digest, base, cells, cell_configs, trials, smoke, sources)


def check_trial_count(space: SpaceFile, cells: int, max_trials: int, source: Path) -> None:
    """Refuse a study of more than ``max_trials`` trials before any is built: a grid that large
    is mostly a mistake (one axis too many), and Tune spends minutes scheduling it before the
    first trial starts, deaf to Ctrl-C meanwhile."""
    if space.is_grid:
        trials = cells * space.seeds * (space.folds or 1)
        shape = f"{cells} cells" + (f" x {space.folds} folds" if space.folds else "")
    else:
        trials = space.search.num_samples * space.seeds
        shape = f"{space.search.num_samples} samples"
    if trials > max_trials:
        raise InputError(
            f"the study plans {trials} trials ({shape} x {space.seeds} seeds), more than "
            f"--max-trials {max_trials}; check the axes, or pass --max-trials {trials} to run "
            "it as written",
            source,
        )


def smoke_space(space: SpaceFile) -> SpaceFile:
    """``--smoke`` checks a study on the machine at hand: one seed per cell, one CPU per trial,
    and a GPU only where one is visible (a GPU study still smoke-tests on a laptop)."""
    import torch

    gpu = min(space.resources.gpu, 1.0) if torch.cuda.is_available() else 0.0
    update: dict[str, Any] = {"seeds": 1, "resources": Resources(cpu=1.0, gpu=gpu)}
    if isinstance(space.scheduler, AshaScheduler):  # rungs must fit the shrunk epochs
        update["scheduler"] = AshaScheduler(reduction_factor=space.scheduler.reduction_factor)
    return space.model_copy(update=update)


def _cell_trials(
    space: SpaceFile,
    base: dict[str, Any],
    cell: Cell,
    errors: PlanErrors,
    data_root: Path | None,
    smoke: bool,
) -> list[PlannedTrial]:
    """The cell at every fold and seed (Optuna: seed 0 only, the rest is Tune's); [] after an
    error (the same error at every seed is reported once)."""
    first = _trial_config(base, {**cell.overrides, "seed": 0}, cell, errors, data_root, smoke)
    folds = _fold_overrides(space, cell, first, errors, smoke) if first is not None else None
    if folds is None:
        return []
    trials = []
    for fold, fold_overrides in folds:
        for seed in range(space.seeds if space.is_grid else 1):
            overrides = {**cell.overrides, **fold_overrides, "seed": seed}
            config = _trial_config(base, overrides, cell, errors, data_root, smoke)
            if config is None:
                return []
            where = f"fold{fold}/" if fold is not None else ""
            key = f"{cell.label}/{where}seed{seed}"
            trials.append(PlannedTrial(key, cell.label, seed, overrides, config, fold))
    return trials


def _fold_overrides(
    space: SpaceFile, cell: Cell, config: dict[str, Any], errors: PlanErrors, smoke: bool = False
) -> list[tuple[int | None, dict[str, Any]]] | None:
    """``(fold, {"data.split": ...})`` per fold of ``folds:`` (one ``(None, {})`` without it),
    from the cell's resolved config; None after recording a problem."""
    if space.folds is None:
        return [(None, {})]
    from trainables.config.trial import parse_trial_config

    split_keys = [p for p in cell.overrides if p == "data.split" or p.startswith("data.split.")]
    if split_keys:
        where = cell.origins[split_keys[0]]
        errors.add(f"{where}: the split is set by 'folds: {space.folds}' (each fold is a repeat)")
        return None
    cfg = parse_trial_config(config)
    try:
        splits = fold_splits(cfg.data.split, space.folds)
    except ValueError as err:
        errors.add(str(err))
        return None
    cases = count_cases(cfg.data.root, cfg.data.synthetic.cases, cfg.data.label_scheme)
    problem = check_fold_count(space.folds, cases, cfg.data.split)
    if problem:
        shrunk = smoke and not cfg.data.root  # --smoke generates fewer synthetic cases
        errors.add(problem + (" (--smoke generates fewer synthetic cases)" if shrunk else ""))
        return None
    return [(k, {"data.split": s.model_dump(mode="json")}) for k, s in enumerate(splits)]


def cell_count(space: SpaceFile) -> int:
    """How many cells :func:`make_cells` gives, without building them (a 7-axis grid of 10
    values is 10^7 cells: built first, it ran out of memory before the trial cap refused it)."""
    points = math.prod(len(values) for values in (space.grid or {}).values())
    return max(1, len(space.variants or [])) * points


def make_cells(space: SpaceFile) -> list[Cell]:
    """Variants x grid points, in file order; one ``base`` cell when the space has neither."""
    variants = space.variants or []
    rows = [(v.label, v.overrides, f"variants[{i}].overrides") for i, v in enumerate(variants)]
    grid = space.grid or {}
    names = _axis_names(list(grid))
    points = list(itertools.product(*grid.values())) if grid else [()]
    cells = []
    for label, overrides, origin in rows or [(None, {}, "")]:
        for point in points:
            values = dict(zip(grid, point, strict=True))
            parts = [label] if label else []
            parts += [f"{names[p]}={format_value(v)}" for p, v in values.items()]
            origins = {p: f"{origin}.{p}" for p in overrides} | {p: f"grid.{p}" for p in values}
            cells.append(Cell(",".join(parts) or "base", {**overrides, **values}, origins, label))
    return cells


def _axis_names(paths: list[str]) -> dict[str, str]:
    """Last dotted component as the label name, the full path where two axes share it."""
    last = [p.rsplit(".", 1)[-1] for p in paths]
    pairs = zip(paths, last, strict=True)
    return {p: (short if last.count(short) == 1 else p) for p, short in pairs}


def _base_config(space: SpaceFile, source: Path) -> dict[str, Any]:
    """The ``extends`` trial file (validated on its own) with the inline ``base`` applied."""
    from trainables.config.trial import load_yaml, parse_trial_config

    data: dict[str, Any] = {}
    if space.extends is not None:
        trial_path = (source.parent / space.extends).resolve()
        if not str(space.extends).strip() or trial_path.is_dir():
            raise InputError(
                f"extends: {space.extends!r} names a folder, not a trial YAML such as "
                "base/tiny.yaml",
                source,
            )
        if not trial_path.is_file():
            raise InputError(f"extends: trial file {trial_path} not found", source)
        raw = load_yaml(trial_path)
        if raw is None:  # parse_trial_config would say "got NoneType"
            raise InputError("is empty: a trial config maps model:, data:, train:...", trial_path)
        if isinstance(raw, dict) and "extends" in raw:  # itself, or another study file
            raise InputError(
                f"extends: {space.extends} is a study file, not a trial config; extends names "
                "a trial YAML such as base/tiny.yaml",
                source,
            )
        parse_trial_config(raw, source=trial_path)  # errors name the trial file itself
        data = raw
    try:
        data = apply_overrides(data, space.base)
    except ValueError as err:
        raise InputError(f"base: {err}", source) from None
    errors = PlanErrors()
    origins = {path: f"base.{path}" for path in space.base}
    errors.check(data, origins, context="base config")
    errors.raise_if_any(source)
    return data


def _trial_config(
    base: dict[str, Any],
    overrides: dict[str, Any],
    cell: Cell,
    errors: PlanErrors,
    data_root: Path | None,
    smoke: bool,
) -> dict[str, Any] | None:
    """The resolved config dict of one trial, or None after recording its problems."""
    from trainables.engine.smoke import smoke_config

    try:
        data = apply_overrides(base, overrides)
    except ValueError as err:
        errors.add(f"cell {cell.label!r}: {err}")
        return None
    if data_root is not None:
        set_dotted(data, "data.root", str(data_root))
    cfg = errors.check(data, cell.origins, context=f"cell {cell.label!r}")
    if cfg is None:
        return None
    if smoke:
        cfg = smoke_config(cfg)
    return absolute_paths(cfg.model_dump(mode="json"))


def _cell_sources(
    space: SpaceFile, base: dict[str, Any], cells: list[Cell], data_root: Path | None
) -> dict[str, dict[str, Any]]:
    """Each cell's config as written at seed 0 (see :attr:`Plan.cell_sources`); cells whose
    overrides do not apply are left out (their error is already recorded)."""
    sources = {}
    for cell in cells:
        try:
            data = apply_overrides(base, {**cell.overrides, "seed": 0})
        except ValueError:
            continue
        if data_root is not None:
            set_dotted(data, "data.root", str(data_root))
        sources[cell.label] = absolute_paths(data)
    return sources


def absolute_paths(config: dict[str, Any]) -> dict[str, Any]:
    """Resolve the config's file paths against the working directory (Ray changes a trial's).

    ``data.cache_dir`` is filled in from the driver's environment so every worker shares the
    driver's cache.
    """
    from trainables.data.cache import default_cache_root

    out = apply_overrides(config, {})
    data = out.setdefault("data", {})
    for key in ("root", "cache_dir"):
        if data.get(key):
            data[key] = str(Path(data[key]).expanduser().resolve())
    if not data.get("cache_dir"):
        data["cache_dir"] = str(Path(default_cache_root()).expanduser().resolve())
    init = out.get("train", {}).get("init")
    if init and init.get("checkpoint"):
        init["checkpoint"] = str(Path(init["checkpoint"]).expanduser().resolve())
    return out
