"""Which fields each ``kind`` of a trial-config section declares, read from the models.

A study switches a section's kind (``optimizer: {kind: radam}`` on an Adam base) to change only
that: the settings the new kind shares with the old (learning rate, weight decay; a model's
``spatial_dims``) carry over, and the ones it does not have are dropped.
"""

from __future__ import annotations

import functools
import types
import typing
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel


def kind_fields(path: Sequence[str], kind: str) -> frozenset[str] | None:
    """The field names of the ``kind`` variant of the trial-config section at ``path``
    (``("optimizer",)``, ``("data", "split")``); None where no section there has kinds."""
    return _kind_fields(tuple(path), kind)


@functools.cache
def _kind_fields(path: tuple[str, ...], kind: str) -> frozenset[str] | None:
    from trainables.config.trial import TrialConfig  # the trial config composes every section

    node: Any = TrialConfig
    for part in path:
        field = _model(node).model_fields.get(part) if _model(node) else None
        if field is None:
            return None
        node = field.annotation
    for member in _members(node):
        tag = member.model_fields.get("kind")
        if tag is not None and kind in typing.get_args(tag.annotation):
            return frozenset(member.model_fields)
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
