"""Rules for a search space's ``sample:`` axes (Optuna): the paths it may sample, and every
sampled value, alone and in combination, valid in every cell the way a worker applies it
(onto the cell's resolved trial config, :func:`trainables.trainable.trial_identity`)."""

from __future__ import annotations

import itertools
import math
from typing import TYPE_CHECKING, Any

from orchestrator.checks_split import SYNTHETIC_CASE_FIELDS
from orchestrator.space import SpaceFile
from trainables.config.dotted import apply_overrides, format_value
from trainables.config.trial import parse_trial_config
from trainables.errors import InputError

if TYPE_CHECKING:
    from orchestrator.checks import Problems
    from orchestrator.plan_errors import PlanErrors

# Combinations of sampled values probed together; beyond it, only the range ends are combined.
MAX_SAMPLE_COMBINATIONS = 4096
# Paths whose value decides which cases a trial splits (see checks_split.check_same_split); the
# synthetic shape is not among them: the same seed gives the same heads at another sampling.
SPLIT_PATHS = ("data.root", "data.split", *(f"data.synthetic.{f}" for f in SYNTHETIC_CASE_FIELDS))


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(f"{prefix}.")


def check_sample_paths(
    space: SpaceFile, configs: dict[str, dict[str, Any]], errors: Problems
) -> None:
    """Paths a sample may not vary: the seed (set by ``seeds:``; a sampled one was overwritten
    and still named in the label), the cases split (sampled trials could never be ranked on
    one split), and ``data.synthetic`` when the trials read a dataset (no effect)."""
    rooted = any(((c.get("data") or {}).get("root")) for c in configs.values())
    for path in space.sample:
        if _under(path, "seed"):
            errors.add(f"sample.{path}: the trial seed is set by 'seeds:' (repeat i uses seed i)")
        elif rooted and _under(path, "data.synthetic"):
            errors.add(
                f"sample.{path}: has no effect: the trials read a dataset (data.root, or --data), "
                "not synthetic cases; drop the axis or run without --data"
            )
        elif path == "data.synthetic" or any(_under(path, p) for p in SPLIT_PATHS):
            errors.add(
                f"sample.{path}: sampled trials would split different cases, and `ablate "
                "winners` ranks trials on one split with the same test cases; vary the data in "
                "separate sweeps"
            )


def check_samples(space: SpaceFile, configs: dict[str, dict[str, Any]], errors: PlanErrors) -> None:
    """Every sampled path, at each bound or choice, must give a valid trial in every cell;
    then every combination of them (once each axis is valid on its own)."""
    for label, config in configs.items():
        before = len(errors.lines)
        for path, rng in space.sample.items():
            for value in rng.probe_values():
                value = int(value) if rng.form == "int" else value
                try:
                    data = apply_overrides(config, {path: value})
                except ValueError as err:
                    errors.add(f"sample.{path}: {err}")
                    break
                cell = _in_cell(configs, label)
                where = f"sample.{path}={format_value(value)}{cell}"
                origin = f"sample.{path}{cell}{_drawn(rng, value)}"
                if errors.check(data, {path: origin}, context=where) is None:
                    break
        if len(errors.lines) > before:
            return  # one cell's problems say it; the next cells would mostly repeat them
    for label, config in configs.items():
        if not check_sample_combinations(space, config, errors, _in_cell(configs, label)):
            return


def _drawn(rng: Any, value: Any) -> str:
    """Where a probe value between a continuous range's bounds comes from: 2.113 is no value
    the file writes (a ``uniform`` range over ``train.batch_size`` wants ``int:``)."""
    if rng.form == "int" or value in rng.written_values():
        return ""
    low, high = (format_value(v) for v in rng.written_values())
    drawn = format_value(value)
    return f" ({rng.form} draws values such as {drawn}; int: [{low}, {high}] draws whole numbers)"


def _in_cell(configs: dict[str, Any], label: str) -> str:
    return f" (cell {label!r})" if len(configs) > 1 else ""


def check_sample_combinations(
    space: SpaceFile, config: dict[str, Any], errors: Problems, where: str = ""
) -> bool:
    """Sampled values must give a valid trial together, not only one axis at a time: a cosine's
    ``schedule.min_lr`` sampled above a sampled ``optimizer.lr`` is invalid, and would fail that
    Optuna trial instead of this check. Probes every combination of each axis's probe values
    (ends only when there are too many); reports the first invalid one, returning False."""
    paths = list(space.sample)
    if len(paths) < 2:
        return True  # one axis at a time is already probed
    values = [space.sample[p].probe_values() for p in paths]
    if math.prod(len(v) for v in values) > MAX_SAMPLE_COMBINATIONS:
        values = [[v[0], v[-1]] if len(v) > 1 else v for v in values]
    forms = [space.sample[p].form for p in paths]
    for combo in itertools.product(*values):
        picked = {
            p: int(v) if form == "int" else v
            for p, form, v in zip(paths, forms, combo, strict=True)
        }
        try:
            parse_trial_config(apply_overrides(config, picked))
        except (InputError, ValueError) as err:
            shown = ", ".join(f"{p}={format_value(v)}" for p, v in picked.items())
            problems = err.problems if isinstance(err, InputError) else None
            why = "; ".join(f"{q.path}: {q.message}" for q in problems) if problems else err
            errors.add(
                f"sample: {shown} together give an invalid trial{where}: {why}; every "
                "combination of the sampled ranges must be valid (narrow the ranges)"
            )
            return False
    return True
