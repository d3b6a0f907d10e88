"""Sweep-level rules of a planned search space: what no single trial config can see.

Each check adds its problems (``key path: why``) to the planner's collector, so every problem of
a space file is reported at once by ``ablate validate`` and ``ablate sweep`` before Ray starts.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from orchestrator.space import SpaceFile
from orchestrator.space_search import AshaScheduler
from trainables.config.base import did_you_mean

if TYPE_CHECKING:
    from orchestrator.expand import Cell


class Problems(Protocol):
    """Where checks record problems (the planner's deduplicating collector)."""

    def add(self, line: str) -> None: ...


def check_unique(cells: list[Cell], errors: Problems) -> None:
    labels = [c.label for c in cells]
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        errors.add(f"cell labels collide: {', '.join(repeated)} (make the axis values distinct)")


def check_seed_overrides(cells: Iterable[Cell], errors: Problems) -> None:
    for cell in cells:
        if "seed" in cell.overrides:
            where = cell.origins["seed"]
            errors.add(f"{where}: the trial seed is set by 'seeds:' (repeat i uses seed i)")


def check_paper(space: SpaceFile, cells: list[Cell], errors: Problems) -> None:
    """Paper numbers must be keyed by a cell or variant label and name a metric the trials log
    (per epoch, or ``test/...`` once on the test cases, for numbers a paper measured on test
    cases), so they land in a table row."""
    if space.paper is None:
        return
    from trainables.metrics.names import known_metrics, test_metrics

    known = list(dict.fromkeys([c.variant for c in cells if c.variant] + [c.label for c in cells]))
    metrics = [*known_metrics(), *test_metrics()]
    for key, numbers in space.paper.reported.items():
        if key not in known:
            suggestion = did_you_mean(key, known)
            listed = "; ".join(known[:8]) + ("; ..." if len(known) > 8 else "")
            errors.add(
                f"paper.reported.{key}: not a cell or variant label{suggestion}; labels: {listed}"
            )
        for metric in numbers:  # a name no column shows would leave the paper column empty
            if metric not in metrics:
                errors.add(
                    f"paper.reported.{key}.{metric}: not a metric the trials log"
                    f"{did_you_mean(metric, metrics)}"
                )


def check_synthetic_axes(
    cells: list[Cell], configs: dict[str, dict[str, Any]], errors: Problems
) -> None:
    """With ``data.root`` set (``--data DIR``) ``data.synthetic`` is not read, so an axis over
    it would give cells that differ only in their names, ranked as if they differed."""
    for cell in cells:
        root = ((configs.get(cell.label) or {}).get("data") or {}).get("root")
        paths = [  # leaves: a nested data: {synthetic: ...} override is the same axis
            p
            for p in sorted(_leaf_paths(cell.overrides))
            if p == "data.synthetic" or p.startswith("data.synthetic.")
        ]
        if root and paths:
            where = next((cell.origins[k] for k in cell.origins if _overlap(k, paths[0])), "")
            errors.add(
                f"{where or paths[0]}: has no effect: the trials read the cases in {root} "
                "(data.root, or --data), not synthetic ones; drop the axis or run without --data"
            )
            return


def check_init_checkpoints(configs: dict[str, dict[str, Any]], errors: Problems) -> None:
    """A warm start's ``train.init.checkpoint`` must be a file here (``--smoke`` drops the warm
    start, so a smoke sweep cannot show a wrong path, and every full trial would fail on it)."""
    for label, config in configs.items():
        init = (config.get("train") or {}).get("init") or {}
        path = init.get("checkpoint")
        if path and not Path(path).is_file():
            errors.add(f"train.init.checkpoint: {path} is not a file (cell {label!r})")
            return


def check_stop_epochs(
    space: SpaceFile, configs: dict[str, dict[str, Any]], errors: Problems
) -> None:
    """A ``stop:`` on epochs below a cell's ``train.epochs`` ends its trials early, every time,
    after a learning-rate schedule planned over ``train.epochs`` (as ASHA's max_t would)."""
    for key in ("epoch", "training_iteration"):  # one Tune iteration is one epoch
        if key not in space.stop:
            continue
        for label, config in configs.items():
            epochs = int(config["train"]["epochs"])
            if space.stop[key] < epochs:
                errors.add(
                    f"stop.{key}: {space.stop[key]:g} ends every trial of cell {label!r} before "
                    f"its train.epochs ({epochs}), with its schedule unfinished; set train.epochs "
                    "instead"
                )
                return


def check_asha(space: SpaceFile, configs: dict[str, dict[str, Any]], errors: Problems) -> None:
    """ASHA's rungs must lie within every trial's epochs (a trial ends at its ``train.epochs``)."""
    asha = space.effective_scheduler
    if not isinstance(asha, AshaScheduler) or not configs:
        return
    epochs = {label: int(c["train"]["epochs"]) for label, c in configs.items()}
    first = next(iter(epochs.values()))
    if len(set(epochs.values())) > 1:  # no max_t fits them all: advice on max_t would mislead
        shown = ", ".join(f"{label!r} {n}" for label, n in epochs.items())
        errors.add(
            f"scheduler: ASHA needs every trial to train max_t epochs, but the cells train "
            f"different train.epochs ({shown}): use scheduler: {{kind: fifo}}, or one sweep per "
            "number of epochs"
        )
        return
    max_t = asha.max_t or first
    if max_t > first:
        errors.add(
            f"scheduler.max_t: {max_t} exceeds train.epochs ({first}): trials end before "
            f"ASHA's last rung; set scheduler.max_t to {first} (or leave it out)"
        )
    elif max_t < first:
        errors.add(
            f"scheduler.max_t: {max_t} is less than train.epochs ({first}): ASHA would stop "
            "every trial at epoch max_t, so none would finish or be tested; set "
            f"scheduler.max_t to {first} (or leave it out)"
        )
    if asha.max_t is None and asha.grace_period >= first:
        errors.add(
            f"scheduler.grace_period: {asha.grace_period} must be less than train.epochs "
            f"({first}), ASHA's default max_t: no trial could be stopped early"
        )


def check_data_dir(root: Path, label_scheme: str, joined: bool, where: str = "--data") -> list[str]:
    """What a sweep's dataset directory (``--data``) holds, read on the driver before any trial.

    Lists files only (nothing is decoded), so a wrong path or layout, a case lacking a
    modality or a case without labels is reported once, up front, instead of by every trial.

    Returns:
        Lines for the console: the cases found, the unlabelled ones, each case's problem.

    Raises:
        InputError: naming ``--data`` when running here and the directory is missing, empty, of
            no known layout, or has no labelled case. When joining a cluster a directory this
            machine lacks is only noted (the workers may mount it where the driver does not).
    """
    from trainables.data.layouts import discover
    from trainables.errors import InputError

    if joined and not root.is_dir():
        return [f"data: {root} is not on this machine; the trials will read it on the workers"]
    try:
        index = discover(root, label_scheme)
    except InputError as err:
        raise InputError(str(err), where=where) from err
    labelled = [case.case_id for case in index.cases if case.label is not None]
    unlabelled = [case.case_id for case in index.cases if case.label is None]
    if not labelled:
        raise InputError(
            f"{root}: none of its {len(index.cases)} usable cases has a label file, and training "
            "needs labels",
            where=where,
        )
    lines = [f"data: {len(labelled)} labelled cases in {root} ({index.layout} layout)"]
    if unlabelled:
        lines.append(f"data: {len(unlabelled)} without a label left out: {', '.join(unlabelled)}")
    if index.problems:
        lines.append(f"data: {len(index.problems)} case(s) left out:")
        lines += [f"  {problem}" for problem in index.problems]
    return lines


def check_axis_overlap(space: SpaceFile, errors: Problems) -> None:
    """A path set by two axes: the later one silently replaces the earlier in every cell (grid
    over variant, sampled value over both), so cells labelled apart would train alike. A path
    overlaps another it contains (a sampled ``optimizer`` mapping beside a variant's
    ``optimizer.lr``); a grid or variant mapping over a section counts only its values' leaves.
    """
    grid = _grid_leaves(space.grid or {})
    variant_paths = [(i, _leaf_paths(v.overrides)) for i, v in enumerate(space.variants or [])]
    for path in space.sample:
        for other in (*grid, *(q for _, paths in variant_paths for q in paths)):
            if _overlap(path, other):
                where = "a grid axis" if other in grid else f"set by a variant ({other})"
                errors.add(
                    f"sample.{path}: also {where}; each trial's sampled value would replace it, "
                    "so the cells would not differ there; keep it in one place"
                )
                break
    for i, paths in variant_paths:
        for path in sorted(paths, key=lambda p: (-p.count("."), p)):  # the leaf, not its section
            leaf = next((g for g in grid if _overlap(path, g)), None)
            if leaf is not None:
                axis = grid[leaf]
                errors.add(
                    f"variants[{i}].overrides.{path}: also set by the grid axis {axis}, whose "
                    "values replace the variant's in every cell; set it in one of them"
                )
                break


def _grid_leaves(grid: dict[str, list[Any]]) -> dict[str, str]:
    """Each value a grid axis sets -> the axis: a mapping value is merged, so an axis over a
    section (``optimizer: [{kind: nadam}, {kind: radam}]``) sets only its values' leaves."""
    leaves: dict[str, str] = {}
    for axis, values in grid.items():
        mappings = [v for v in values if isinstance(v, dict) and v]
        paths = set().union(*(_leaf_paths(v, f"{axis}.") for v in mappings)) if mappings else set()
        if len(mappings) < len(values):
            paths.add(axis)
        leaves |= dict.fromkeys(paths, axis)
    return leaves


def _overlap(a: str, b: str) -> bool:
    """Whether dotted paths ``a`` and ``b`` set a common value (equal, or one holds the other)."""
    return a == b or a.startswith(f"{b}.") or b.startswith(f"{a}.")


def _leaf_paths(overrides: dict[str, Any], prefix: str = "") -> set[str]:
    """Dotted paths of the values an override mapping sets (nested sections flattened: a
    mapping is merged into its section, so it sets its leaves, not the section)."""
    paths: set[str] = set()
    for key, value in overrides.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            paths |= _leaf_paths(value, f"{path}.")
        else:
            paths.add(path)
    return paths


def check_metrics_computed(
    space: SpaceFile, configs: dict[str, dict[str, Any]], errors: Problems
) -> None:
    """Validation computes HD95, surface Dice, RVD, sensitivity and specificity only with
    ``validation.hd95`` on; ranked or stopped on, they would never be logged (no winner)."""
    off = [
        label for label, c in configs.items() if not (c.get("validation") or {}).get("hd95", True)
    ]
    if not off:
        return
    for key, where in [(space.metric, "metric"), *((k, f"stop.{k}") for k in space.stop)]:
        name = key.removeprefix("val/")
        if key == name or name == "loss" or name.startswith("dice"):
            continue  # not a validation metric, or one computed either way
        errors.add(
            f"{where}: {key} is never logged by cell {off[0]!r}: validation.hd95 is false "
            "there, and validation then computes Dice alone; set validation.hd95: true, or "
            "use a val/dice_... metric"
        )
        return


def check_metric_regions(
    space: SpaceFile, configs: dict[str, dict[str, Any]], errors: Problems
) -> None:
    """A per-region metric must name a region the trials' labels have (``val/dice_fg`` exists
    for binary CT labels only, ``val/dice_wt`` for BraTS ones), or no trial ever logs it."""
    from trainables.metrics.names import REGIONS

    region = space.metric.rsplit("_", 1)[-1]
    if region not in REGIONS:
        return

    found: dict[str, tuple[str, ...] | None] = {}  # per data config: cells mostly share one
    for label, config in configs.items():
        data = config.get("data") or {}
        key = json.dumps(data, sort_keys=True)
        if key not in found:  # a dataset directory is listed once, not once per cell
            found[key] = _config_regions(data)
        regions = found[key]
        if regions is not None and region not in regions:
            errors.add(
                f"metric: {space.metric} is never logged by cell {label!r}: its labels give "
                f"the regions {', '.join(regions)} (e.g. {space.metric.rsplit('_', 1)[0]}_"
                f"{regions[0]})"
            )
            return


def _config_regions(data: dict[str, Any]) -> tuple[str, ...] | None:
    """The regions a data config's labels are evaluated as; None when only the data can say
    (``label_scheme: auto`` over a dataset directory that is not readable here)."""
    from trainables.metrics.names import regions_for

    scheme = data.get("label_scheme", "auto")
    if scheme != "auto":
        return regions_for(scheme)
    if not data.get("root"):  # synthetic cases: CT ones are binary
        synthetic = data.get("synthetic") or {}
        return regions_for("binary" if synthetic.get("modality") == "ct" else "brats2021")
    from trainables.data.layouts import discover
    from trainables.errors import InputError

    try:
        found = discover(data["root"]).label_scheme
    except (InputError, OSError):
        return None
    return regions_for(found) if found else None
