"""What a switch of a trial-config section's ``kind`` keeps, read from the models.

A study switches a section's kind (``optimizer: {kind: radam}`` on an Adam base) to change only
that. The settings both kinds inherit from a common base model mean the same in both (the
optimizers' ``lr`` and ``weight_decay``, the Adam family's ``betas``, a schedule's
``warmup_epochs``, a U-Net's ``spatial_dims``) and carry over; a setting each kind declares on
its own may share a name but not a meaning (an exponential schedule's per-epoch ``gamma`` is
not a step schedule's per-drop one; FM-Net's ``deep_supervision`` counts heads, nnU-Net's is a
switch) and is left to the new kind's default.
"""

from __future__ import annotations

import functools
import types
import typing
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel

from trainables.config.base import Frozen


def shared_fields(path: Sequence[str], old: str | None, new: str) -> frozenset[str] | None:
    """The fields a switch from kind ``old`` to ``new`` of the section at ``path`` keeps (none
    when ``old`` is unknown); None where no section there has kinds. ``old`` None is the
    section's default kind (a YAML that never wrote it)."""
    return _shared(tuple(path), old, new)


@functools.cache
def _shared(path: tuple[str, ...], old: str | None, new: str) -> frozenset[str] | None:
    field = _field(path)
    if field is None:
        return None
    members = _members(field.annotation)
    target = _by_kind(members, new)
    if target is None:
        return None
    old = old if old is not None else _default_kind(field)
    source = _by_kind(members, old) if old is not None else None
    if source is None:
        return frozenset()
    common = [b for b in target.__mro__ if b in source.__mro__ and _model(b) and b is not Frozen]
    return frozenset(name for base in common for name in base.model_fields) - {"kind"}


def _field(path: tuple[str, ...]) -> Any:
    """The FieldInfo at dotted ``path`` of the trial config, through plain sections and
    through a section of kinds where only one kind has the next name."""
    from trainables.config.trial import TrialConfig  # the trial config composes every section

    node: Any = TrialConfig
    field = None
    for part in path:
        field = _only_field(_members(node), part)
        if field is None:
            return None
        node = field.annotation
    return field


def _only_field(members: list[type[BaseModel]], name: str) -> Any:
    """The field ``name`` of the one kind in ``members`` that has it (``model.unet``: the
    C-LSTM's slice U-Net); None when none does, or several with different annotations."""
    found = [m.model_fields[name] for m in members if name in m.model_fields]
    if not found or any(f.annotation != found[0].annotation for f in found[1:]):
        return None
    return found[0]


def _default_kind(field: Any) -> str | None:
    default = field.get_default(call_default_factory=True)
    kind = default.get("kind") if isinstance(default, dict) else getattr(default, "kind", None)
    return str(kind) if kind is not None else None


def _by_kind(members: list[type[BaseModel]], kind: str) -> type[BaseModel] | None:
    for member in members:
        tag = member.model_fields.get("kind")
        if tag is not None and kind in typing.get_args(tag.annotation):
            return member
    return None


def _model(node: Any) -> type[BaseModel] | None:
    return node if isinstance(node, type) and issubclass(node, BaseModel) else None


def _members(node: Any) -> list[type[BaseModel]]:
    """The model classes of a union annotation (``A | B``, ``Annotated[A | B, ...]``)."""
    if typing.get_origin(node) is typing.Annotated:
        node = typing.get_args(node)[0]
    if typing.get_origin(node) in (typing.Union, types.UnionType):
        return [m for m in typing.get_args(node) if _model(m)]
    return [node] if _model(node) else []
