"""Turn pydantic validation errors into messages a researcher can act on.

``model.attention_unet.deep_supervison`` in pydantic's terms becomes
``model.deep_supervison: unknown key (allowed: attention, bottleneck_depth, ...; did you mean
'deep_supervision'?)``. Discriminator tags are dropped from the dotted path because users never
write them: they write ``model: {kind: attention_unet, ...}``.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from trainables.config.base import closest_match, unknown_option_message
from trainables.errors import InputError

M = TypeVar("M", bound=BaseModel)


def validate_config(model_cls: type[M], data: Any, source: str | Path | None = None) -> M:
    """Validate ``data`` into ``model_cls`` or raise one :class:`InputError` listing every problem.

    Args:
        model_cls: the pydantic model to build.
        data: a mapping, usually parsed from YAML.
        source: the file the data came from, named in the message.
    """
    try:
        return model_cls.model_validate(data)
    except ValidationError as err:
        lines = [describe_error(model_cls, e) for e in err.errors()]
        where = f"{source}" if source else None
        raise InputError("invalid config:\n  " + "\n  ".join(lines), where=where) from None


def describe_error(model_cls: type[BaseModel], error: Mapping[str, Any]) -> str:
    """One line for one pydantic error dict: ``dotted.path: what is wrong``."""
    path, owner = _user_path(model_cls, error["loc"])
    kind = error["type"]
    value = error.get("input")
    ctx = error.get("ctx") or {}
    if kind == "extra_forbidden":
        key = str(error["loc"][-1])
        allowed = sorted(owner.model_fields) if owner is not None else []
        hint = closest_match(key, allowed)
        suggestion = f"; did you mean {hint!r}?" if hint else ""
        return f"{path}: unknown key (allowed: {', '.join(allowed)}{suggestion})"
    if kind == "union_tag_invalid":
        tags = [t.strip().strip("'") for t in str(ctx.get("expected_tags", "")).split(",")]
        return f"{path}.kind: {unknown_option_message(ctx.get('tag'), tags)}"
    if kind == "union_tag_not_found":
        return f"{path}.kind: required field is missing (it selects the variant)"
    if kind in ("literal_error", "enum"):
        raw = str(ctx.get("expected", "")).replace(" or ", ", ")
        expected = [e.strip().strip("'") for e in raw.split(",")]
        return f"{path}: {unknown_option_message(value, expected)}"
    if kind == "value_error":  # raised by our validators: the message already says it all
        message = str(ctx.get("error", error["msg"]))
        return message if path == "<root>" else f"{path}: {message}"
    if kind == "missing":
        return f"{path}: required field is missing"
    return f"{path}: {error['msg']} (got {_short(value)})"


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _user_path(
    model_cls: type[BaseModel], loc: Sequence[Any]
) -> tuple[str, type[BaseModel] | None]:
    """Walk ``loc`` through the model tree: return (dotted path without tags, owning model).

    The owning model is the pydantic class whose field the last element names, used to list the
    allowed keys for an unknown one.
    """
    parts: list[str] = []
    current: Any = model_cls
    owner: type[BaseModel] | None = None
    for item in loc:
        if isinstance(current, type) and issubclass(current, BaseModel):
            owner = current
            field = current.model_fields.get(str(item))
            parts.append(str(item))
            current = field.annotation if field is not None else None
            continue
        members = _union_members(current)
        tagged = _member_by_tag(members, item)
        if tagged is not None:  # discriminator tag: users never write it in the path
            current = tagged
            owner = tagged
            continue
        parts.append(str(item))  # list index, dict key, or a plain union branch name
        current = _element_type(current)
    return ".".join(parts) or "<root>", owner


def _union_members(annotation: Any) -> list[Any]:
    """Members of a (possibly Optional, Annotated or nested) union, flattened."""
    annotation = _strip_annotated(annotation)
    if typing.get_origin(annotation) not in (typing.Union, types.UnionType):
        return []
    members: list[Any] = []
    for arg in typing.get_args(annotation):
        members.extend(_union_members(arg) or [_strip_annotated(arg)])
    return members


def _strip_annotated(annotation: Any) -> Any:
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


def _member_by_tag(members: list[Any], tag: Any) -> type[BaseModel] | None:
    for member in members:
        is_model = isinstance(member, type) and issubclass(member, BaseModel)
        if (
            is_model
            and "kind" in member.model_fields
            and member.model_fields["kind"].default == tag
        ):
            return member
    return None


def _element_type(annotation: Any) -> Any:
    """Type of the elements of a list/tuple/dict annotation, or of the non-None union member."""
    annotation = _strip_annotated(annotation)
    members = [m for m in _union_members(annotation) if m is not type(None)]
    if len(members) == 1:
        annotation = members[0]
    args = typing.get_args(annotation)
    return args[-1] if args else None
