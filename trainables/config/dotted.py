"""Dotted paths into nested config dicts: the one implementation every layer uses.

The planner (space-file overrides), the Ray Tune Trainable (Optuna samples), the command line
(``--data``, ``--device``, ``--epochs``) and ``--smoke`` all edit a trial config as plain
YAML-like data at a dotted path (``model.deep_supervision``) and label values with the same text,
so a grid cell and an Optuna sample with the same value read the same (``attention=false``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

_MISSING = object()


def set_dotted(data: dict[str, Any], path: str, value: Any, _at: tuple[str, ...] = ()) -> None:
    """Set ``value`` at dotted ``path`` in nested dicts, creating sections on the way.

    A mapping value is merged into the section already there. A new ``kind`` (a variant switch:
    ``optimizer: {kind: radam}``, or ``optimizer.kind: radam``) keeps the settings both kinds
    inherit from a common base (lr, weight decay: :mod:`trainables.config.kinds`) and drops the
    others, both spellings alike; a section whose kinds the trial config does not know is
    replaced.

    Raises:
        ValueError: the path has an empty component or runs through a non-section value.
    """
    parts = _split(path)
    node = _section(data, parts[:-1], path)
    leaf, at = parts[-1], (*_at, *parts)
    current = node.get(leaf)
    if isinstance(value, Mapping) and isinstance(current, dict):
        merged = _for_kind(current, value.get("kind"), at)
        for key, sub in value.items():
            set_dotted(merged, str(key), sub, at)
        node[leaf] = merged
    elif leaf == "kind" and value != node.get("kind"):  # optimizer.kind: radam
        kept = _for_kind(node, value, at[:-1])
        node.clear()
        node.update(kept)
    else:
        node[leaf] = plain(value)


def _section(data: dict[str, Any], parts: list[str], path: str) -> dict[str, Any]:
    """The section at ``parts`` in ``data``, created where missing (``path`` names errors)."""
    node = data
    for depth, part in enumerate(parts):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            where = ".".join(parts[: depth + 1])
            raise ValueError(f"{where} is a value ({child!r}), not a section: {path} cannot exist")
        node = child
    return node


def _for_kind(section: dict[str, Any], kind: Any, at: tuple[str, ...]) -> dict[str, Any]:
    """A copy of ``section`` (at path ``at``) holding what a switch to ``kind`` keeps: the
    settings both kinds share by definition (:mod:`trainables.config.kinds`)."""
    if kind is None or kind == section.get("kind"):
        return dict(section)
    from trainables.config.kinds import shared_fields  # the schema is read lazily: no cycle

    old = section.get("kind")
    fields = shared_fields(at, None if old is None else str(old), str(kind))
    kept = {k: v for k, v in section.items() if fields is not None and k in fields}
    return {**kept, "kind": plain(kind)}


def apply_overrides(data: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of ``data`` with every dotted override set (see :func:`set_dotted`).

    Kind switches go first, shallowest first: a cell's own settings of a section (a variant's
    ``schedule.min_lr``) then land in the kind the cell trains (a grid's ``schedule.kind:
    cosine``), and one the kind lacks is an unknown key there, not silently dropped.
    """
    _check_set_once(overrides)
    out = plain(data)
    for path, value in sorted(overrides.items(), key=_switches_first):
        set_dotted(out, path, value)
    return out


def _switches_first(item: tuple[str, Any]) -> tuple[bool, int]:
    """Sort key: overrides that set a ``kind`` anywhere (``data.split.kind``, ``data: {split:
    {kind: kfold}}``, ``model.unet: {kind: unet}``) before the others, by the depth of the
    shallowest section they switch, so the order and spelling the file used do not matter."""
    path, value = item
    sections = [leaf.count(".") - 1 for leaf in _leaves(path, value) if _is_kind(leaf)]
    return (not sections, min(sections, default=0))


def _is_kind(leaf: str) -> bool:
    return leaf == "kind" or leaf.endswith(".kind")


def _check_set_once(overrides: Mapping[str, Any]) -> None:
    """ValueError when two keys set one value (``model.attention: true`` beside ``model:
    {attention: false}``): applied in order, the later would silently win."""
    seen: dict[str, str] = {}  # leaf path -> the key that sets it
    for key, value in overrides.items():
        for leaf in _leaves(key, value):
            for other, by in seen.items():
                if by != key and (leaf == other or leaf.startswith(f"{other}.")
                                  or other.startswith(f"{leaf}.")):  # fmt: skip
                    raise ValueError(f"{leaf} is set twice, by {by!r} and by {key!r}; set it once")
            seen[leaf] = key


def _leaves(path: str, value: Any) -> list[str]:
    """Dotted paths of the values ``path: value`` sets (a nested mapping's leaves)."""
    if isinstance(value, Mapping) and value:
        return [leaf for k, v in value.items() for leaf in _leaves(f"{path}.{k}", v)]
    return [path]


def get_dotted(data: Mapping[str, Any], path: str, default: Any = _MISSING) -> Any:
    """The value at dotted ``path``; ``default`` when a section or the leaf is missing.

    Raises:
        KeyError: the path does not exist and no default was given.
    """
    node: Any = data
    for part in _split(path):
        if not isinstance(node, Mapping) or part not in node:
            if default is _MISSING:
                raise KeyError(path)
            return default
        node = node[part]
    return node


def format_value(value: Any) -> str:
    """Short, stable label text of a value: ``3``, ``0.003``, ``[8,16]``, ``group``, ``false``.

    Booleans are lower case as YAML writes them, floats keep 4 significant digits.
    """
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    if isinstance(value, list | tuple):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{k}={format_value(v)}" for k, v in value.items()) + "}"
    return str(value)


def plain(value: Any) -> Any:
    """Deep copy of YAML-like data (mappings, lists, scalars); tuples become lists."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def _split(path: str) -> list[str]:
    parts = path.split(".")
    if not all(parts):
        raise ValueError(f"{path!r} is not a dotted path (empty component)")
    return parts
